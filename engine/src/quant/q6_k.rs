//! Q6_K: super-blocks of 256 weights in 16 sub-blocks of 16, each with a
//! signed 8-bit scale under one f16 `d`; weights are 6-bit codes `q`,
//! `x = d * sc * (q - 32)` (ggml's `block_q6_K`). Dot products pair it with
//! Q8_K activations.

use half::f16;

use super::q4_k::lane_sums;
use super::{
    blocks, nearest_int, quantize_blocks, read_array, read_f16, read_i8_array, write_i8s, Block,
    BlockQ8K, DType, QK_K,
};

/// Elements per block.
pub const QK: usize = QK_K;

/// Codes come in two halves of 128; in half `h`, element `128 * h + 32 * k + l`
/// (`k < 4`, `l < 32`) has its low 4 bits in `ql[64 * h + l + 32 * (k % 2)]`
/// (low nibble for `k < 2`, high nibble otherwise) and its top 2 bits in bits
/// `2 * k..2 * k + 2` of `qh[32 * h + l]`. Element `e` uses `scales[e / 16]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    pub ql: [u8; QK / 2],
    pub qh: [u8; QK / 4],
    pub scales: [i8; QK / 16],
    pub d: f16,
}

impl Block for BlockQ6K {
    const DTYPE: DType = DType::Q6_K;

    fn read(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::BYTES);
        BlockQ6K {
            ql: read_array(bytes, 0),
            qh: read_array(bytes, QK / 2),
            scales: read_i8_array(bytes, QK / 2 + QK / 4),
            d: read_f16(bytes, QK / 2 + QK / 4 + QK / 16),
        }
    }

    fn write(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::BYTES);
        let (ql, rest) = out.split_at_mut(QK / 2);
        let (qh, rest) = rest.split_at_mut(QK / 4);
        let (scales, d) = rest.split_at_mut(QK / 16);
        ql.copy_from_slice(&self.ql);
        qh.copy_from_slice(&self.qh);
        write_i8s(scales, &self.scales);
        d.copy_from_slice(&self.d.to_le_bytes());
    }
}

impl BlockQ6K {
    /// The 256 codes minus 32, in element order.
    fn codes(&self) -> [i8; QK] {
        let mut codes = [0i8; QK];
        for h in 0..2 {
            let ql = &self.ql[64 * h..64 * (h + 1)];
            let qh = &self.qh[32 * h..32 * (h + 1)];
            let out = &mut codes[128 * h..128 * (h + 1)];
            for l in 0..32 {
                let low = [ql[l] & 0x0f, ql[l + 32] & 0x0f, ql[l] >> 4, ql[l + 32] >> 4];
                for (k, low) in low.into_iter().enumerate() {
                    let high = (qh[l] >> (2 * k)) & 3;
                    out[32 * k + l] = (low | (high << 4)) as i8 - 32;
                }
            }
        }
        codes
    }
}

/// Dequantizes `dst.len()` elements from the blocks in `src`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ6K>(src, dst.len()).zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (e, (y, q)) in y.iter_mut().zip(b.codes()).enumerate() {
            *y = d * b.scales[e / 16] as f32 * q as f32;
        }
    }
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights:
/// symmetric codes `L - nmax` in `-nmax..nmax` for one sub-block, with the
/// scale chosen among 19 candidates to minimize the `x²`-weighted squared
/// error. Writes `L` to `l_out` and returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [u8]) -> f32 {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    // The weighted sums `sum w x l` and `sum w l²` for one candidate scale.
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -nmax_f / max;
    for (o, &v) in l_out.iter_mut().zip(x) {
        *o = (code(iscale, v) + nmax) as u8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax_f + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l_out.iter_mut().zip(x) {
                *o = (code(iscale, v) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's threshold below which a group counts as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `quantize_row_q6_K_ref`.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x| {
        let mut codes = [0u8; QK];
        let mut scales = [0f32; QK / 16];
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for (ib, (xs, l)) in x
            .chunks_exact(16)
            .zip(codes.chunks_exact_mut(16))
            .enumerate()
        {
            scales[ib] = make_qx_quants(32, xs, l);
            if scales[ib].abs() > max_abs_scale {
                max_abs_scale = scales[ib].abs();
                max_scale = scales[ib];
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return BlockQ6K {
                ql: [0; QK / 2],
                qh: [0; QK / 4],
                scales: [0; QK / 16],
                d: f16::ZERO,
            };
        }
        let iscale = -128.0 / max_scale;
        let d = f16::from_f32(1.0 / iscale);
        let sc: [i8; QK / 16] =
            std::array::from_fn(|ib| nearest_int(iscale * scales[ib]).min(127) as i8);
        for (j, (xs, l)) in x
            .chunks_exact(16)
            .zip(codes.chunks_exact_mut(16))
            .enumerate()
        {
            let dj = d.to_f32() * sc[j] as f32;
            if dj == 0.0 {
                // ggml keeps the codes of the first stage here.
                continue;
            }
            for (l, &v) in l.iter_mut().zip(xs) {
                *l = (nearest_int(v / dj).clamp(-32, 31) + 32) as u8;
            }
        }
        let mut ql = [0u8; QK / 2];
        let mut qh = [0u8; QK / 4];
        for h in 0..2 {
            let c = &codes[128 * h..128 * (h + 1)];
            for l in 0..32 {
                ql[64 * h + l] = (c[l] & 0x0f) | ((c[l + 64] & 0x0f) << 4);
                ql[64 * h + l + 32] = (c[l + 32] & 0x0f) | ((c[l + 96] & 0x0f) << 4);
                qh[32 * h + l] = (c[l] >> 4)
                    | ((c[l + 32] >> 4) << 2)
                    | ((c[l + 64] >> 4) << 4)
                    | ((c[l + 96] >> 4) << 6);
            }
        }
        BlockQ6K {
            ql,
            qh,
            scales: sc,
            d,
        }
    });
}

/// Dot product of a Q6_K weight row with a Q8_K activation row of `n` elements
/// (ggml's `ggml_vec_dot_q6_K_q8_K_generic`, with its 8 lane accumulators).
pub fn vec_dot(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sums = [0f32; 8];
    for (x, y) in blocks::<BlockQ6K>(w, n).zip(blocks::<BlockQ8K>(a, n)) {
        let aux32 = lane_sums(&x.codes(), &y.qs, 16, |j| x.scales[j] as i32);
        let d = x.d.to_f32() * y.d;
        for (s, v) in sums.iter_mut().zip(aux32) {
            *s += d * v as f32;
        }
    }
    let mut sumf = 0f32;
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
        assert_eq!(std::mem::size_of::<BlockQ6K>(), DType::Q6_K.block_bytes());
        assert_eq!(std::mem::offset_of!(BlockQ6K, qh), 128);
        assert_eq!(std::mem::offset_of!(BlockQ6K, scales), 192);
        assert_eq!(std::mem::offset_of!(BlockQ6K, d), 208);
    }
}
