//! Q4_K: super-blocks of 256 weights in 8 sub-blocks of 32. Each sub-block has
//! a 6-bit scale and a 6-bit minimum, themselves scaled by the f16 `d` and
//! `dmin`; weights are 4-bit codes `q`, `x = d * sc * q - dmin * m`
//! (ggml's `block_q4_K`). Dot products pair it with Q8_K activations.
//!
//! The scale layout and the scale search are shared with Q5_K.

use half::f16;

use super::{
    blocks, nearest_int, quantize_blocks, read_array, read_f16, Block, BlockQ8K, DType, QK_K,
};

/// Elements per block.
pub const QK: usize = QK_K;

/// Bytes of the packed 6-bit scales and minimums.
pub const K_SCALE_SIZE: usize = 12;

/// Sub-block `j` covers elements `32 * j..32 * (j + 1)`. Codes come in 64-element
/// groups: element `64 * g + l` (`l < 32`) is the low nibble of `qs[32 * g + l]`,
/// element `64 * g + 32 + l` its high nibble. See [`scale_min`] for `scales`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK / 2],
}

impl Block for BlockQ4K {
    const DTYPE: DType = DType::Q4_K;

    fn read(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::BYTES);
        BlockQ4K {
            d: read_f16(bytes, 0),
            dmin: read_f16(bytes, 2),
            scales: read_array(bytes, 4),
            qs: read_array(bytes, 4 + K_SCALE_SIZE),
        }
    }

    fn write(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::BYTES);
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.dmin.to_le_bytes());
        out[4..4 + K_SCALE_SIZE].copy_from_slice(&self.scales);
        out[4 + K_SCALE_SIZE..].copy_from_slice(&self.qs);
    }
}

/// The 6-bit scale and minimum of sub-block `j < 8` (ggml's `get_scale_min_k4`).
///
/// Bytes 0..4 hold scales 0..4 in their low 6 bits, bytes 4..8 minimums 0..4;
/// byte `8 + i` holds the low 4 bits of scale `4 + i` (low nibble) and of
/// minimum `4 + i` (high nibble), whose top 2 bits sit in the top bits of
/// bytes `i` and `4 + i`.
pub fn scale_min(j: usize, scales: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// Packs 8 six-bit scales and minimums in the layout [`scale_min`] reads.
pub(super) fn pack_scale_mins(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut scales = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        if j < 4 {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            scales[j - 4] |= (ls[j] >> 4) << 6;
            scales[j] |= (lm[j] >> 4) << 6;
        }
    }
    scales
}

/// Dequantizes `dst.len()` elements from the blocks in `src`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ4K>(src, dst.len()).zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for g in 0..QK / 64 {
            let (sc1, m1) = scale_min(2 * g, &b.scales);
            let (sc2, m2) = scale_min(2 * g + 1, &b.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &b.qs[32 * g..32 * (g + 1)];
            let y = &mut y[64 * g..64 * (g + 1)];
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0x0f) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// ggml's `make_qkx2_quants`: fits `x ≈ scale * L + min` (with `min <= 0`) to
/// one sub-block with codes `L` in `0..=nmax`, minimizing the `weights`-weighted
/// squared error over `nstep + 1` candidate scales around `nmax / (max - min)`.
/// Writes the codes to `l_out` and returns `(scale, -min)`.
///
/// Each step follows ggml's float expression order, so the chosen codes match
/// ggml's bit for bit.
#[allow(clippy::too_many_arguments)]
pub(super) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The first stage shared by Q4_K and Q5_K (`quantize_row_q{4,5}_K_ref`): fits
/// each 32-element sub-block with [`make_qkx2_quants`], rounds the 8 scales and
/// minimums to 6 bits against the largest, then recomputes every code against
/// the rounded scales. Returns `(d, dmin, scales, codes)`.
pub(super) fn quantize_super_block(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f16, f16, [u8; K_SCALE_SIZE], [u8; QK]) {
    let mut codes = [0u8; QK];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * (j + 1)];
        let sum_x2 = xs.iter().fold(0f32, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        let codes = &mut codes[32 * j..32 * (j + 1)];
        (scales[j], mins[j]) = make_qkx2_quants(nmax, xs, &weights, codes, rmin, rdelta, nstep);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // ggml stores the rounded value in a `uint8_t` before clamping: same truncation.
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    let packed = pack_scale_mins(&ls, &lm);
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min(j, &packed);
        let dj = d.to_f32() * sc as f32;
        if dj == 0.0 {
            // ggml keeps the codes of the first stage here.
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for (c, &v) in codes[32 * j..32 * (j + 1)].iter_mut().zip(&x[32 * j..]) {
            *c = nearest_int((v + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, codes)
}

/// ggml's `quantize_row_q4_K_ref`.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x| {
        let (d, dmin, scales, codes) = quantize_super_block(x, 15, -1.0, 0.1, 20);
        let mut qs = [0u8; QK / 2];
        for g in 0..QK / 64 {
            for l in 0..32 {
                qs[32 * g + l] = codes[64 * g + l] | (codes[64 * g + l + 32] << 4);
            }
        }
        BlockQ4K {
            d,
            dmin,
            scales,
            qs,
        }
    });
}

/// Integer-accumulated k-quant dot product over one super-block, in ggml's
/// generic order: codes `a` times activations per 8-lane stripe, scaled per
/// sub-block of `sub` elements; returns the 8 lane sums.
pub(super) fn lane_sums(
    a: &[i8; QK],
    q8: &[i8; QK],
    sub: usize,
    scale: impl Fn(usize) -> i32,
) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (k, (&w, &x)) in a.iter().zip(q8).enumerate() {
        aux32[k % 8] += scale(k / sub) * (w as i32 * x as i32);
    }
    aux32
}

/// Dot product of a Q4_K weight row with a Q8_K activation row of `n` elements
/// (ggml's `ggml_vec_dot_q4_K_q8_K_generic`, including its order of float
/// additions: 8 lane accumulators across blocks, minimum terms apart).
pub fn vec_dot(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockQ4K>(w, n).zip(blocks::<BlockQ8K>(a, n)) {
        let mut codes = [0i8; QK];
        for g in 0..QK / 64 {
            for l in 0..32 {
                let q = x.qs[32 * g + l];
                codes[64 * g + l] = (q & 0x0f) as i8;
                codes[64 * g + l + 32] = (q >> 4) as i8;
            }
        }
        let sm: [(u8, u8); 8] = std::array::from_fn(|j| scale_min(j, &x.scales));
        let aux32 = lane_sums(&codes, &y.qs, 32, |j| sm[j].0 as i32);
        let sumi: i32 = (0..QK / 16)
            .map(|j| y.bsums[j] as i32 * sm[j / 2].1 as i32)
            .sum();
        let d = x.d.to_f32() * y.d;
        for (s, v) in sums.iter_mut().zip(aux32) {
            *s += d * v as f32;
        }
        let dmin = x.dmin.to_f32() * y.d;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_layout_matches_ggml() {
        assert_eq!(std::mem::size_of::<BlockQ4K>(), DType::Q4_K.block_bytes());
        assert_eq!(std::mem::offset_of!(BlockQ4K, dmin), 2);
        assert_eq!(std::mem::offset_of!(BlockQ4K, scales), 4);
        assert_eq!(std::mem::offset_of!(BlockQ4K, qs), 16);
    }

    #[test]
    fn scales_pack_and_unpack() {
        let ls: [u8; 8] = [0, 1, 17, 63, 32, 45, 5, 62];
        let lm: [u8; 8] = [63, 2, 0, 31, 16, 7, 60, 33];
        let packed = pack_scale_mins(&ls, &lm);
        for j in 0..8 {
            assert_eq!(scale_min(j, &packed), (ls[j], lm[j]), "sub-block {j}");
        }
    }
}
