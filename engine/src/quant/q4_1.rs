//! Q4_1: 32 weights per block as 4-bit codes `q` in `0..16` with an f16 scale
//! and an f16 offset, `x = d * q + m` (ggml's `block_q4_1`). Dot products pair
//! it with Q8_1 activations, whose block sums carry the offset term.

use half::f16;

use super::{blocks, quantize_blocks, read_array, read_f16, Block, BlockQ8_1, DType};

/// Elements per block.
pub const QK: usize = 32;

/// Element `j < 16` is the low nibble of `qs[j]`, element `j + 16` its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_1 {
    pub d: f16,
    /// The block minimum: the value of code 0.
    pub m: f16,
    pub qs: [u8; QK / 2],
}

impl Block for BlockQ4_1 {
    const DTYPE: DType = DType::Q4_1;

    fn read(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::BYTES);
        BlockQ4_1 {
            d: read_f16(bytes, 0),
            m: read_f16(bytes, 2),
            qs: read_array(bytes, 4),
        }
    }

    fn write(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::BYTES);
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        out[4..].copy_from_slice(&self.qs);
    }
}

/// Dequantizes `dst.len()` elements from the blocks in `src`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ4_1>(src, dst.len()).zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        for (j, &byte) in b.qs.iter().enumerate() {
            y[j] = (byte & 0x0f) as f32 * d + m;
            y[j + QK / 2] = (byte >> 4) as f32 * d + m;
        }
    }
}

/// ggml's `quantize_row_q4_1_ref`: codes spread evenly from the block minimum
/// to its maximum.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x| {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let code = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
        BlockQ4_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qs: std::array::from_fn(|j| code(x[j]) | (code(x[j + QK / 2]) << 4)),
        }
    });
}

/// Dot product of a Q4_1 weight row with a Q8_1 activation row of `n` elements
/// (ggml's `ggml_vec_dot_q4_1_q8_1_generic`).
pub fn vec_dot(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sum = 0f32;
    for (x, y) in blocks::<BlockQ4_1>(w, n).zip(blocks::<BlockQ8_1>(a, n)) {
        let mut sumi = 0i32;
        for (j, &byte) in x.qs.iter().enumerate() {
            sumi += (byte & 0x0f) as i32 * y.qs[j] as i32;
            sumi += (byte >> 4) as i32 * y.qs[j + QK / 2] as i32;
        }
        sum += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_layout_matches_ggml() {
        assert_eq!(std::mem::size_of::<BlockQ4_1>(), DType::Q4_1.block_bytes());
        assert_eq!(std::mem::offset_of!(BlockQ4_1, m), 2);
        assert_eq!(std::mem::offset_of!(BlockQ4_1, qs), 4);
    }
}
