//! Q8_1: 32 activations per block as `i8` codes with an f16 scale and the f16
//! block sum `s = d * sum(q)` (ggml's `block_q8_1`). The activation format for
//! Q4_1 weights: the sum lets the weights' offset enter the dot product once
//! per block.

use half::f16;

use super::{blocks, quantize_blocks, read_f16, read_i8_array, write_i8s, Block, DType};

/// Elements per block.
pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_1 {
    pub d: f16,
    /// `d * sum(qs)`, computed with the f32 scale before it was rounded.
    pub s: f16,
    pub qs: [i8; QK],
}

impl Block for BlockQ8_1 {
    const DTYPE: DType = DType::Q8_1;

    fn read(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::BYTES);
        BlockQ8_1 {
            d: read_f16(bytes, 0),
            s: read_f16(bytes, 2),
            qs: read_i8_array(bytes, 4),
        }
    }

    fn write(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::BYTES);
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.s.to_le_bytes());
        write_i8s(&mut out[4..], &self.qs);
    }
}

/// Dequantizes `dst.len()` elements from the blocks in `src` (`d * q`; the sum
/// is redundant).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ8_1>(src, dst.len()).zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = q as f32 * d;
        }
    }
}

/// ggml's `quantize_row_q8_1_ref`.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x| {
        let (d, qs) = super::q8_0::scale_and_codes(x);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(sum as f32 * d),
            qs,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_layout_matches_ggml() {
        assert_eq!(std::mem::size_of::<BlockQ8_1>(), DType::Q8_1.block_bytes());
        assert_eq!(std::mem::offset_of!(BlockQ8_1, s), 2);
        assert_eq!(std::mem::offset_of!(BlockQ8_1, qs), 4);
    }
}
