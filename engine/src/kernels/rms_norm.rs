//! RMSNorm of rows, `out = x / sqrt(mean(x^2) + eps) * w`, written once as
//! plain loops with fixed lanes and compiled per instruction set
//! ([`float_simd_fn!`]): every ISA, wasm included, computes the same bits.

float_simd_fn! {
    /// RMSNorm of every row of `x` (`(T, d)`, `d = w.len()`) into `out`.
    /// The mean square is accumulated in f64: cheap, and one error source less.
    pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) = rms_norm_body;
}

/// f64 lanes of the sum of squares (two 256-bit or one 512-bit vector).
const LANES: usize = 8;

#[inline(always)]
fn rms_norm_body(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    assert!(d > 0, "rms_norm: empty weight");
    assert_eq!(x.len(), out.len(), "rms_norm: x and out differ in length");
    assert!(
        x.len().is_multiple_of(d),
        "rms_norm: x is not whole rows of {d}"
    );
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = sum_of_squares(row) / d as f64;
        let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
        for ((oi, &xi), &wi) in o.iter_mut().zip(row).zip(w) {
            *oi = xi * inv * wi;
        }
    }
}

/// `sum(v^2)` in f64 over [`LANES`] independent lanes, added up in a fixed
/// order, then the tail in element order: the same sum on every ISA.
#[inline(always)]
fn sum_of_squares(row: &[f32]) -> f64 {
    let mut acc = [0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            let v = c[l] as f64;
            acc[l] += v * v;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in tail {
        s += v as f64 * v as f64;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 2003) as f32 * 0.003 - 3.0)
            .collect()
    }

    /// Widths with remainders past every vector width (8 f64 lanes, 16 f32).
    const WIDTHS: [usize; 4] = [1, 7, 37, 576];

    /// Every ISA runs the portable body: the dispatched kernel must give its bits.
    #[test]
    fn dispatched_kernel_equals_the_portable_body_bit_for_bit() {
        for d in WIDTHS {
            let (x, w) = (rows(5 * d, 1), rows(d, 2));
            let (mut a, mut b) = (vec![0f32; x.len()], vec![0f32; x.len()]);
            rms_norm(&x, &w, 1e-5, &mut a);
            rms_norm_body(&x, &w, 1e-5, &mut b);
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "d {d} element {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn matches_f64() {
        for d in WIDTHS {
            let (x, w) = (rows(5 * d, 3), rows(d, 4));
            let mut got = vec![0f32; x.len()];
            rms_norm(&x, &w, 1e-6, &mut got);
            for (t, row) in x.chunks_exact(d).enumerate() {
                let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
                let inv = 1.0 / (ms + 1e-6f64).sqrt();
                for i in 0..d {
                    let want = row[i] as f64 * inv * w[i] as f64;
                    let g = got[t * d + i] as f64;
                    assert!(
                        (g - want).abs() <= 3e-7 * want.abs() + 1e-30,
                        "d {d} row {t} element {i}: {g} vs {want}"
                    );
                }
            }
        }
    }
}
