//! Tensor element types and block formats, one file per block format.
//!
//! Each block layout is a `#[repr(C)]` struct whose byte size a test asserts
//! (the same sizes as ggml's `ggml-common.h`, so GGUF files map directly).
//! The functions here are the *scalar reference*: the SIMD kernels in
//! `kernels/` are tested against them.
//!
//! All block formats are bit-compatible with ggml's reference code
//! (`ggml-quants.c`): the same layouts, the same reference quantizers
//! (`quantize_row_*_ref`) and the same pairing of weight and activation
//! formats in dot products (`ggml_vec_dot_*_generic`).
//!
//! Blocks are read from and written to little-endian bytes field by field
//! ([`Block::read`], [`Block::write`]) rather than cast in place: tensor data
//! need not be aligned for `BlockQ8K`'s `f32`, and this module stays free of
//! `unsafe`. The structs are `#[repr(C)]` without padding (tests assert each
//! field's offset), so a kernel may still cast aligned bytes to them.

pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;

pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4K;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;
pub use q8_k::BlockQ8K;

use crate::error::{Error, Result};

/// Elements per k-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// The element type of a stored tensor, with ggml's numeric ids.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    /// Activation format for `Q4_1` dot products (8-bit with block sum).
    Q8_1,
    Q4_K,
    Q5_K,
    Q6_K,
    /// Activation format for k-quant dot products (256-element blocks).
    Q8_K,
}

impl DType {
    /// Every type a weight matrix may be stored in (the others are
    /// activation formats of dot products).
    pub const WEIGHT_TYPES: [DType; 9] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];

    /// ggml's `enum ggml_type` value.
    pub const fn ggml_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q8_0 => 8,
            DType::Q8_1 => 9,
            DType::Q4_K => 12,
            DType::Q5_K => 13,
            DType::Q6_K => 14,
            DType::Q8_K => 15,
            DType::BF16 => 30,
        }
    }

    pub fn from_ggml_id(id: u32) -> Option<DType> {
        Some(match id {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::Q4_0,
            3 => DType::Q4_1,
            8 => DType::Q8_0,
            9 => DType::Q8_1,
            12 => DType::Q4_K,
            13 => DType::Q5_K,
            14 => DType::Q6_K,
            15 => DType::Q8_K,
            30 => DType::BF16,
            _ => return None,
        })
    }

    /// ggml's name for a type id, also for ids this engine cannot compute with
    /// (so errors can say "Q2_K" instead of "10").
    pub fn ggml_name(id: u32) -> &'static str {
        const NAMES: [&str; 31] = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
            "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
            "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
            "BF16",
        ];
        NAMES.get(id as usize).copied().unwrap_or("unknown")
    }

    pub fn name(self) -> &'static str {
        DType::ggml_name(self.ggml_id())
    }

    /// Parses a user-facing name such as "q4_k" or "F16".
    pub fn from_name(name: &str) -> Option<DType> {
        let upper = name.to_ascii_uppercase();
        DType::WEIGHT_TYPES.into_iter().find(|t| t.name() == upper)
    }

    /// Elements per block.
    pub const fn block_len(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::Q8_1 => 32,
            DType::Q4_K | DType::Q5_K | DType::Q6_K | DType::Q8_K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q8_0 => 34,
            DType::Q8_1 => 36,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
            DType::Q8_K => 292,
        }
    }

    /// Bytes of a row of `n` elements, or `None` when `n` is not a whole
    /// number of blocks (or the size overflows).
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let n_blocks = n / self.block_len();
        if n_blocks * self.block_len() != n {
            return None;
        }
        n_blocks.checked_mul(self.block_bytes())
    }

    /// Whether this is a stored weight type (as opposed to an activation-only format).
    pub const fn is_weight_type(self) -> bool {
        !matches!(self, DType::Q8_1 | DType::Q8_K)
    }
}

/// A block format's fixed layout, as stored in GGUF files.
pub trait Block: Copy + 'static {
    /// The tensor type whose blocks these are.
    const DTYPE: DType;
    /// Bytes per block, `DTYPE.block_bytes()`.
    const BYTES: usize = Self::DTYPE.block_bytes();
    /// Elements per block, `DTYPE.block_len()`.
    const LEN: usize = Self::DTYPE.block_len();

    /// Reads one block from exactly `Self::BYTES` little-endian bytes.
    fn read(bytes: &[u8]) -> Self;

    /// Writes this block to exactly `Self::BYTES` bytes.
    fn write(&self, out: &mut [u8]);
}

/// The blocks of a row of `n` elements stored in `bytes`.
///
/// Panics if `n` is not a whole number of blocks or `bytes` has the wrong length.
pub fn blocks<B: Block>(bytes: &[u8], n: usize) -> impl ExactSizeIterator<Item = B> + '_ {
    assert_eq!(
        Some(bytes.len()),
        B::DTYPE.row_bytes(n),
        "{:?} row of {n} elements: wrong byte length",
        B::DTYPE
    );
    bytes.chunks_exact(B::BYTES).map(B::read)
}

/// Quantizes `src` block by block with `quantize_block` into `dst`.
/// Panics if the lengths do not match.
fn quantize_blocks<B: Block>(src: &[f32], dst: &mut [u8], quantize_block: impl Fn(&[f32]) -> B) {
    assert_eq!(
        Some(dst.len()),
        B::DTYPE.row_bytes(src.len()),
        "quantize {:?}: {} elements do not fill {} bytes",
        B::DTYPE,
        src.len(),
        dst.len()
    );
    for (x, out) in src.chunks_exact(B::LEN).zip(dst.chunks_exact_mut(B::BYTES)) {
        quantize_block(x).write(out);
    }
}

fn read_f16(bytes: &[u8], offset: usize) -> half::f16 {
    half::f16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn read_array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    std::array::from_fn(|i| bytes[offset + i])
}

fn read_i8_array<const N: usize>(bytes: &[u8], offset: usize) -> [i8; N] {
    std::array::from_fn(|i| bytes[offset + i] as i8)
}

fn write_i8s(out: &mut [u8], values: &[i8]) {
    for (o, v) in out.iter_mut().zip(values) {
        *o = *v as u8;
    }
}

/// ggml's `nearest_int`: round half to even through the float mantissa, so
/// quantizers pick exactly the integers ggml picks. Valid for |x| < 2^22.
fn nearest_int(x: f32) -> i32 {
    let shifted = x + 12582912.0; // 1.5 * 2^23: the integer lands in the low mantissa bits
    (shifted.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Dequantizes one row: `src` holds `dst.len() / block_len` whole blocks of `dtype`.
///
/// This is the scalar reference every kernel is tested against.
/// Panics if the lengths do not match (callers check shapes at load time).
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) {
    assert_eq!(
        Some(src.len()),
        dtype.row_bytes(dst.len()),
        "dequantize_row: length mismatch for {dtype:?}"
    );
    match dtype {
        DType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        DType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        DType::Q4_0 => q4_0::dequantize(src, dst),
        DType::Q4_1 => q4_1::dequantize(src, dst),
        DType::Q8_0 => q8_0::dequantize(src, dst),
        DType::Q8_1 => q8_1::dequantize(src, dst),
        DType::Q4_K => q4_k::dequantize(src, dst),
        DType::Q5_K => q5_k::dequantize(src, dst),
        DType::Q6_K => q6_k::dequantize(src, dst),
        DType::Q8_K => q8_k::dequantize(src, dst),
    }
}

/// Quantizes one row of `src.len()` elements into `dst` with ggml's reference
/// quantizer for `dtype` (round to nearest even for F16/BF16).
///
/// Errors if `src.len()` is not a whole number of `dtype` blocks or `dst` is
/// not exactly the row's byte size.
pub fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    let Some(row_bytes) = dtype.row_bytes(src.len()) else {
        return Err(Error::invalid_argument(
            "src",
            format!(
                "{} elements are not a whole number of {dtype:?} blocks of {}",
                src.len(),
                dtype.block_len()
            ),
        ));
    };
    if dst.len() != row_bytes {
        return Err(Error::invalid_argument(
            "dst",
            format!(
                "{} bytes, but {} {dtype:?} elements take {row_bytes}",
                dst.len(),
                src.len()
            ),
        ));
    }
    match dtype {
        DType::F32 => {
            for (o, x) in dst.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&x.to_le_bytes());
            }
        }
        DType::F16 => {
            for (o, x) in dst.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&half::f16::from_f32(*x).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (o, x) in dst.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&half::bf16::from_f32(*x).to_le_bytes());
            }
        }
        DType::Q4_0 => q4_0::quantize(src, dst),
        DType::Q4_1 => q4_1::quantize(src, dst),
        DType::Q8_0 => q8_0::quantize(src, dst),
        DType::Q8_1 => q8_1::quantize(src, dst),
        DType::Q4_K => q4_k::quantize(src, dst),
        DType::Q5_K => q5_k::quantize(src, dst),
        DType::Q6_K => q6_k::quantize(src, dst),
        DType::Q8_K => q8_k::quantize(src, dst),
    }
    Ok(())
}

/// The format activations are quantized to before a dot product with a row of
/// `weight` (ggml's `vec_dot_type`). Float weights, and the activation-only
/// formats, meet f32 activations.
pub const fn activation_type(weight: DType) -> DType {
    match weight {
        DType::Q4_0 | DType::Q8_0 => DType::Q8_0,
        DType::Q4_1 => DType::Q8_1,
        DType::Q4_K | DType::Q5_K | DType::Q6_K => DType::Q8_K,
        DType::F32 | DType::F16 | DType::BF16 | DType::Q8_1 | DType::Q8_K => DType::F32,
    }
}

/// Dot product of one weight row `w` (`n` elements of `weight`) with one
/// activation row `a` (`n` elements of `activation_type(weight)`).
///
/// Quantized pairs accumulate integers inside each block and then scale, as
/// ggml's generic `ggml_vec_dot_*` do; f32 activations are dotted with the
/// dequantized weights in f32, in order.
/// Panics if a row's byte length does not match `n`.
pub fn vec_dot_scalar(weight: DType, w: &[u8], a: &[u8], n: usize) -> f32 {
    match weight {
        DType::Q4_0 => q4_0::vec_dot(w, a, n),
        DType::Q4_1 => q4_1::vec_dot(w, a, n),
        DType::Q8_0 => q8_0::vec_dot(w, a, n),
        DType::Q4_K => q4_k::vec_dot(w, a, n),
        DType::Q5_K => q5_k::vec_dot(w, a, n),
        DType::Q6_K => q6_k::vec_dot(w, a, n),
        DType::F32 | DType::F16 | DType::BF16 | DType::Q8_1 | DType::Q8_K => {
            let mut row = vec![0f32; n];
            dequantize_row(weight, w, &mut row);
            let mut x = vec![0f32; n];
            dequantize_row(DType::F32, a, &mut x);
            row.iter().zip(&x).map(|(w, x)| w * x).sum()
        }
    }
}

#[cfg(test)]
mod tests;
