//! Q5_K: Q4_K with a fifth bit per weight. Super-blocks of 256 weights in 8
//! sub-blocks of 32 with 6-bit scales and minimums (Q4_K's layout), codes `q`
//! in `0..32`, `x = d * sc * q - dmin * m` (ggml's `block_q5_K`). Dot products
//! pair it with Q8_K activations.

use half::f16;

use super::q4_k::{lane_sums, quantize_super_block, scale_min, K_SCALE_SIZE};
use super::{blocks, quantize_blocks, read_array, read_f16, Block, BlockQ8K, DType, QK_K};

/// Elements per block.
pub const QK: usize = QK_K;

/// Element `64 * g + l` (`l < 32`) has its low 4 bits in the low nibble of
/// `qs[32 * g + l]` and its fifth bit in bit `2 * g` of `qh[l]`; element
/// `64 * g + 32 + l` uses the high nibble and bit `2 * g + 1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK / 8],
    pub qs: [u8; QK / 2],
}

impl Block for BlockQ5K {
    const DTYPE: DType = DType::Q5_K;

    fn read(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::BYTES);
        BlockQ5K {
            d: read_f16(bytes, 0),
            dmin: read_f16(bytes, 2),
            scales: read_array(bytes, 4),
            qh: read_array(bytes, 4 + K_SCALE_SIZE),
            qs: read_array(bytes, 4 + K_SCALE_SIZE + QK / 8),
        }
    }

    fn write(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::BYTES);
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.dmin.to_le_bytes());
        out[4..4 + K_SCALE_SIZE].copy_from_slice(&self.scales);
        out[4 + K_SCALE_SIZE..4 + K_SCALE_SIZE + QK / 8].copy_from_slice(&self.qh);
        out[4 + K_SCALE_SIZE + QK / 8..].copy_from_slice(&self.qs);
    }
}

impl BlockQ5K {
    /// The 256 codes, in element order.
    fn codes(&self) -> [u8; QK] {
        let mut codes = [0u8; QK];
        for g in 0..QK / 64 {
            for l in 0..32 {
                let q = self.qs[32 * g + l];
                let h = self.qh[l] >> (2 * g);
                codes[64 * g + l] = (q & 0x0f) | ((h & 1) << 4);
                codes[64 * g + l + 32] = (q >> 4) | (((h >> 1) & 1) << 4);
            }
        }
        codes
    }
}

/// Dequantizes `dst.len()` elements from the blocks in `src`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ5K>(src, dst.len()).zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        let codes = b.codes();
        for (j, (y, q)) in y
            .chunks_exact_mut(32)
            .zip(codes.chunks_exact(32))
            .enumerate()
        {
            let (sc, m) = scale_min(j, &b.scales);
            let (dj, mj) = (d * sc as f32, min * m as f32);
            for (y, &q) in y.iter_mut().zip(q) {
                *y = dj * q as f32 - mj;
            }
        }
    }
}

/// ggml's `quantize_row_q5_K_ref`.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x| {
        let (d, dmin, scales, codes) = quantize_super_block(x, 31, -0.5, 0.1, 15);
        let mut qs = [0u8; QK / 2];
        let mut qh = [0u8; QK / 8];
        for g in 0..QK / 64 {
            for l in 0..32 {
                let lo = codes[64 * g + l];
                let hi = codes[64 * g + l + 32];
                qs[32 * g + l] = (lo & 0x0f) | ((hi & 0x0f) << 4);
                qh[l] |= ((lo >> 4) << (2 * g)) | ((hi >> 4) << (2 * g + 1));
            }
        }
        BlockQ5K {
            d,
            dmin,
            scales,
            qh,
            qs,
        }
    });
}

/// Dot product of a Q5_K weight row with a Q8_K activation row of `n` elements
/// (ggml's `ggml_vec_dot_q5_K_q8_K_generic`, same float order as Q4_K's).
pub fn vec_dot(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockQ5K>(w, n).zip(blocks::<BlockQ8K>(a, n)) {
        let codes = x.codes().map(|c| c as i8);
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
        assert_eq!(std::mem::size_of::<BlockQ5K>(), DType::Q5_K.block_bytes());
        assert_eq!(std::mem::offset_of!(BlockQ5K, dmin), 2);
        assert_eq!(std::mem::offset_of!(BlockQ5K, scales), 4);
        assert_eq!(std::mem::offset_of!(BlockQ5K, qh), 16);
        assert_eq!(std::mem::offset_of!(BlockQ5K, qs), 48);
    }
}
