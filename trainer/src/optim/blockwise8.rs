//! 8-bit blockwise quantisation of optimizer moments, as bitsandbytes'
//! blockwise 8-bit Adam: each block of [`BLOCK`] values keeps one f32
//! scale (its absolute maximum) and one byte per value, the index of the
//! nearest entry of a 256-entry *dynamic* map of the value divided by the
//! scale. The dynamic map (bitsandbytes' `create_dynamic_map`) spaces its
//! entries by powers of ten, so a block keeps about seven decades of
//! relative range instead of a linear code's two: the first moment uses the
//! signed map, the second (never negative) the unsigned one, which spends
//! the sign bit on a finer fraction.
//!
//! Memory: 1 byte per value plus 4 bytes per block of 256 (1.016 B/value),
//! against 4 for f32 and 2 for bf16.

use std::sync::OnceLock;

use super::bf16_rounding::mix64;

/// Values per block, bitsandbytes' block size for its 8-bit optimizers.
pub const BLOCK: usize = 256;

/// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits = 7,
/// total_bits = 8)`, sorted ascending: for each decade `10^(i-6)`
/// (i = 0..7) the midpoints of `linspace(0.1, 1, k + 1)` scaled by it, with
/// `k = 2^i` (signed, both signs) or `2^(i+1)` (unsigned), plus 0 and 1.
fn dynamic_map(signed: bool) -> [f32; 256] {
    let mut data: Vec<f64> = Vec::with_capacity(256);
    let max_exponent_bits = 7;
    for i in 0..max_exponent_bits {
        let fraction_items = if signed {
            (1usize << i) + 1
        } else {
            (1usize << (i + 1)) + 1
        };
        let scale = 10f64.powi(i - (max_exponent_bits - 1));
        // Midpoints of linspace(0.1, 1, fraction_items).
        let step = 0.9 / (fraction_items - 1) as f64;
        for k in 0..fraction_items - 1 {
            let lo = 0.1 + step * k as f64;
            let mean = lo + step / 2.0;
            data.push(scale * mean);
            if signed {
                data.push(-scale * mean);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    debug_assert_eq!(data.len(), 256);
    data.sort_by(|a, b| a.total_cmp(b));
    let mut out = [0f32; 256];
    for (o, d) in out.iter_mut().zip(&data) {
        *o = *d as f32;
    }
    out
}

/// The signed map (first moments).
pub fn signed_map() -> &'static [f32; 256] {
    static MAP: OnceLock<[f32; 256]> = OnceLock::new();
    MAP.get_or_init(|| dynamic_map(true))
}

/// The unsigned map (second moments).
pub fn unsigned_map() -> &'static [f32; 256] {
    static MAP: OnceLock<[f32; 256]> = OnceLock::new();
    MAP.get_or_init(|| dynamic_map(false))
}

/// `x`'s bits as a u32 that orders like the float (negatives reversed).
#[inline]
fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The float whose [`order_key`] is `k`.
fn from_order_key(k: u32) -> f32 {
    if k >> 31 == 1 {
        f32::from_bits(k & 0x7fff_ffff)
    } else {
        f32::from_bits(!k)
    }
}

/// For each of the 65536 ranges of floats sharing the top 16 bits of
/// their [`order_key`] (1/128 of a binade: narrower than any gap of the
/// map, so at most two entries fall in one), the number of map entries
/// below the range's smallest float, capped at 255.
fn bucket_starts(map: &[f32; 256]) -> Box<[u8]> {
    (0..1u32 << 16)
        .map(|b| {
            let lowest = from_order_key(b << 16);
            map.partition_point(|&e| e < lowest).min(255) as u8
        })
        .collect()
}

/// The number of map entries below `x`, as `slice::partition_point`, by a
/// table lookup and two branch-free steps (a bucket holds at most two map
/// entries: `bucket_holds_at_most_two_entries` checks every bucket). A
/// binary search's 8 data-dependent branches mispredict about half the
/// time, which made the 8-bit update several times slower.
#[inline]
fn partition_point(map: &[f32; 256], starts: &[u8], x: f32) -> usize {
    let i = starts[(order_key(x) >> 16) as usize] as usize;
    let i = i + (map[i] < x) as usize;
    i + (i < 256 && map[i.min(255)] < x) as usize
}

fn signed_starts() -> &'static [u8] {
    static T: OnceLock<Box<[u8]>> = OnceLock::new();
    T.get_or_init(|| bucket_starts(signed_map()))
}

fn unsigned_starts() -> &'static [u8] {
    static T: OnceLock<Box<[u8]>> = OnceLock::new();
    T.get_or_init(|| bucket_starts(unsigned_map()))
}

/// The code of 0 in `map` (what a block of zeros stores).
pub fn zero_code(map: &[f32; 256]) -> u8 {
    map.iter().position(|&c| c == 0.0).unwrap_or(0) as u8
}

/// One tensor's moment in 8-bit blockwise form.
#[derive(Clone, Debug)]
pub struct Blockwise8 {
    /// One byte per value: an index into the map.
    pub codes: Vec<u8>,
    /// One scale per block of [`BLOCK`] values (the block's absolute maximum).
    pub absmax: Vec<f32>,
    /// Signed map (first moment) or unsigned (second moment).
    pub signed: bool,
}

impl Blockwise8 {
    /// `n` zeros.
    pub fn zeros(n: usize, signed: bool) -> Blockwise8 {
        let map = Self::map_of(signed);
        let zero = zero_code(map);
        Blockwise8 {
            codes: vec![zero; n],
            absmax: vec![0.0; n.div_ceil(BLOCK)],
            signed,
        }
    }

    fn map_of(signed: bool) -> &'static [f32; 256] {
        if signed {
            signed_map()
        } else {
            unsigned_map()
        }
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// Block `b`'s values into `out` (`out.len()` = the block's length).
    pub fn load_block(&self, b: usize, out: &mut [f32]) {
        let map = Self::map_of(self.signed);
        let scale = self.absmax[b];
        let codes = &self.codes[b * BLOCK..b * BLOCK + out.len()];
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = map[c as usize] * scale;
        }
    }

    /// Quantises `values` as block `b`: a new scale, then each value to
    /// one of the two map entries around it, chosen at random with the
    /// probability that makes the stored value unbiased (the bits are
    /// `mix64(key + index)`). Round-to-nearest would freeze the second
    /// moment: with `beta2 = 0.999` it changes by 0.1% a step, below half
    /// of the map's relative gap anywhere, so a decaying `v` would stay
    /// where it is; on the f64-reference problem (`optim::tests`, largest
    /// weight error over the run) nearest rounding drifted 0.134 of the
    /// distance travelled, stochastic 0.043. In the unsigned map a positive value
    /// never becomes the zero code: a second moment read back as 0 would
    /// turn its parameter's update into `m / eps`, so it is kept at the
    /// smallest positive entry instead (a smaller step, never a huge one).
    pub fn store_block(&mut self, b: usize, values: &[f32], key: u64) {
        let map = Self::map_of(self.signed);
        let starts = if self.signed {
            signed_starts()
        } else {
            unsigned_starts()
        };
        let absmax = values.iter().fold(0f32, |a, &x| a.max(x.abs()));
        self.absmax[b] = absmax;
        let codes = &mut self.codes[b * BLOCK..b * BLOCK + values.len()];
        if absmax == 0.0 || !absmax.is_finite() {
            codes.fill(zero_code(map));
            return;
        }
        let inv = 1.0 / absmax;
        let key = key.wrapping_add((b * BLOCK) as u64);
        for (j, (c, &x)) in codes.iter_mut().zip(values).enumerate() {
            let xn = x * inv;
            let hi = partition_point(map, starts, xn).min(255);
            let lo = hi.saturating_sub(1);
            // Up with probability (xn - lo) / gap, without a branch (a
            // coin flip mispredicts half the time) or a division.
            let u = (mix64(key.wrapping_add(j as u64)) >> 40) as f32 / (1u64 << 24) as f32;
            let gap = map[hi] - map[lo];
            let up = (hi != lo) & (xn - map[lo] >= u * gap);
            let mut q = lo + up as usize;
            if !self.signed && x > 0.0 && map[q] == 0.0 {
                q += 1;
            }
            *c = q as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_bitsandbytes_shapes() {
        let s = signed_map();
        let u = unsigned_map();
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "signed map sorted, distinct"
        );
        assert!(u.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(s[255], 1.0);
        assert_eq!(u[255], 1.0);
        assert_eq!(s.iter().filter(|&&c| c < 0.0).count(), 127);
        // Unsigned: 254 positive fractions + 0 + 1, nothing negative.
        assert_eq!(u.iter().filter(|&&c| c < 0.0).count(), 0);
        // Smallest positive entry: 1e-6 * 0.55 (signed), 1e-6 * 0.325 (unsigned).
        let pos = |m: &[f32; 256]| m.iter().copied().filter(|&c| c > 0.0).fold(1f32, f32::min);
        assert!((pos(s) - 0.55e-6).abs() < 1e-9, "{}", pos(s));
        assert!((pos(u) - 0.325e-6).abs() < 1e-9, "{}", pos(u));
    }

    /// Round trip bound: each value comes back as one of its two
    /// neighbouring map entries (stochastic rounding), so within one gap
    /// times the block scale. The largest gap of the dynamic map is in its
    /// top decade: signed 64 fractions over [0.1, 1] (0.9/64 = 0.0141),
    /// unsigned 128 (0.0070); so |x - q(x)| <= 0.0141 absmax (signed) and
    /// 0.0071 absmax (unsigned).
    #[test]
    fn round_trip_error_is_within_one_map_gap() {
        let mut state = 0x1234_5678u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64) as f32
        };
        for signed in [true, false] {
            let n = 3 * BLOCK + 17;
            let values: Vec<f32> = (0..n)
                .map(|i| {
                    // Magnitudes over six decades, both signs when signed.
                    let mag = 10f32.powf(-6.0 * next()) * (1.0 + (i % 7) as f32);
                    if signed && next() < 0.5 {
                        -mag
                    } else {
                        mag
                    }
                })
                .collect();
            let mut q = Blockwise8::zeros(n, signed);
            for b in 0..n.div_ceil(BLOCK) {
                let r = b * BLOCK..((b + 1) * BLOCK).min(n);
                q.store_block(b, &values[r], b as u64);
            }
            let map = Blockwise8::map_of(signed);
            let mut worst_abs = 0f32;
            for b in 0..n.div_ceil(BLOCK) {
                let r = b * BLOCK..((b + 1) * BLOCK).min(n);
                let mut back = vec![0f32; r.len()];
                q.load_block(b, &mut back);
                let scale = q.absmax[b];
                for (&x, &y) in values[r].iter().zip(&back) {
                    let xn = x / scale;
                    // Half the gap around the normalised value.
                    let hi = map.partition_point(|&c| c < xn).min(255);
                    let lo = hi.saturating_sub(1);
                    let allowed = if hi == lo {
                        // Below the map's lowest entry (signed: -0.993).
                        (map[0] - xn).abs()
                    } else if !signed && map[lo] == 0.0 {
                        // Kept off the zero code: up to the whole first gap.
                        map[hi]
                    } else {
                        // Stochastic: either neighbour.
                        map[hi] - map[lo]
                    };
                    let err = (x - y).abs() / scale;
                    assert!(
                        err <= allowed * 1.0001 + 1e-9,
                        "signed={signed}: {x} -> {y} (scale {scale}), error {err} > {allowed}"
                    );
                    worst_abs = worst_abs.max(err);
                    if !signed && x > 0.0 {
                        assert!(y > 0.0, "a positive second moment stays positive");
                    }
                }
            }
            let bound = if signed { 0.0141 } else { 0.0071 };
            assert!(worst_abs <= bound, "signed={signed}: worst {worst_abs}");
        }
    }

    #[test]
    fn table_search_is_partition_point() {
        for (map, starts) in [
            (signed_map(), signed_starts()),
            (unsigned_map(), unsigned_starts()),
        ] {
            let probes = map
                .iter()
                .flat_map(|&c| [c, c - 1e-9, c + 1e-9, c * 0.999, c * 1.001])
                .chain([-2.0, 2.0, 0.0, -0.0])
                .chain((0..20_000u64).map(|i| {
                    // Magnitudes over nine decades, both signs.
                    let u = (mix64(i) >> 40) as f32 / (1u64 << 24) as f32;
                    let x = 10f32.powf(-9.0 * u);
                    if i % 2 == 0 {
                        x
                    } else {
                        -x
                    }
                }));
            for x in probes {
                assert_eq!(
                    partition_point(map, starts, x),
                    map.partition_point(|&e| e < x),
                    "{x}"
                );
            }
        }
    }

    /// Every float's bucket start is at most two entries below its answer
    /// (checked at each bucket's largest float; the count is monotonic).
    #[test]
    fn bucket_holds_at_most_two_entries() {
        for (map, starts) in [
            (signed_map(), signed_starts()),
            (unsigned_map(), unsigned_starts()),
        ] {
            for b in 0..1u32 << 16 {
                let last = from_order_key((b << 16) | 0xffff);
                if last.is_nan() {
                    continue;
                }
                let pp = map.partition_point(|&e| e < last);
                assert!(pp <= starts[b as usize] as usize + 2, "bucket {b}: {last}");
            }
        }
    }

    #[test]
    fn zero_block_and_extremes_are_exact() {
        let mut q = Blockwise8::zeros(BLOCK, true);
        q.store_block(0, &[0.0; BLOCK], 0);
        let mut back = [1f32; BLOCK];
        q.load_block(0, &mut back);
        assert!(back.iter().all(|&x| x == 0.0));
        let mut v = [0f32; BLOCK];
        v[3] = 2.5;
        q.store_block(0, &v, 0);
        q.load_block(0, &mut back);
        assert_eq!(back[3], 2.5, "the block maximum is exact (map entry 1.0)");
        assert_eq!(back[0], 0.0);
    }
}
