//! AVX-512 VNNI: the AVX-512 kernel set with its byte dot product on
//! `vpdpbusd` ([`dot_q`]). It multiplies unsigned weight bytes by signed
//! activation bytes and adds four products into each 32-bit lane without
//! saturating, so Q8_0's signed codes are stored offset by 128 and the
//! activations' precomputed `-128 * sum(a)` starts the accumulator (no sign
//! trick). Quantizing and packing are AVX-512's ([`super::avx512`]).

use std::arch::x86_64::*;

use super::avx512::{dot_q_kernel, row_mask, TR};
use crate::kernels::{OutTile, PackedQ, QuantActs};

dot_q_kernel!(
    dot_q,
    dot_q_tile,
    "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c",
    true
);
