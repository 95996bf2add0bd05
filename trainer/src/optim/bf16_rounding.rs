//! Writing an f32 update into a bf16 parameter without losing small steps.
//!
//! bf16 keeps 8 significant bits: a weight of magnitude `w` moves only when
//! its update exceeds about `w * 2^-9`, and an AdamW step of `lr = 1e-5` on a
//! weight of 0.02 is 50 times below that, so round-to-nearest would leave
//! the weight where it is for the whole run. Two remedies exist:
//!
//! - Kahan-style compensation keeps the rounding error of every weight in a
//!   second bf16 buffer (+2 bytes per parameter) and adds it back next step;
//! - stochastic rounding rounds up with probability equal to the discarded
//!   fraction, so the expected stored value is the exact f32 result and tiny
//!   updates accumulate on average, at no memory cost.
//!
//! This trainer uses stochastic rounding (0 extra bytes: the whole point of
//! bf16 parameters is memory), with random bits drawn from a counter-based
//! hash of (seed, step, tensor, element): no RNG state to checkpoint, the
//! same bits after a resume, and the same bits whatever the order in which
//! tensors are updated. `small_updates_accumulate_*` measures it against
//! round-to-nearest and an f64 reference. With an f32 master copy
//! (`--master`) the master takes the exact update and the bf16 weight is
//! its nearest rounding.

use half::bf16;

/// SplitMix64's finaliser: a bijective 64-bit mix, good enough to turn a
/// counter into independent-looking bits.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of one tensor's update at one step: every element's random bits
/// are `mix64(key + element)`.
pub fn tensor_key(seed: u64, step: usize, tensor: usize) -> u64 {
    mix64(mix64(seed ^ mix64(step as u64)) ^ (tensor as u64).wrapping_mul(0xd6e8_feb8_6659_fd93))
}

/// `x` rounded to bf16 up or down at random, `P(up)` = the fraction of the
/// gap that `x` lies above the lower neighbour; `bits` supplies the 16
/// random bits (its low half). Non-finite values round to nearest.
#[inline]
pub fn stochastic(x: f32, bits: u64) -> bf16 {
    if !x.is_finite() {
        return bf16::from_f32(x);
    }
    // Adding a uniform 16-bit number to the bits below bf16's mantissa and
    // truncating carries into the kept bits with exactly that probability
    // (the magnitude rounds; the sign bit is untouched, so it is symmetric).
    let b = x.to_bits();
    let r = (bits & 0xffff) as u32;
    let rounded = b.wrapping_add(r) & 0xffff_0000;
    // A carry out of the largest finite magnitude gives infinity, as
    // rounding up there should.
    bf16::from_bits((rounded >> 16) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stochastic_rounding_is_unbiased() {
        // A value a third of the way between two bf16 neighbours.
        for &(lo, frac) in &[(1.0f32, 1.0 / 3.0), (-0.0123f32, 0.71), (3.0e-5f32, 0.05)] {
            let lo_b = bf16::from_f32(lo);
            let lo = lo_b.to_f32();
            let next = bf16::from_bits(lo_b.to_bits() + 1).to_f32();
            let x = lo + (next - lo) * frac;
            let n = 200_000u64;
            let mut sum = 0f64;
            for i in 0..n {
                let r = stochastic(x, mix64(i)).to_f32();
                assert!(r == lo || r == next, "{r} not a neighbour of {x}");
                sum += r as f64;
            }
            let mean = sum / n as f64;
            // The mean of n Bernoulli draws has standard deviation
            // gap * sqrt(p(1-p)/n) <= gap * 0.0012: allow 5 of them.
            let gap = (next - lo).abs() as f64;
            assert!(
                (mean - x as f64).abs() < 5.0 * 0.0012 * gap,
                "x {x}: mean {mean}, gap {gap}"
            );
        }
        // Values bf16 holds exactly are never moved.
        for i in 0..1000 {
            assert_eq!(stochastic(0.375, mix64(i)).to_f32(), 0.375);
        }
        assert!(stochastic(f32::NAN, 7).to_f32().is_nan());
        assert_eq!(stochastic(f32::INFINITY, 7).to_f32(), f32::INFINITY);
    }

    /// The measurement behind the choice: 1000 AdamW-sized steps of -1e-5
    /// on 256 weights of 0.02 (each step 1/12 of bf16's spacing 2^-13
    /// there). Round-to-nearest never moves a weight; with stochastic
    /// rounding each weight does a random walk around the exact path
    /// (standard deviation at most sqrt(1000 / 4) * 2^-13 = 1.9e-3), so the
    /// mean over 256 weights is within 5 x 1.9e-3 / 16 = 6e-4 of the exact
    /// 0.01 (6% of the distance travelled).
    #[test]
    fn small_updates_accumulate_with_stochastic_rounding_not_nearest() {
        let (w0, step, n, width) = (0.02f64, -1e-5f64, 1000, 256);
        let exact = w0 + step * n as f64;
        let mut nearest = vec![bf16::from_f64(w0); width];
        let mut sr = vec![bf16::from_f64(w0); width];
        for i in 0..n {
            let key = tensor_key(1, i, 0);
            for j in 0..width {
                nearest[j] = bf16::from_f32(nearest[j].to_f32() + step as f32);
                sr[j] = stochastic(
                    sr[j].to_f32() + step as f32,
                    mix64(key.wrapping_add(j as u64)),
                );
            }
        }
        assert!(
            nearest.iter().all(|w| *w == bf16::from_f64(w0)),
            "round-to-nearest stalls"
        );
        let mean = sr.iter().map(|w| w.to_f64()).sum::<f64>() / width as f64;
        assert!(
            (mean - exact).abs() < 6e-4,
            "stochastic mean {mean} vs exact {exact}"
        );
    }
}
