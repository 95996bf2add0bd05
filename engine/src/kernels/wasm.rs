//! wasm32 simd128 kernels, 4 rows per tile (one lane of a `v128` each).
//!
//! simd128 has no byte dot product: signed byte products widen to 16 bits
//! (`extmul`) and pairwise adds reduce each row's four products. As on NEON,
//! codes are shifted back by the zero point once per tile group. Packing and
//! quantizing use the scalar reference.

use std::arch::wasm32::*;

use super::{scalar, Isa, Kernels, OutTile, PackedF, PackedQ, QuantActs};

const TR: usize = 4;

pub fn kernels() -> Kernels {
    Kernels {
        isa: Isa::Simd128,
        tile_rows: TR,
        quantize: scalar::quantize_row,
        pack_q: |rows, packed| scalar::pack_q_with(rows, TR, packed),
        dot_q,
        pack_f: |rows, scratch, packed| scalar::pack_f_with(rows, TR, scratch, packed),
        dot_f,
    }
}

fn store_rows(v: v128, n_rows: usize, out: &mut [f32]) {
    let lanes = [
        f32x4_extract_lane::<0>(v),
        f32x4_extract_lane::<1>(v),
        f32x4_extract_lane::<2>(v),
        f32x4_extract_lane::<3>(v),
    ];
    out[..n_rows].copy_from_slice(&lanes[..n_rows]);
}

/// Four consecutive words of `words` from `at` as one vector.
fn load4(words: &[u32], at: usize) -> v128 {
    let w = &words[at..at + 4];
    u32x4(w[0], w[1], w[2], w[3])
}

fn load4f(v: &[f32], at: usize) -> v128 {
    let v = &v[at..at + 4];
    f32x4(v[0], v[1], v[2], v[3])
}

fn dot_q(packed: &PackedQ, acts: &QuantActs, out: &mut OutTile) {
    let fine = acts.has_fine();
    by_scheme!(packed.scheme(), |G, MIN, WIDE| sweep_tokens!(
        acts.n_tok,
        8,
        |t0, NT| match fine {
            true => dot_q_tile::<NT, G, MIN, true>(packed, acts, t0, out),
            false => dot_q_tile::<NT, G, MIN, false>(packed, acts, t0, out),
        }
    ))
}

/// Adds each row's products of its four signed weight bytes with `a[..4]`
/// (broadcast) to `sum`.
fn dot4(sum: v128, w: v128, a: &[i8]) -> v128 {
    let a4 = i32::from_le_bytes([a[0] as u8, a[1] as u8, a[2] as u8, a[3] as u8]);
    let av = i32x4_splat(a4);
    // Rows 0-1 in the low half, 2-3 in the high half.
    let lo = i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(w, av));
    let hi = i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(w, av));
    let rows = i32x4_add(
        i32x4_shuffle::<0, 2, 4, 6>(lo, hi),
        i32x4_shuffle::<1, 3, 5, 7>(lo, hi),
    );
    i32x4_add(sum, rows)
}

fn dot_q_tile<const NT: usize, const G: usize, const MIN: bool, const FINE: bool>(
    packed: &PackedQ,
    acts: &QuantActs,
    t0: usize,
    out: &mut OutTile,
) {
    let (n_sub, n_in) = (acts.n_sub(), acts.n_in);
    let zero = u8x16_splat(packed.scheme().zero);
    let (qs, dw, mw) = (packed.qs.words(), packed.dw.floats(), packed.mw.floats());
    let mut acc = [f32x4_splat(0.0); NT];
    for s in 0..n_sub {
        let mut w = [i8x16_splat(0); G];
        for (g, w) in w.iter_mut().enumerate() {
            *w = i8x16_sub(load4(qs, (s * G + g) * TR), zero);
        }
        let dwv = load4f(dw, s * TR);
        for (j, acc) in acc.iter_mut().enumerate() {
            let t = t0 + j;
            let at = t * n_in + s * 4 * G;
            let (mut sum, mut fine) = (i32x4_splat(0), i32x4_splat(0));
            for (g, w) in w.iter().enumerate() {
                sum = dot4(sum, *w, &acts.qs[at + 4 * g..]);
                if FINE {
                    fine = dot4(fine, *w, &acts.fine[at + 4 * g..]);
                }
            }
            if FINE {
                sum = i32x4_add(i32x4_shl(sum, 8), fine);
            }
            let scale = f32x4_mul(dwv, f32x4_splat(acts.da[t * n_sub + s]));
            *acc = f32x4_add(*acc, f32x4_mul(f32x4_convert_i32x4(sum), scale));
            if MIN {
                let m = f32x4_mul(load4f(mw, s * TR), f32x4_splat(acts.sa[t * n_sub + s]));
                *acc = f32x4_add(*acc, m);
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        store_rows(*acc, packed.n_rows, out.row(t0 + j));
    }
}

fn dot_f(packed: &PackedF, x: &[f32], out: &mut OutTile) {
    let n_tok = out.stripe.n_rows();
    sweep_tokens!(n_tok, 8, |t0, NT| dot_f_tile::<NT>(packed, x, t0, out))
}

fn dot_f_tile<const NT: usize>(packed: &PackedF, x: &[f32], t0: usize, out: &mut OutTile) {
    let n_in = packed.n_in;
    let w = packed.w.floats();
    assert!(w.len() >= n_in * TR && x.len() >= (t0 + NT) * n_in);
    let mut acc = [f32x4_splat(0.0); NT];
    // SAFETY: the assert above bounds every read: weights `i * TR .. i * TR + 4`
    // for i < n_in, activations `(t0 + j) * n_in + i` for j < NT, i < n_in.
    // Raw pointers keep per-element bounds checks out of the inner loop, and
    // `v128_load32_splat` is one load instead of a load plus a shuffle.
    unsafe {
        let (wp, xp) = (w.as_ptr(), x.as_ptr().add(t0 * n_in));
        for i in 0..n_in {
            let wv = v128_load(wp.add(i * TR) as *const v128);
            for (j, acc) in acc.iter_mut().enumerate() {
                let xv = v128_load32_splat(xp.add(j * n_in + i) as *const u32);
                *acc = f32x4_add(*acc, f32x4_mul(wv, xv));
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        store_rows(*acc, packed.n_rows, out.row(t0 + j));
    }
}
