//! AVX-VNNI: the AVX2 kernel set with its byte dot product on the
//! VEX-encoded 256-bit `vpdpbusd` ([`dot_q`]), for CPUs that have it without
//! AVX-512 (Alder Lake, Arrow Lake, Zen 5 client parts) or when `MAIN_ISA`
//! caps the engine below AVX-512. It multiplies unsigned weight bytes by
//! signed activation bytes and adds four products into each 32-bit lane
//! without saturating, so Q8_0's offset codes need no sign trick: the
//! activations' precomputed `-128 * sum(a)` starts the accumulator, and the
//! integers (hence the bits) are the AVX2 kernel's. Quantizing and packing
//! are AVX2's ([`super::avx2`]).

use std::arch::x86_64::*;

use super::avx2::{dot_q_kernel, lane_mask, TR};
use crate::kernels::{OutTile, PackedQ, QuantActs};

dot_q_kernel!(dot_q, dot_q_tile, "avx2,fma,f16c,avxvnni", true);
