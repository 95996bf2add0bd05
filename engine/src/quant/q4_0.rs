//! Q4_0: 32 weights per block as 4-bit codes `q` in `0..16` with one f16
//! scale, `x = d * (q - 8)` (ggml's `block_q4_0`). Dot products pair it with
//! Q8_0 activations.

use half::f16;

use super::{blocks, quantize_blocks, read_array, read_f16, Block, BlockQ8_0, DType};

/// Elements per block.
pub const QK: usize = 32;

/// Element `j < 16` is the low nibble of `qs[j]`, element `j + 16` its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

impl Block for BlockQ4_0 {
    const DTYPE: DType = DType::Q4_0;

    fn read(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::BYTES);
        BlockQ4_0 {
            d: read_f16(bytes, 0),
            qs: read_array(bytes, 2),
        }
    }

    fn write(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::BYTES);
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..].copy_from_slice(&self.qs);
    }
}

/// The two 4-bit codes of `qs[j]` as signed values in `-8..8`.
fn codes(byte: u8) -> (i32, i32) {
    ((byte & 0x0f) as i32 - 8, (byte >> 4) as i32 - 8)
}

/// Dequantizes `dst.len()` elements from the blocks in `src`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ4_0>(src, dst.len()).zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (j, &byte) in b.qs.iter().enumerate() {
            let (lo, hi) = codes(byte);
            y[j] = lo as f32 * d;
            y[j + QK / 2] = hi as f32 * d;
        }
    }
}

/// ggml's `quantize_row_q4_0_ref`: the value of largest magnitude maps to -8
/// exactly, so the scale's sign follows it and the asymmetric range is used.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x| {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // Truncation after +8.5 is ggml's rounding; the cast saturates like
        // C's `(int8_t)` does for the in-range values produced here.
        let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs: std::array::from_fn(|j| code(x[j]) | (code(x[j + QK / 2]) << 4)),
        }
    });
}

/// Dot product of a Q4_0 weight row with a Q8_0 activation row of `n` elements
/// (ggml's `ggml_vec_dot_q4_0_q8_0_generic`).
pub fn vec_dot(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sum = 0f32;
    for (x, y) in blocks::<BlockQ4_0>(w, n).zip(blocks::<BlockQ8_0>(a, n)) {
        let mut sumi = 0i32;
        for (j, &byte) in x.qs.iter().enumerate() {
            let (lo, hi) = codes(byte);
            sumi += lo * y.qs[j] as i32 + hi * y.qs[j + QK / 2] as i32;
        }
        sum += sumi as f32 * x.d.to_f32() * y.d.to_f32();
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_layout_matches_ggml() {
        assert_eq!(std::mem::size_of::<BlockQ4_0>(), DType::Q4_0.block_bytes());
        assert_eq!(std::mem::offset_of!(BlockQ4_0, qs), 2);
    }
}
