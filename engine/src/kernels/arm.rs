//! aarch64 NEON kernels, 4 rows per tile (one lane of a 128-bit vector each),
//! in two sets that differ only in the byte dot product: plain NEON
//! (`smull` + two pairwise adds, six instructions per 16 byte products) and
//! NEON with the dot-product extension (`sdot`, one instruction), chosen
//! when the CPU has `dotprod`. Both sum the same integers, so they give the
//! same bits.
//!
//! NEON multiplies signed bytes by signed bytes, so packed codes are shifted
//! back by the zero point once per tile group (`u - zero`) and the
//! activations' zero-point sums are not needed. Packing and quantizing use the
//! scalar reference: their cost is amortized over the batch.

use std::arch::aarch64::*;

use super::{scalar, Isa, Kernels, OutTile, PackedF, PackedQ, QuantActs};

const TR: usize = 4;

/// The kernel sets this CPU runs, weakest first: NEON, and NEON with
/// `sdot` when the CPU has the dot-product extension.
pub fn kernels() -> Vec<Kernels> {
    let neon = Kernels {
        isa: Isa::Neon,
        tile_rows: TR,
        wide_acts: false,
        quantize: scalar::quantize_row,
        pack_q: |rows, packed| scalar::pack_q_with(rows, TR, packed),
        // SAFETY: NEON is part of the aarch64 baseline.
        dot_q: |packed, acts, out| unsafe { dot_q::<false>(packed, acts, out) },
        pack_f: |rows, scratch, packed| scalar::pack_f_with(rows, TR, scratch, packed),
        // SAFETY: as above.
        dot_f: |packed, x, out| unsafe { dot_f(packed, x, out) },
    };
    let mut all = vec![neon.clone()];
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        all.push(Kernels {
            isa: Isa::NeonDot,
            // SAFETY: the CPU has the dot-product extension (checked above).
            dot_q: |packed, acts, out| unsafe { dot_q::<true>(packed, acts, out) },
            ..neon
        });
    }
    all
}

/// Copies the first `n_rows` lanes of `v` into `out`.
#[target_feature(enable = "neon")]
unsafe fn store_rows(v: float32x4_t, n_rows: usize, out: &mut [f32]) {
    let mut lanes = [0f32; TR];
    // SAFETY: `lanes` holds four floats.
    unsafe { vst1q_f32(lanes.as_mut_ptr(), v) };
    out[..n_rows].copy_from_slice(&lanes[..n_rows]);
}

/// The integer dot products; `SDOT`: on the dot-product extension, which
/// only a caller that saw `dotprod` may ask for (the `asm!` in [`dot4`]
/// enables the extension for the assembler, so no `target_feature` is needed).
#[target_feature(enable = "neon")]
unsafe fn dot_q<const SDOT: bool>(packed: &PackedQ, acts: &QuantActs, out: &mut OutTile) {
    let fine = acts.has_fine();
    by_scheme!(packed.scheme(), |G, MIN, WIDE| sweep_tokens!(
        acts.n_tok,
        8,
        |t0, NT| unsafe {
            match fine {
                true => dot_q_tile::<NT, G, MIN, true, SDOT>(packed, acts, t0, out),
                false => dot_q_tile::<NT, G, MIN, false, SDOT>(packed, acts, t0, out),
            }
        }
    ))
}

/// Adds each row's products of its four signed weight bytes with the four
/// bytes at `a` (broadcast) to `sum`; `SDOT`: with one `sdot`, which the
/// caller must have checked the CPU runs.
#[inline(always)]
unsafe fn dot4<const SDOT: bool>(sum: int32x4_t, w: int8x16_t, a: *const i8) -> int32x4_t {
    // SAFETY: the caller passes 4 readable bytes.
    let av = unsafe { vreinterpretq_s8_s32(vdupq_n_s32((a as *const i32).read_unaligned())) };
    if SDOT {
        // `vdotq_s32` is unstable in Rust 1.95 (`stdarch_neon_dotprod`), so
        // the instruction is written out: lane r += the four products of
        // bytes 4r..4r+4 of `w` and `av`.
        let mut sum = sum;
        // SAFETY: `sdot` reads and writes only these registers, touches no
        // memory or flags; the caller checked the CPU has `dotprod`.
        unsafe {
            std::arch::asm!(
                ".arch_extension dotprod",
                "sdot {sum:v}.4s, {w:v}.16b, {a:v}.16b",
                sum = inout(vreg) sum,
                w = in(vreg) w,
                a = in(vreg) av,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        return sum;
    }
    // Rows 0-1 in the low half, 2-3 in the high half; two pairwise adds leave
    // one sum of four products per row.
    // SAFETY: NEON is part of the aarch64 baseline.
    unsafe {
        let lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(av)));
        let hi = vpaddlq_s16(vmull_high_s8(w, av));
        vaddq_s32(sum, vpaddq_s32(lo, hi))
    }
}

#[target_feature(enable = "neon")]
unsafe fn dot_q_tile<
    const NT: usize,
    const G: usize,
    const MIN: bool,
    const FINE: bool,
    const SDOT: bool,
>(
    packed: &PackedQ,
    acts: &QuantActs,
    t0: usize,
    out: &mut OutTile,
) {
    let (n_sub, n_in) = (acts.n_sub(), acts.n_in);
    let zero = vdupq_n_u8(packed.scheme().zero);
    let mut acc = [vdupq_n_f32(0.0); NT];
    // SAFETY: the packed tile holds `n_sub * G` groups of TR words and
    // `n_sub * TR` scales; `acts` holds `n_in` codes (and as many fine codes
    // when FINE) and `n_sub` scales per token, and `t0 + NT <= n_tok`.
    unsafe {
        let qs = packed.qs.words().as_ptr();
        let a0 = acts.qs.as_ptr().add(t0 * n_in);
        let f0 = if FINE {
            acts.fine.as_ptr().add(t0 * n_in)
        } else {
            a0
        };
        for s in 0..n_sub {
            let mut w = [vdupq_n_s8(0); G];
            for (g, w) in w.iter_mut().enumerate() {
                let u = vld1q_u8(qs.add((s * G + g) * TR) as *const u8);
                *w = vreinterpretq_s8_u8(vsubq_u8(u, zero));
            }
            let dwv = vld1q_f32(packed.dw.floats().as_ptr().add(s * TR));
            for (j, acc) in acc.iter_mut().enumerate() {
                let t = t0 + j;
                let a = a0.add(j * n_in + s * 4 * G);
                let f = f0.add(j * n_in + s * 4 * G);
                let (mut sum, mut fine) = (vdupq_n_s32(0), vdupq_n_s32(0));
                for (g, w) in w.iter().enumerate() {
                    sum = dot4::<SDOT>(sum, *w, a.add(4 * g));
                    if FINE {
                        fine = dot4::<SDOT>(fine, *w, f.add(4 * g));
                    }
                }
                if FINE {
                    sum = vaddq_s32(vshlq_n_s32::<8>(sum), fine);
                }
                let scale = vmulq_n_f32(dwv, acts.da[t * n_sub + s]);
                *acc = vfmaq_f32(*acc, vcvtq_f32_s32(sum), scale);
                if MIN {
                    let mwv = vld1q_f32(packed.mw.floats().as_ptr().add(s * TR));
                    *acc = vfmaq_n_f32(*acc, mwv, acts.sa[t * n_sub + s]);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            store_rows(*acc, packed.n_rows, out.row(t0 + j));
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn dot_f(packed: &PackedF, x: &[f32], out: &mut OutTile) {
    let n_tok = out.stripe.n_rows();
    sweep_tokens!(n_tok, 8, |t0, NT| unsafe {
        dot_f_tile::<NT>(packed, x, t0, out)
    })
}

#[target_feature(enable = "neon")]
unsafe fn dot_f_tile<const NT: usize>(packed: &PackedF, x: &[f32], t0: usize, out: &mut OutTile) {
    let n_in = packed.n_in;
    let mut acc = [vdupq_n_f32(0.0); NT];
    // SAFETY: the tile holds `n_in * TR` floats and `x` holds `n_in` per token
    // with `t0 + NT <= n_tok`.
    unsafe {
        let w = packed.w.floats().as_ptr();
        let x = x.as_ptr().add(t0 * n_in);
        for i in 0..n_in {
            let wv = vld1q_f32(w.add(i * TR));
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = vfmaq_n_f32(*acc, wv, *x.add(j * n_in + i));
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            store_rows(*acc, packed.n_rows, out.row(t0 + j));
        }
    }
}
