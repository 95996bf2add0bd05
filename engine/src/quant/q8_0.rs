//! Q8_0: 32 values per block as `i8` codes with one f16 scale, `x = d * q`
//! (ggml's `block_q8_0`). Both a weight format and the activation format for
//! Q4_0 and Q8_0 weights.

use half::f16;

use super::{blocks, quantize_blocks, read_f16, read_i8_array, write_i8s, Block, DType};

/// Elements per block.
pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

impl Block for BlockQ8_0 {
    const DTYPE: DType = DType::Q8_0;

    fn read(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::BYTES);
        BlockQ8_0 {
            d: read_f16(bytes, 0),
            qs: read_i8_array(bytes, 2),
        }
    }

    fn write(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::BYTES);
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        write_i8s(&mut out[2..], &self.qs);
    }
}

/// Dequantizes `dst.len()` elements from the blocks in `src`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in blocks::<BlockQ8_0>(src, dst.len()).zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = q as f32 * d;
        }
    }
}

/// The scale `d = amax / 127` and the codes `round(x / d)` of one block, as
/// ggml's `quantize_row_q8_0_ref` and `quantize_row_q8_1_ref` compute them
/// (the scale is rounded to f16 only when stored; codes use the f32 scale).
pub(super) fn scale_and_codes(x: &[f32]) -> (f32, [i8; QK]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // `f32::round` rounds half away from zero, as C's `roundf`.
    (d, std::array::from_fn(|j| (x[j] * id).round() as i8))
}

/// ggml's `quantize_row_q8_0_ref`.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, |x| {
        let (d, qs) = scale_and_codes(x);
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        }
    });
}

/// Dot product of a Q8_0 weight row with a Q8_0 activation row of `n` elements
/// (ggml's `ggml_vec_dot_q8_0_q8_0_generic`).
pub fn vec_dot(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sum = 0f32;
    for (x, y) in blocks::<BlockQ8_0>(w, n).zip(blocks::<BlockQ8_0>(a, n)) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&p, &q)| p as i32 * q as i32)
                .sum();
        sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_layout_matches_ggml() {
        assert_eq!(std::mem::size_of::<BlockQ8_0>(), DType::Q8_0.block_bytes());
        assert_eq!(std::mem::offset_of!(BlockQ8_0, qs), 2);
    }
}
