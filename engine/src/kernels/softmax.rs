//! The reductions of a log-softmax over one row of logits: the maximum and
//! the sum of `exp(x - shift)`, with 16 independent lanes so they vectorise,
//! compiled per instruction set like the attention kernel.

use super::attention::{exp, max_of};

float_simd_fn! {
    /// `(max(row), sum(exp(row - max)))` of a non-empty row.
    pub fn max_and_sum_exp(row: &[f32]) -> (f32, f32) = reduce_body;
}

#[inline(always)]
fn reduce_body(row: &[f32]) -> (f32, f32) {
    let max = max_of(row);
    let chunks = row.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&v| exp(v - max)).sum();
    let mut s = [0f32; 16];
    for c in chunks {
        for l in 0..16 {
            s[l] += exp(c[l] - max);
        }
    }
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
