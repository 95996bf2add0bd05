//! SwiGLU's elementwise step, `gate = silu(gate) * up`, written branch-free
//! with the attention kernel's vectorisable `exp` and compiled per
//! instruction set like the softmax reductions: libm's scalar `expf` was
//! ~2.5% of a scoring run.

use super::attention::exp;

/// `gate[i] = silu(gate[i]) * up[i]`, `silu(x) = x / (1 + e^-x)`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len());
    silu_mul_best(gate, up)
}

float_simd_fn! {
    fn silu_mul_best(gate: &mut [f32], up: &[f32]) = silu_mul_body;
}

/// `exp` is accurate for arguments <= 0 only, so it is always given `-|x|`:
/// for x >= 0, silu = x / (1 + e^-x); for x < 0, multiplying above and below
/// by e^x gives silu = x e^x / (1 + e^x). Both are x * s / (1 + e), e = e^-|x|.
#[inline(always)]
fn silu_mul_body(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        let e = exp(-x.abs());
        let s = if x >= 0.0 { 1.0 } else { e };
        *g = x * s / (1.0 + e) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target must compute the same bits (the wasm package is checked
    /// against the native CLI per token).
    #[test]
    fn dispatched_kernel_equals_the_portable_body_bit_for_bit() {
        let n = 4_099;
        let gate: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 2000) as f32 * 0.011 - 11.0)
            .collect();
        let up: Vec<f32> = (0..n)
            .map(|i| ((i * 104_729) % 1000) as f32 * 0.003 - 1.5)
            .collect();
        let (mut a, mut b) = (gate.clone(), gate);
        silu_mul(&mut a, &up);
        silu_mul_body(&mut b, &up);
        for i in 0..n {
            assert_eq!(
                a[i].to_bits(),
                b[i].to_bits(),
                "element {i}: {} vs {}",
                a[i],
                b[i]
            );
        }
    }

    #[test]
    fn matches_f64_silu_times_up() {
        let n = 10_007;
        let gate: Vec<f32> = (0..n).map(|i| (i as f32 - 5_000.0) * 0.013).collect();
        let up: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut got = gate.clone();
        silu_mul(&mut got, &up);
        for i in 0..n {
            let x = gate[i] as f64;
            let want = x / (1.0 + (-x).exp()) * up[i] as f64;
            let err = (got[i] as f64 - want).abs();
            assert!(
                err <= 2e-6 * want.abs().max(1e-3),
                "x {x}: {} vs {want}",
                got[i]
            );
        }
        // The extremes stay finite and exact in the limit.
        let mut ext = vec![-200.0, -88.0, 0.0, 88.0, 200.0];
        silu_mul(&mut ext, &[1.0; 5]);
        assert_eq!(ext[2], 0.0);
        assert!(ext[0].abs() < 1e-30 && ext[1].abs() < 1e-30);
        assert_eq!(ext[3], 88.0);
        assert_eq!(ext[4], 200.0);
    }
}
