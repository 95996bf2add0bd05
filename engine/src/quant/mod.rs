//! Tensor element types and block formats, one file per block format.
//!
//! Each block layout is a `#[repr(C)]` struct whose byte size a test asserts
//! (the same sizes as ggml's `ggml-common.h`, so GGUF files map directly).
//! The functions here are the *scalar reference*: the SIMD kernels in
//! `kernels/` are tested against them.

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
        [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
        ]
        .into_iter()
        .find(|t| t.name() == upper)
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
        if n % self.block_len() != 0 {
            return None;
        }
        (n / self.block_len()).checked_mul(self.block_bytes())
    }

    /// Whether this is a stored weight type (as opposed to an activation-only format).
    pub const fn is_weight_type(self) -> bool {
        !matches!(self, DType::Q8_1 | DType::Q8_K)
    }
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
        other => todo!("dequantize {other:?}"),
    }
}
