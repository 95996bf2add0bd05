//! Reference kernels in plain Rust: the oracle every SIMD kernel is tested
//! against, and the fallback where no SIMD set is available.
//!
//! The decoders here are the one place in `kernels/` that spells out every
//! block layout (ggml's, see `quant/`) in full; the SIMD packers are checked
//! against them byte for byte.

use half::f16;

use super::{ActRowMut, Isa, Kernels, OutTile, PackedF, PackedQ, QuantActs, Scheme, WeightRows};
use crate::quant::{self, q4_k::scale_min, DType};

/// Rows per tile of the scalar kernels (any value works; 8 keeps the packed
/// tile small).
const TILE_ROWS: usize = 8;

pub fn kernels() -> Kernels {
    Kernels {
        isa: Isa::Scalar,
        tile_rows: TILE_ROWS,
        wide_acts: false,
        quantize: quantize_row,
        pack_q: |rows, packed| pack_q_with(rows, TILE_ROWS, packed),
        dot_q,
        pack_f: |rows, scratch, packed| pack_f_with(rows, TILE_ROWS, scratch, packed),
        dot_f,
    }
}

/// ggml's Q8 activation quantizer with the scale kept in f32: per block of
/// `act_block`, `d = amax / 127` and `q = round(x / d)` (ties to even, as the
/// SIMD conversions round). With fine codes (`row.fine` not empty) also
/// `f = round(256 * (x / d - q))`, clamped to ±127: every SIMD quantizer
/// computes the same f32 operations, so the codes agree bit for bit.
pub fn quantize_row(scheme: &Scheme, x: &[f32], row: &mut ActRowMut) {
    let ab = scheme.act_block;
    let fine = !row.fine.is_empty();
    let mut d = Vec::with_capacity(x.len() / ab);
    for (b, (x, q)) in x
        .chunks_exact(ab)
        .zip(row.qs.chunks_exact_mut(ab))
        .enumerate()
    {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let db = amax / 127.0;
        let id = if db != 0.0 { 1.0 / db } else { 0.0 };
        for (i, (q, &v)) in q.iter_mut().zip(x).enumerate() {
            let t = v * id;
            let qi = t.round_ties_even();
            *q = qi as i8;
            if fine {
                row.fine[b * ab + i] =
                    ((t - qi) * 256.0).round_ties_even().clamp(-127.0, 127.0) as i8;
            }
        }
        d.push(db);
    }
    QuantActs::finish_row(scheme, row, |b| d[b]);
}

/// Decodes one stored row into unsigned codes `u` (`n_in`), and per sub-block
/// the scale `dw` and minimum `mw` (when the scheme has minimums), so that
/// element `i` of sub-block `s` is `dw[s] * (u[i] - zero) + mw[s]`. Float rows
/// are quantized to 8 bits on the way (they have no codes of their own).
pub fn decode_row(scheme: &Scheme, row: &[u8], u: &mut [u8], dw: &mut [f32], mw: &mut [f32]) {
    let n_in = u.len();
    match scheme.weight {
        DType::Q4_0 => {
            for (b, (blk, u)) in quant::blocks::<quant::BlockQ4_0>(row, n_in)
                .zip(u.chunks_exact_mut(32))
                .enumerate()
            {
                unpack_nibbles(&blk.qs, u);
                dw[b] = blk.d.to_f32();
            }
        }
        DType::Q4_1 => {
            for (b, (blk, u)) in quant::blocks::<quant::BlockQ4_1>(row, n_in)
                .zip(u.chunks_exact_mut(32))
                .enumerate()
            {
                unpack_nibbles(&blk.qs, u);
                dw[b] = blk.d.to_f32();
                mw[b] = blk.m.to_f32();
            }
        }
        DType::Q8_0 => {
            for (b, (blk, u)) in quant::blocks::<quant::BlockQ8_0>(row, n_in)
                .zip(u.chunks_exact_mut(32))
                .enumerate()
            {
                for (u, &q) in u.iter_mut().zip(&blk.qs) {
                    *u = (q as u8) ^ 0x80;
                }
                dw[b] = blk.d.to_f32();
            }
        }
        DType::Q4_K => {
            for (b, (blk, u)) in quant::blocks::<quant::BlockQ4K>(row, n_in)
                .zip(u.chunks_exact_mut(256))
                .enumerate()
            {
                for (c, (q, u)) in blk
                    .qs
                    .chunks_exact(32)
                    .zip(u.chunks_exact_mut(64))
                    .enumerate()
                {
                    for l in 0..32 {
                        u[l] = q[l] & 0x0f;
                        u[l + 32] = q[l] >> 4;
                    }
                    for j in [2 * c, 2 * c + 1] {
                        k_scale(
                            &mut dw[8 * b + j],
                            &mut mw[8 * b + j],
                            blk.d,
                            blk.dmin,
                            j,
                            &blk.scales,
                        );
                    }
                }
            }
        }
        DType::Q5_K => {
            for (b, (blk, u)) in quant::blocks::<quant::BlockQ5K>(row, n_in)
                .zip(u.chunks_exact_mut(256))
                .enumerate()
            {
                for (c, (q, u)) in blk
                    .qs
                    .chunks_exact(32)
                    .zip(u.chunks_exact_mut(64))
                    .enumerate()
                {
                    for l in 0..32 {
                        let h = blk.qh[l] >> (2 * c);
                        u[l] = (q[l] & 0x0f) | ((h & 1) << 4);
                        u[l + 32] = (q[l] >> 4) | (((h >> 1) & 1) << 4);
                    }
                    for j in [2 * c, 2 * c + 1] {
                        k_scale(
                            &mut dw[8 * b + j],
                            &mut mw[8 * b + j],
                            blk.d,
                            blk.dmin,
                            j,
                            &blk.scales,
                        );
                    }
                }
            }
        }
        DType::Q6_K => {
            for (b, (blk, u)) in quant::blocks::<quant::BlockQ6K>(row, n_in)
                .zip(u.chunks_exact_mut(256))
                .enumerate()
            {
                let d = blk.d.to_f32();
                for h in 0..2 {
                    let ql = &blk.ql[64 * h..64 * (h + 1)];
                    let qh = &blk.qh[32 * h..32 * (h + 1)];
                    let u = &mut u[128 * h..128 * (h + 1)];
                    for l in 0..32 {
                        let low = [ql[l] & 0x0f, ql[l + 32] & 0x0f, ql[l] >> 4, ql[l + 32] >> 4];
                        for (k, low) in low.into_iter().enumerate() {
                            u[32 * k + l] = low | (((qh[l] >> (2 * k)) & 3) << 4);
                        }
                    }
                }
                for (j, &sc) in blk.scales.iter().enumerate() {
                    dw[16 * b + j] = d * sc as f32;
                }
            }
        }
        DType::F32 | DType::F16 | DType::BF16 => {
            // Float rows get 8-bit codes here (`Scheme::for_integer_dots`).
            let mut x = vec![0f32; n_in];
            quant::dequantize_row(scheme.weight, row, &mut x);
            for (b, (x, u)) in x.chunks_exact(32).zip(u.chunks_exact_mut(32)).enumerate() {
                let lo = x.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                let hi = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let d = (hi - lo) / 255.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for (u, &v) in u.iter_mut().zip(x) {
                    *u = ((v - lo) * id).round_ties_even().clamp(0.0, 255.0) as u8;
                }
                dw[b] = d;
                // 128 * d is exact, so this is the SIMD packer's sum too.
                mw[b] = lo + 128.0 * d;
            }
        }
        other => panic!("{other:?} has no integer scheme"),
    }
}

/// Low nibbles are elements 0..16, high nibbles 16..32 (Q4_0, Q4_1).
fn unpack_nibbles(qs: &[u8; 16], u: &mut [u8]) {
    for (j, &byte) in qs.iter().enumerate() {
        u[j] = byte & 0x0f;
        u[j + 16] = byte >> 4;
    }
}

/// Q4_K / Q5_K sub-block `j`: `x = d * sc * q - dmin * m`.
fn k_scale(dw: &mut f32, mw: &mut f32, d: f16, dmin: f16, j: usize, scales: &[u8; 12]) {
    let (sc, m) = scale_min(j, scales);
    *dw = d.to_f32() * sc as f32;
    *mw = -(dmin.to_f32() * m as f32);
}

/// Packs `rows` into the interleaved layout of [`PackedQ`] for `tile_rows`.
pub fn pack_q_with(rows: &WeightRows, tile_rows: usize, packed: &mut PackedQ) {
    let scheme = packed.reset(tile_rows, rows);
    let (n_in, n_sub) = (rows.n_in, packed.n_sub());
    let mut u = vec![0u8; n_in];
    let mut dw = vec![0f32; n_sub];
    let mut mw = vec![0f32; n_sub];
    packed.qs.words_mut().fill(0);
    packed.dw.floats_mut().fill(0.0);
    packed.mw.floats_mut().fill(0.0);
    for r in 0..rows.n_rows {
        let row = &rows.data[r * rows.row_bytes..(r + 1) * rows.row_bytes];
        decode_row(&scheme, row, &mut u, &mut dw, &mut mw);
        for (i, q) in u.chunks_exact(4).enumerate() {
            packed.qs.words_mut()[i * tile_rows + r] = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
        }
        for s in 0..n_sub {
            packed.dw.floats_mut()[s * tile_rows + r] = dw[s];
            if scheme.has_min {
                packed.mw.floats_mut()[s * tile_rows + r] = mw[s];
            }
        }
    }
}

/// Integer dot products: per sub-block `i32` sums, scaled and accumulated in f32.
pub fn dot_q(packed: &PackedQ, acts: &QuantActs, out: &mut OutTile) {
    let scheme = packed.scheme();
    let (tr, n_sub, groups) = (packed.tile_rows, packed.n_sub(), scheme.groups());
    let qs = packed.qs.words();
    let (dw, mw) = (packed.dw.floats(), packed.mw.floats());
    let row = |codes: &[i8], t: usize| -> Vec<i8> {
        match codes.is_empty() {
            true => vec![0; acts.n_in],
            false => codes[t * acts.n_in..(t + 1) * acts.n_in].to_vec(),
        }
    };
    for t in 0..acts.n_tok {
        let (a, f) = (row(&acts.qs, t), row(&acts.fine, t));
        let out = out.row(t);
        for (r, y) in out.iter_mut().enumerate().take(packed.n_rows) {
            let mut acc = 0f32;
            for s in 0..n_sub {
                let (mut coarse, mut fine) = (0i32, 0i32);
                for g in 0..groups {
                    let w = qs[(s * groups + g) * tr + r].to_le_bytes();
                    let at = s * scheme.sub_len + 4 * g;
                    for k in 0..4 {
                        coarse += w[k] as i32 * a[at + k] as i32;
                        fine += w[k] as i32 * f[at + k] as i32;
                    }
                }
                let sum = acts.corr[t * n_sub + s]
                    + match acts.has_fine() {
                        true => 256 * coarse + fine,
                        false => coarse,
                    };
                acc += sum as f32 * (dw[s * tr + r] * acts.da[t * n_sub + s]);
                if scheme.has_min {
                    acc += mw[s * tr + r] * acts.sa[t * n_sub + s];
                }
            }
            *y = acc;
        }
    }
}

/// Packs `rows` as transposed f32; quantized rows go through the integer
/// packing in `scratch` so both paths share one decoder.
pub fn pack_f_with(
    rows: &WeightRows,
    tile_rows: usize,
    scratch: &mut PackedQ,
    packed: &mut PackedF,
) {
    packed.reset(tile_rows, rows);
    let n_in = rows.n_in;
    let w = packed.w.floats_mut();
    w.fill(0.0);
    if Scheme::of(rows.dtype).is_some() {
        pack_q_with(rows, tile_rows, scratch);
        let scheme = scratch.scheme();
        let (qs, dw, mw) = (scratch.qs.words(), scratch.dw.floats(), scratch.mw.floats());
        for r in 0..rows.n_rows {
            for i in 0..n_in {
                let s = i / scheme.sub_len;
                let u = qs[(i / 4) * tile_rows + r].to_le_bytes()[i % 4];
                let code = u as i32 - scheme.zero as i32;
                let m = if scheme.has_min {
                    mw[s * tile_rows + r]
                } else {
                    0.0
                };
                // Adding a zero minimum too turns -0 into +0, as the SIMD packers do.
                w[i * tile_rows + r] = dw[s * tile_rows + r] * code as f32 + m;
            }
        }
    } else {
        let mut row = vec![0f32; n_in];
        for r in 0..rows.n_rows {
            quant::dequantize_row(
                rows.dtype,
                &rows.data[r * rows.row_bytes..(r + 1) * rows.row_bytes],
                &mut row,
            );
            for (i, v) in row.iter().enumerate() {
                w[i * tile_rows + r] = *v;
            }
        }
    }
}

/// f32 dot products in input order.
pub fn dot_f(packed: &PackedF, x: &[f32], out: &mut OutTile) {
    let (tr, n_in) = (packed.tile_rows, packed.n_in);
    let w = packed.w.floats();
    for (t, x) in x.chunks_exact(n_in).enumerate() {
        let out = out.row(t);
        for (r, y) in out.iter_mut().enumerate().take(packed.n_rows) {
            let mut acc = 0f32;
            for (i, x) in x.iter().enumerate() {
                acc += w[i * tr + r] * x;
            }
            *y = acc;
        }
    }
}
