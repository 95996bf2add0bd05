//! Q8_K: 256 activations per block as `i8` codes with an f32 scale and the
//! sums of each 16 codes (ggml's `block_q8_K`). The activation format for the
//! k-quants: the sums let their per-sub-block minimums enter the dot product
//! without touching every code.

use super::{blocks, nearest_int, quantize_blocks, read_i8_array, write_i8s, Block, DType, QK_K};

/// Elements per block.
pub const QK: usize = QK_K;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK],
    /// `bsums[j]` is the sum of `qs[16 * j..16 * (j + 1)]`.
    pub bsums: [i16; QK / 16],
}

impl Block for BlockQ8K {
    const DTYPE: DType = DType::Q8_K;

    fn read(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::BYTES);
        BlockQ8K {
            d: f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            qs: read_i8_array(bytes, 4),
            bsums: std::array::from_fn(|j| {
                let o = 4 + QK + 2 * j;
                i16::from_le_bytes([bytes[o], bytes[o + 1]])
            }),
        }
    }

    fn write(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::BYTES);
        out[0..4].copy_from_slice(&self.d.to_le_bytes());
        write_i8s(&mut out[4..4 + QK], &self.qs);
        for (o, s) in out[4 + QK..].chunks_exact_mut(2).zip(&self.bsums) {
            o.copy_from_slice(&s.to_le_bytes());
        }
    }
}

/// Dequantizes `dst.len()` elements from the blocks in `src`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ8K>(src, dst.len()).zip(dst.chunks_exact_mut(QK)) {
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = b.d * q as f32;
        }
    }
}

/// ggml's `quantize_row_q8_K_ref`: the value of largest magnitude maps to
/// -127 exactly (-127 rather than -128 keeps codes symmetric).
/// An all-zero block gets zero sums too (ggml leaves them unwritten).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x| {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            return BlockQ8K {
                d: 0.0,
                qs: [0; QK],
                bsums: [0; QK / 16],
            };
        }
        let iscale = -127.0 / max;
        let qs: [i8; QK] = std::array::from_fn(|j| nearest_int(iscale * x[j]).min(127) as i8);
        let bsums =
            std::array::from_fn(|j| qs[16 * j..16 * (j + 1)].iter().map(|&q| q as i16).sum());
        BlockQ8K {
            d: 1.0 / iscale,
            qs,
            bsums,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_layout_matches_ggml() {
        assert_eq!(std::mem::size_of::<BlockQ8K>(), DType::Q8_K.block_bytes());
        assert_eq!(std::mem::offset_of!(BlockQ8K, qs), 4);
        assert_eq!(std::mem::offset_of!(BlockQ8K, bsums), 4 + QK);
    }
}
