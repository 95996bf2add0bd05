//! wasm32 simd128 kernels, 8 rows per tile (two `v128` of four lanes).
//!
//! Tiles are 8 rows by 4 tokens (f32) or 2 tokens (integers), not 4 rows by
//! 8 tokens: every token's broadcast activation then feeds two products
//! instead of one, and the accumulators fit the 16 vector registers V8 has
//! on x86-64. (Measured in Node, one core of the 2-core EPYC: an f32 sweep
//! of 4 rows x 8 tokens ran 9 GMAC/s, 8 rows x 4 tokens 21, the ceiling of
//! two 4-lane multiplies per cycle.)
//!
//! simd128 has no byte dot product (relaxed SIMD's needs a second build),
//! but it has a 16-bit one, `i32x4.dot_i16x8_s` (`pmaddwd`). So integer
//! kernels take the activations as one 16-bit code each ([`QuantActs::wide`]:
//! `256 q + f` with fine codes, the same integer the byte kernels form from
//! two sums) and widen the packed weight bytes as they load them: one pass,
//! whatever the precision, 29-40 GMAC/s. The weights stay unsigned (`u`, not
//! `u - zero`); the zero point enters through the activations' precomputed
//! sums (`corr`), as on x86. Activations are quantized four lanes at a time
//! with the scalar reference's f32 operations (so the codes agree bit for
//! bit); packing uses the scalar reference.

use std::arch::wasm32::*;

use super::{scalar, ActRowMut, Isa, Kernels, OutTile, PackedF, PackedQ, QuantActs, Scheme};

const TR: usize = 8;

pub fn kernels() -> Kernels {
    Kernels {
        isa: Isa::Simd128,
        tile_rows: TR,
        wide_acts: true,
        quantize: quantize_row,
        pack_q: |rows, packed| scalar::pack_q_with(rows, TR, packed),
        dot_q,
        pack_f: |rows, scratch, packed| scalar::pack_f_with(rows, TR, scratch, packed),
        dot_f,
    }
}

/// [`scalar::quantize_row`] four lanes at a time: per block, `d = amax / 127`,
/// `q = round(x / d)` ties to even and the fine code
/// `f = round(256 (x / d - q))` clamped to ±127, the same f32 operations in
/// the same order, so every code equals the scalar one.
fn quantize_row(scheme: &Scheme, x: &[f32], row: &mut ActRowMut) {
    let ab = scheme.act_block;
    let fine = !row.fine.is_empty();
    assert!(ab.is_multiple_of(16) && x.len().is_multiple_of(ab) && row.qs.len() == x.len());
    assert!(!fine || row.fine.len() == x.len());
    let mut d = Vec::with_capacity(x.len() / ab);
    for (b, xb) in x.chunks_exact(ab).enumerate() {
        // SAFETY: every load reads 4 floats of `xb` (its length is a multiple
        // of 16) and every store writes 16 bytes of `row.qs` / `row.fine`
        // within the block's `ab` elements (both hold `x.len()`, asserted).
        unsafe {
            let xp = xb.as_ptr();
            let mut m = f32x4_splat(0.0);
            for i in (0..ab).step_by(4) {
                m = f32x4_max(m, f32x4_abs(v128_load(xp.add(i) as *const v128)));
            }
            let amax = f32x4_extract_lane::<0>(m)
                .max(f32x4_extract_lane::<1>(m))
                .max(f32x4_extract_lane::<2>(m))
                .max(f32x4_extract_lane::<3>(m));
            let db = amax / 127.0;
            let id = f32x4_splat(if db != 0.0 { 1.0 / db } else { 0.0 });
            let (lo, hi, k256) = (f32x4_splat(-127.0), f32x4_splat(127.0), f32x4_splat(256.0));
            for i in (0..ab).step_by(16) {
                let mut q = [i32x4_splat(0); 4];
                let mut f = [i32x4_splat(0); 4];
                for k in 0..4 {
                    let t = f32x4_mul(v128_load(xp.add(i + 4 * k) as *const v128), id);
                    let qi = f32x4_nearest(t);
                    q[k] = i32x4_trunc_sat_f32x4(qi);
                    if fine {
                        let fi = f32x4_nearest(f32x4_mul(f32x4_sub(t, qi), k256));
                        f[k] = i32x4_trunc_sat_f32x4(f32x4_pmin(hi, f32x4_pmax(lo, fi)));
                    }
                }
                let narrow = |v: [v128; 4]| {
                    i8x16_narrow_i16x8(
                        i16x8_narrow_i32x4(v[0], v[1]),
                        i16x8_narrow_i32x4(v[2], v[3]),
                    )
                };
                let at = b * ab + i;
                v128_store(row.qs.as_mut_ptr().add(at) as *mut v128, narrow(q));
                if fine {
                    v128_store(row.fine.as_mut_ptr().add(at) as *mut v128, narrow(f));
                }
            }
            d.push(db);
        }
    }
    QuantActs::finish_row(scheme, row, |b| d[b]);
}

/// Copies the first `n_rows` of the tile's 8 results (`lo`: rows 0-3, `hi`:
/// rows 4-7) into `out`.
fn store_rows(lo: v128, hi: v128, n_rows: usize, out: &mut [f32]) {
    let lanes = [
        f32x4_extract_lane::<0>(lo),
        f32x4_extract_lane::<1>(lo),
        f32x4_extract_lane::<2>(lo),
        f32x4_extract_lane::<3>(lo),
        f32x4_extract_lane::<0>(hi),
        f32x4_extract_lane::<1>(hi),
        f32x4_extract_lane::<2>(hi),
        f32x4_extract_lane::<3>(hi),
    ];
    out[..n_rows].copy_from_slice(&lanes[..n_rows]);
}

fn dot_q(packed: &PackedQ, acts: &QuantActs, out: &mut OutTile) {
    by_scheme!(packed.scheme(), |G, MIN, WIDE| sweep_tokens!(
        acts.n_tok,
        2,
        |t0, NT| dot_q_tile::<NT, G, MIN>(packed, acts, t0, out)
    ))
}

/// Per-row sums of a sub-block from half-row sums: `a` holds rows 0-1
/// (two lanes each), `b` rows 2-3.
fn join_halves(a: v128, b: v128) -> v128 {
    i32x4_add(
        i32x4_shuffle::<0, 2, 4, 6>(a, b),
        i32x4_shuffle::<1, 3, 5, 7>(a, b),
    )
}

fn dot_q_tile<const NT: usize, const G: usize, const MIN: bool>(
    packed: &PackedQ,
    acts: &QuantActs,
    t0: usize,
    out: &mut OutTile,
) {
    let (n_sub, n_in) = (acts.n_sub(), acts.n_in);
    let (qs, dw, mw) = (packed.qs.words(), packed.dw.floats(), packed.mw.floats());
    assert!(qs.len() >= n_sub * G * TR && dw.len() >= n_sub * TR);
    assert!(!MIN || mw.len() >= n_sub * TR);
    assert!(acts.wide.len() >= (t0 + NT) * n_in && n_sub * 4 * G == n_in);
    assert!(acts.da.len() >= (t0 + NT) * n_sub && acts.corr.len() >= (t0 + NT) * n_sub);
    let mut acc = [[f32x4_splat(0.0); 2]; NT];
    // SAFETY: the asserts above bound every read: weight words
    // `(s * G + g) * TR .. + TR` for s < n_sub, g < G; scales and minimums
    // `s * TR .. + TR`; 16-bit codes `(t0 + j) * n_in + s * 4G + 4g .. + 4`
    // for j < NT; per-sub-block values `(t0 + j) * n_sub + s`.
    unsafe {
        let (qp, wide) = (qs.as_ptr(), acts.wide.as_ptr());
        for s in 0..n_sub {
            // Half-row sums: [j][0] rows 0-1, [j][1] rows 2-3, [j][2] rows
            // 4-5, [j][3] rows 6-7, two lanes per row.
            let mut sum = [[i32x4_splat(0); 4]; NT];
            for g in 0..G {
                // Four bytes (elements 4g..4g+4) of each row, rows 0-3 then 4-7.
                let at = qp.add((s * G + g) * TR) as *const v128;
                let (w03, w47) = (v128_load(at), v128_load(at.add(1)));
                let w = [
                    u16x8_extend_low_u8x16(w03),
                    u16x8_extend_high_u8x16(w03),
                    u16x8_extend_low_u8x16(w47),
                    u16x8_extend_high_u8x16(w47),
                ];
                for (j, sum) in sum.iter_mut().enumerate() {
                    // The same four codes for both rows of each half.
                    let a = v128_load64_splat(
                        wide.add((t0 + j) * n_in + s * 4 * G + 4 * g) as *const u64
                    );
                    for (sum, w) in sum.iter_mut().zip(w) {
                        *sum = i32x4_add(*sum, i32x4_dot_i16x8(w, a));
                    }
                }
            }
            let dw = [
                v128_load(dw.as_ptr().add(s * TR) as *const v128),
                v128_load(dw.as_ptr().add(s * TR + 4) as *const v128),
            ];
            for (j, (acc, sum)) in acc.iter_mut().zip(&sum).enumerate() {
                let ts = (t0 + j) * n_sub + s;
                let corr = i32x4_splat(*acts.corr.as_ptr().add(ts));
                let da = f32x4_splat(*acts.da.as_ptr().add(ts));
                let rows = [
                    i32x4_add(join_halves(sum[0], sum[1]), corr),
                    i32x4_add(join_halves(sum[2], sum[3]), corr),
                ];
                for h in 0..2 {
                    let scale = f32x4_mul(dw[h], da);
                    acc[h] = f32x4_add(acc[h], f32x4_mul(f32x4_convert_i32x4(rows[h]), scale));
                    if MIN {
                        let m = v128_load(mw.as_ptr().add(s * TR + 4 * h) as *const v128);
                        let sa = f32x4_splat(*acts.sa.as_ptr().add(ts));
                        acc[h] = f32x4_add(acc[h], f32x4_mul(m, sa));
                    }
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        store_rows(acc[0], acc[1], packed.n_rows, out.row(t0 + j));
    }
}

fn dot_f(packed: &PackedF, x: &[f32], out: &mut OutTile) {
    let n_tok = out.stripe.n_rows();
    sweep_tokens!(n_tok, 4, |t0, NT| dot_f_tile::<NT>(packed, x, t0, out))
}

fn dot_f_tile<const NT: usize>(packed: &PackedF, x: &[f32], t0: usize, out: &mut OutTile) {
    let n_in = packed.n_in;
    let w = packed.w.floats();
    assert!(w.len() >= n_in * TR && x.len() >= (t0 + NT) * n_in);
    let mut acc = [[f32x4_splat(0.0); 2]; NT];
    // SAFETY: the assert above bounds every read: weights `i * TR .. i * TR + 8`
    // for i < n_in, activations `(t0 + j) * n_in + i` for j < NT, i < n_in.
    // Raw pointers keep per-element bounds checks out of the inner loop, and
    // `v128_load32_splat` is one load instead of a load plus a shuffle.
    unsafe {
        let (wp, xp) = (w.as_ptr(), x.as_ptr().add(t0 * n_in));
        for i in 0..n_in {
            let w0 = v128_load(wp.add(i * TR) as *const v128);
            let w1 = v128_load(wp.add(i * TR + 4) as *const v128);
            for (j, acc) in acc.iter_mut().enumerate() {
                let xv = v128_load32_splat(xp.add(j * n_in + i) as *const u32);
                acc[0] = f32x4_add(acc[0], f32x4_mul(w0, xv));
                acc[1] = f32x4_add(acc[1], f32x4_mul(w1, xv));
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        store_rows(acc[0], acc[1], packed.n_rows, out.row(t0 + j));
    }
}
