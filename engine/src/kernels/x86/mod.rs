//! x86_64 kernels, one file per instruction set: [`avx2`] (AVX2 + FMA +
//! F16C, 8 rows per tile), [`avxvnni`] (the same with AVX-VNNI's byte
//! products), [`avx512`] (AVX-512 F/BW/VL, 16 rows per tile) and
//! [`avx512vnni`] (the same with AVX-512 VNNI's byte products). This file
//! detects which of them the CPU runs; `MAIN_ISA` caps the choice later
//! ([`super::isa_cap`], applied in [`super::available`]).
//!
//! Byte products: `vpdpbusd` (AVX-VNNI or AVX-512 VNNI) multiplies unsigned weight bytes by signed
//! activation bytes, so Q8_0's signed codes are stored offset by 128 and the
//! activations' precomputed `-128 * sum(a)` starts the accumulator.
//! `vpmaddubsw` saturates 16-bit pair sums, which offset Q8_0 bytes could hit,
//! so without VNNI Q8_0 ("wide" codes) uses llama.cpp's sign trick instead:
//! `|w| * (a * sign(w))`.

use super::{Isa, Kernels};

mod avx2;
mod avx512;
mod avx512vnni;
mod avxvnni;

/// The kernel sets this CPU supports, weakest first.
pub fn kernels() -> Vec<Kernels> {
    let mut all = Vec::new();
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    if !avx2 {
        return all;
    }
    all.push(Kernels {
        isa: Isa::Avx2,
        tile_rows: 8,
        wide_acts: false,
        // SAFETY (all closures below): this table exists only when the CPU
        // has the features the functions are compiled for.
        quantize: |s, x, row| unsafe { avx2::quantize(s, x, row) },
        pack_q: |rows, packed| unsafe { avx2::pack_q(rows, packed) },
        dot_q: |packed, acts, out| unsafe { avx2::dot_q(packed, acts, out) },
        pack_f: |rows, scratch, packed| unsafe { avx2::pack_f(rows, scratch, packed) },
        dot_f: |packed, x, out| unsafe { avx2::dot_f(packed, x, out) },
    });
    // Listed below the AVX-512 sets, so it is the best only where they are
    // absent or capped away.
    if is_x86_feature_detected!("avxvnni") {
        all.push(Kernels {
            isa: Isa::AvxVnni,
            tile_rows: 8,
            wide_acts: false,
            // SAFETY: as above.
            quantize: |s, x, row| unsafe { avx2::quantize(s, x, row) },
            pack_q: |rows, packed| unsafe { avx2::pack_q(rows, packed) },
            dot_q: |packed, acts, out| unsafe { avxvnni::dot_q(packed, acts, out) },
            pack_f: |rows, scratch, packed| unsafe { avx2::pack_f(rows, scratch, packed) },
            dot_f: |packed, x, out| unsafe { avx2::dot_f(packed, x, out) },
        });
    }
    let avx512 = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl");
    if !avx512 {
        return all;
    }
    all.push(Kernels {
        isa: Isa::Avx512,
        tile_rows: 16,
        wide_acts: false,
        // SAFETY: as above.
        quantize: |s, x, row| unsafe { avx512::quantize(s, x, row) },
        pack_q: |rows, packed| unsafe { avx512::pack_q(rows, packed) },
        dot_q: |packed, acts, out| unsafe { avx512::dot_q_bw(packed, acts, out) },
        pack_f: |rows, scratch, packed| unsafe { avx512::pack_f(rows, scratch, packed) },
        dot_f: |packed, x, out| unsafe { avx512::dot_f(packed, x, out) },
    });
    if is_x86_feature_detected!("avx512vnni") {
        all.push(Kernels {
            isa: Isa::Avx512Vnni,
            tile_rows: 16,
            wide_acts: false,
            // SAFETY: as above.
            quantize: |s, x, row| unsafe { avx512::quantize(s, x, row) },
            pack_q: |rows, packed| unsafe { avx512::pack_q(rows, packed) },
            dot_q: |packed, acts, out| unsafe { avx512vnni::dot_q(packed, acts, out) },
            pack_f: |rows, scratch, packed| unsafe { avx512::pack_f(rows, scratch, packed) },
            dot_f: |packed, x, out| unsafe { avx512::dot_f(packed, x, out) },
        });
    }
    all
}
