//! The reductions of a log-softmax over one row of logits: the maximum and
//! the sum of `exp(x - shift)`, with 16 independent lanes so they vectorise,
//! compiled per instruction set like the attention kernel.

use std::sync::OnceLock;

use super::attention::exp;

/// `(max(row), sum(exp(row - max)))` of a non-empty row.
pub fn max_and_sum_exp(row: &[f32]) -> (f32, f32) {
    type F = fn(&[f32]) -> (f32, f32);
    static BEST: OnceLock<F> = OnceLock::new();
    (BEST.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        match super::float_simd() {
            super::FloatSimd::Avx512 => return x86::avx512,
            super::FloatSimd::Avx2 => return x86::avx2,
            super::FloatSimd::Baseline => {}
        }
        reduce
    }))(row)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    unsafe fn avx512_impl(row: &[f32]) -> (f32, f32) {
        super::reduce_body(row)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_impl(row: &[f32]) -> (f32, f32) {
        super::reduce_body(row)
    }

    pub fn avx512(row: &[f32]) -> (f32, f32) {
        // SAFETY: selected only when `float_simd()` (run-time detection) saw AVX-512F and FMA.
        unsafe { avx512_impl(row) }
    }

    pub fn avx2(row: &[f32]) -> (f32, f32) {
        // SAFETY: selected only when `float_simd()` (run-time detection) saw AVX2 and FMA.
        unsafe { avx2_impl(row) }
    }
}

fn reduce(row: &[f32]) -> (f32, f32) {
    reduce_body(row)
}

#[inline(always)]
fn reduce_body(row: &[f32]) -> (f32, f32) {
    let mut m = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks.clone() {
        for l in 0..16 {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    let mut max = rest
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for v in m {
        if v > max {
            max = v;
        }
    }
    let mut s = [0f32; 16];
    for c in chunks {
        for l in 0..16 {
            s[l] += exp(c[l] - max);
        }
    }
    let tail: f32 = rest.iter().map(|&v| exp(v - max)).sum();
    (max, s.iter().sum::<f32>() + tail)
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_f64() {
        let row: Vec<f32> = (0..4099)
            .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0)
            .collect();
        let (m, s) = super::max_and_sum_exp(&row);
        let want_m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let want_s: f64 = row.iter().map(|&v| (v as f64 - want_m as f64).exp()).sum();
        assert_eq!(m, want_m);
        assert!(
            ((s as f64 - want_s) / want_s).abs() < 2e-6,
            "{s} vs {want_s}"
        );
    }
}
