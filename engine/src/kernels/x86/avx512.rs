//! AVX-512 F/BW/VL kernels (16 rows per tile), shared with the VNNI set
//! except for the byte dot product ([`dot_q_bw`] here, `vpmaddubsw`).
//!
//! Packing loads 32 bytes of each of the tile's 16 rows and transposes them
//! in registers (Q8_0, and F32 / F16 / BF16 rows, which Fast also turns into
//! 8-bit codes here); Q4_0 / Q4_1 gather four bytes per row (one
//! `vpgatherdd` per byte-group of the tile) and k-quants go through the
//! scalar decoder (their packing cost is amortized over every token of the
//! batch).

use std::arch::x86_64::*;

use crate::kernels::{scalar, ActRowMut, OutTile, PackedF, PackedQ, QuantActs, Scheme, WeightRows};
use crate::quant::DType;

/// Tile rows: one lane of a 512-bit vector per weight row.
pub(super) const TR: usize = 16;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn gather(mask: __mmask16, idx: __m512i, p: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 4 readable bytes at `p + idx[r]` for
    // every lane `r` set in `mask`; other lanes are not accessed.
    unsafe { _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), mask, idx, p as _) }
}

/// Low halves of each 32-bit lane as f16 -> f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
fn f16_lo(v: __m512i) -> __m512 {
    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
pub(super) fn row_mask(n_rows: usize) -> __mmask16 {
    ((1u32 << n_rows) - 1) as __mmask16
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
pub unsafe fn quantize(scheme: &Scheme, x: &[f32], row: &mut ActRowMut) {
    let (ab, sl) = (scheme.act_block, scheme.sub_len);
    let zero = scheme.zero as i32;
    assert_eq!(x.len(), row.qs.len());
    assert_eq!(x.len() % ab, 0);
    let fine = !row.fine.is_empty();
    assert!(!fine || row.fine.len() == x.len());
    let mut s = 0;
    for (xb, qb) in x.chunks_exact(ab).zip(row.qs.chunks_exact_mut(ab)) {
        let xp = xb.as_ptr();
        let mut m = _mm512_setzero_ps();
        for i in (0..ab).step_by(16) {
            // SAFETY: `i + 16 <= ab == xb.len()`.
            m = _mm512_max_ps(m, _mm512_abs_ps(unsafe { _mm512_loadu_ps(xp.add(i)) }));
        }
        let d = _mm512_reduce_max_ps(m) / 127.0;
        let id = _mm512_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        for (xs, qs) in xb.chunks_exact(sl).zip(qb.chunks_exact_mut(sl)) {
            let mut sum = _mm512_setzero_si512();
            let mut sum_f = _mm512_setzero_si512();
            for i in (0..sl).step_by(16) {
                // SAFETY: `i + 16 <= sl` elements of `xs` and bytes of `qs`,
                // and of `row.fine` at the same offset when it is not empty.
                unsafe {
                    let t = _mm512_mul_ps(_mm512_loadu_ps(xs.as_ptr().add(i)), id);
                    let q = _mm512_cvtps_epi32(t);
                    sum = _mm512_add_epi32(sum, q);
                    _mm_storeu_si128(
                        qs.as_mut_ptr().add(i) as *mut __m128i,
                        _mm512_cvtepi32_epi8(q),
                    );
                    if fine {
                        // The scalar quantizer's operations, in its order.
                        let r = _mm512_sub_ps(t, _mm512_cvtepi32_ps(q));
                        let f = _mm512_cvtps_epi32(_mm512_mul_ps(r, _mm512_set1_ps(256.0)));
                        let f = _mm512_max_epi32(
                            _mm512_min_epi32(f, _mm512_set1_epi32(127)),
                            _mm512_set1_epi32(-127),
                        );
                        sum_f = _mm512_add_epi32(sum_f, f);
                        let at = s * sl + i;
                        _mm_storeu_si128(
                            row.fine.as_mut_ptr().add(at) as *mut __m128i,
                            _mm512_cvtepi32_epi8(f),
                        );
                    }
                }
            }
            let mut sum = _mm512_reduce_add_epi32(sum);
            let mut ds = d;
            if fine {
                sum = 256 * sum + _mm512_reduce_add_epi32(sum_f);
                ds /= 256.0;
            }
            row.da[s] = ds;
            row.sa[s] = ds * sum as f32;
            row.corr[s] = -zero * sum;
            s += 1;
        }
    }
}

/// 16 rows of 8 dwords, `z[i]` holding row `i` in its low 256 bits and
/// row `i + 8` in its high ones, transposed: `t[g]` holds dword `g` of
/// rows 0..16 in lanes 0..16. Three rounds of shuffles, where gathering
/// the same words costs about four times as long.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
fn transpose_16x8(z: [__m512i; 8]) -> [__m512i; 8] {
    // Per 128-bit lane: pairs of rows interleaved, dwords (0, 1) / (2, 3).
    let t = [
        _mm512_unpacklo_epi32(z[0], z[1]),
        _mm512_unpackhi_epi32(z[0], z[1]),
        _mm512_unpacklo_epi32(z[2], z[3]),
        _mm512_unpackhi_epi32(z[2], z[3]),
        _mm512_unpacklo_epi32(z[4], z[5]),
        _mm512_unpackhi_epi32(z[4], z[5]),
        _mm512_unpacklo_epi32(z[6], z[7]),
        _mm512_unpackhi_epi32(z[6], z[7]),
    ];
    // Per 128-bit lane: one dword of four rows; `u[k]` holds dword `k % 4`
    // in lanes 0 and 2 and dword `k % 4 + 4` in lanes 1 and 3, of rows
    // 0-3 / 8-11 (k < 4) or 4-7 / 12-15 (k >= 4).
    let u = [
        _mm512_unpacklo_epi64(t[0], t[2]),
        _mm512_unpackhi_epi64(t[0], t[2]),
        _mm512_unpacklo_epi64(t[1], t[3]),
        _mm512_unpackhi_epi64(t[1], t[3]),
        _mm512_unpacklo_epi64(t[4], t[6]),
        _mm512_unpackhi_epi64(t[4], t[6]),
        _mm512_unpacklo_epi64(t[5], t[7]),
        _mm512_unpackhi_epi64(t[5], t[7]),
    ];
    let first = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    let second = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    let join = |k: usize, idx: __m512i| _mm512_permutex2var_epi64(u[k], idx, u[k + 4]);
    [
        join(0, first),
        join(1, first),
        join(2, first),
        join(3, first),
        join(0, second),
        join(1, second),
        join(2, second),
        join(3, second),
    ]
}

/// The input of [`transpose_16x8`]: 32 bytes from byte `off` of each row
/// (zero for rows past `n_rows`).
///
/// # Safety
/// `off + 32 <= rows.row_bytes`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn load_16x8(rows: &WeightRows, off: usize) -> [__m512i; 8] {
    let p = rows.data.as_ptr();
    let row = |r: usize| {
        if r < rows.n_rows {
            // SAFETY: row `r` exists and holds `off + 32` bytes.
            unsafe { _mm256_loadu_si256(p.add(r * rows.row_bytes + off) as *const _) }
        } else {
            _mm256_setzero_si256()
        }
    };
    std::array::from_fn(|i| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(row(i)), row(i + 8)))
}

/// Elements `32 b .. 32 b + 32` of every row of a float tile (F32, F16 or
/// BF16), one vector per element with one lane per row.
///
/// # Safety
/// `32 (b + 1) <= rows.n_in`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn float_block(rows: &WeightRows, b: usize) -> [__m512; 32] {
    let mut v = [_mm512_setzero_ps(); 32];
    // SAFETY: the block lies inside every row (caller).
    unsafe {
        match rows.dtype {
            DType::F32 => {
                for quarter in 0..4 {
                    let t = transpose_16x8(load_16x8(rows, 128 * b + 32 * quarter));
                    for (g, t) in t.into_iter().enumerate() {
                        v[8 * quarter + g] = _mm512_castsi512_ps(t);
                    }
                }
            }
            DType::F16 | DType::BF16 => {
                let f16 = rows.dtype == DType::F16;
                let lo = |t: __m512i| {
                    if f16 {
                        f16_lo(t)
                    } else {
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(t))
                    }
                };
                for half in 0..2 {
                    // Dword `g` holds elements 2g and 2g + 1.
                    let t = transpose_16x8(load_16x8(rows, 64 * b + 32 * half));
                    for (g, t) in t.into_iter().enumerate() {
                        v[16 * half + 2 * g] = lo(t);
                        v[16 * half + 2 * g + 1] = lo(_mm512_srli_epi32::<16>(t));
                    }
                }
            }
            other => unreachable!("{other:?} is not a float type"),
        }
    }
    v
}

/// Float rows as 8-bit codes (`Scheme::for_integer_dots`), computed with
/// the scalar decoder's f32 operations so the codes agree bit for bit.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn pack_float_q(rows: &WeightRows, packed: &mut PackedQ) {
    packed.reset(TR, rows);
    let qs = packed.qs.words_mut().as_mut_ptr();
    let dw = packed.dw.floats_mut().as_mut_ptr();
    let mw = packed.mw.floats_mut().as_mut_ptr();
    for b in 0..rows.n_in / 32 {
        // SAFETY: block `b` is inside the rows; stores stay inside the
        // `n_in / 4 * TR` words and `n_in / 32 * TR` scales and minimums
        // `reset` sized.
        unsafe {
            let v = float_block(rows, b);
            let lo = v
                .iter()
                .fold(_mm512_set1_ps(f32::INFINITY), |m, &x| _mm512_min_ps(m, x));
            let hi = v.iter().fold(_mm512_set1_ps(f32::NEG_INFINITY), |m, &x| {
                _mm512_max_ps(m, x)
            });
            let d = _mm512_div_ps(_mm512_sub_ps(hi, lo), _mm512_set1_ps(255.0));
            let nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(d, _mm512_setzero_ps());
            let id = _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0), d);
            let code = |x: __m512| {
                let u = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(x, lo), id));
                _mm512_min_epi32(
                    _mm512_max_epi32(u, _mm512_setzero_si512()),
                    _mm512_set1_epi32(255),
                )
            };
            for g in 0..8 {
                let word = _mm512_or_si512(
                    _mm512_or_si512(code(v[4 * g]), _mm512_slli_epi32::<8>(code(v[4 * g + 1]))),
                    _mm512_or_si512(
                        _mm512_slli_epi32::<16>(code(v[4 * g + 2])),
                        _mm512_slli_epi32::<24>(code(v[4 * g + 3])),
                    ),
                );
                _mm512_storeu_si512(qs.add((b * 8 + g) * TR) as *mut _, word);
            }
            _mm512_storeu_ps(dw.add(b * TR), d);
            let mid = _mm512_add_ps(lo, _mm512_mul_ps(_mm512_set1_ps(128.0), d));
            _mm512_storeu_ps(mw.add(b * TR), mid);
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
pub unsafe fn pack_q(rows: &WeightRows, packed: &mut PackedQ) {
    if matches!(rows.dtype, DType::F32 | DType::F16 | DType::BF16) && rows.n_in.is_multiple_of(32) {
        // SAFETY: same preconditions.
        return unsafe { pack_float_q(rows, packed) };
    }
    if !matches!(rows.dtype, DType::Q4_0 | DType::Q4_1 | DType::Q8_0) {
        return scalar::pack_q_with(rows, TR, packed);
    }
    packed.reset(TR, rows);
    let mask = row_mask(rows.n_rows);
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(rows.row_bytes as i32),
    );
    let bb = rows.dtype.block_bytes();
    let nib = _mm512_set1_epi8(0x0f);
    let qs = packed.qs.words_mut().as_mut_ptr();
    let dw = packed.dw.floats_mut().as_mut_ptr();
    let mw = packed.mw.floats_mut().as_mut_ptr();
    // SAFETY: every gather reads 4 bytes inside block `b` of a row below
    // `n_rows` (offsets 0..4, 2..18 / 4..20 / 2..34 of 18 / 20 / 34-byte
    // blocks); stores stay inside the buffers `reset` sized for `n_in`.
    unsafe {
        let store = |i: usize, v: __m512i| _mm512_storeu_si512(qs.add(i * TR) as *mut _, v);
        for b in 0..rows.n_in / 32 {
            let p = rows.data.as_ptr().add(b * bb);
            let hdr = gather(mask, idx, p);
            _mm512_storeu_ps(dw.add(b * TR), f16_lo(hdr));
            match rows.dtype {
                DType::Q8_0 => {
                    let t = transpose_16x8(load_16x8(rows, b * bb + 2));
                    for (g, t) in t.into_iter().enumerate() {
                        store(b * 8 + g, _mm512_xor_si512(t, _mm512_set1_epi8(-128)));
                    }
                }
                _ => {
                    let q4_1 = rows.dtype == DType::Q4_1;
                    if q4_1 {
                        _mm512_storeu_ps(mw.add(b * TR), f16_lo(_mm512_srli_epi32::<16>(hdr)));
                    }
                    let off = if q4_1 { 4 } else { 2 };
                    for g in 0..4 {
                        let v = gather(mask, idx, p.add(off + 4 * g));
                        store(b * 8 + g, _mm512_and_si512(v, nib));
                        store(
                            b * 8 + g + 4,
                            _mm512_and_si512(_mm512_srli_epi32::<4>(v), nib),
                        );
                    }
                }
            }
        }
    }
}

/// The integer dot product of a packed tile with every token, written once
/// for both AVX-512 kernel sets: `$vnni` picks `vpdpbusd` (one instruction
/// per four byte products, no saturation) over `vpmaddubsw` + `vpmaddwd`
/// (which saturate, hence the sign trick for Q8_0's wide codes).
macro_rules! dot_q_kernel {
    ($name:ident, $tile:ident, $features:literal, $vnni:expr) => {
        #[target_feature(enable = $features)]
        pub unsafe fn $name(packed: &PackedQ, acts: &QuantActs, out: &mut OutTile) {
            let fine = acts.has_fine();
            by_scheme!(packed.scheme(), |G, MIN, WIDE| sweep_tokens!(
                acts.n_tok,
                8,
                |t0, NT| unsafe {
                    match fine {
                        true => $tile::<NT, G, MIN, WIDE, true>(packed, acts, t0, out),
                        false => $tile::<NT, G, MIN, WIDE, false>(packed, acts, t0, out),
                    }
                }
            ))
        }

        /// Tokens `t0..t0 + NT` against the whole tile; `FINE`: the
        /// activations carry fine codes, multiplied by the same weight
        /// registers.
        #[target_feature(enable = $features)]
        unsafe fn $tile<
            const NT: usize,
            const G: usize,
            const MIN: bool,
            const WIDE: bool,
            const FINE: bool,
        >(
            packed: &PackedQ,
            acts: &QuantActs,
            t0: usize,
            out: &mut OutTile,
        ) {
            let n_sub = acts.n_sub();
            let n_in = acts.n_in;
            let sign_trick = WIDE && !$vnni;
            let ones = _mm512_set1_epi16(1);
            let mut acc = [_mm512_setzero_ps(); NT];
            // Adds the products of four bytes of `a` (broadcast) with
            // each row's four weight bytes to `sum`.
            let dot4 = |sum: __m512i, w: __m512i, neg: __mmask64, a: *const i8| {
                // SAFETY: callers pass 4 readable bytes.
                let av = _mm512_set1_epi32(unsafe { (a as *const i32).read_unaligned() });
                if $vnni {
                    _mm512_dpbusd_epi32(sum, w, av)
                } else {
                    let av = if sign_trick {
                        _mm512_mask_sub_epi8(av, neg, _mm512_setzero_si512(), av)
                    } else {
                        av
                    };
                    let pairs = _mm512_maddubs_epi16(w, av);
                    _mm512_add_epi32(sum, _mm512_madd_epi16(pairs, ones))
                }
            };
            // SAFETY: the packed tile holds `n_sub * G` groups of TR words and
            // `n_sub * TR` scales; `acts` holds `n_in` codes (and as many
            // fine codes when FINE) and `n_sub` sums per token, and
            // `t0 + NT <= n_tok` (`sweep_tokens`).
            unsafe {
                let qs = packed.qs.words().as_ptr();
                let a0 = acts.qs.as_ptr().add(t0 * n_in);
                let f0 = if FINE {
                    acts.fine.as_ptr().add(t0 * n_in)
                } else {
                    a0
                };
                let (da, sa, corr) = (
                    acts.da.as_ptr().add(t0 * n_sub),
                    acts.sa.as_ptr().add(t0 * n_sub),
                    acts.corr.as_ptr().add(t0 * n_sub),
                );
                for s in 0..n_sub {
                    let mut w = [_mm512_setzero_si512(); G];
                    let mut neg = [0 as __mmask64; G];
                    for g in 0..G {
                        w[g] = _mm512_loadu_si512(qs.add((s * G + g) * TR) as *const _);
                        if sign_trick {
                            let signed = _mm512_xor_si512(w[g], _mm512_set1_epi8(-128));
                            neg[g] = _mm512_movepi8_mask(signed);
                            w[g] = _mm512_abs_epi8(signed);
                        }
                    }
                    let dwv = _mm512_loadu_ps(packed.dw.floats().as_ptr().add(s * TR));
                    for j in 0..NT {
                        let a = a0.add(j * n_in + s * 4 * G);
                        let f = f0.add(j * n_in + s * 4 * G);
                        // The zero-point term joins the last sum made.
                        let corr = if sign_trick {
                            _mm512_setzero_si512()
                        } else {
                            _mm512_set1_epi32(*corr.add(j * n_sub + s))
                        };
                        let (mut sum, mut fine) = match FINE {
                            true => (_mm512_setzero_si512(), corr),
                            false => (corr, corr),
                        };
                        for g in 0..G {
                            sum = dot4(sum, w[g], neg[g], a.add(4 * g));
                            if FINE {
                                fine = dot4(fine, w[g], neg[g], f.add(4 * g));
                            }
                        }
                        if FINE {
                            sum = _mm512_add_epi32(_mm512_slli_epi32::<8>(sum), fine);
                        }
                        let scale = _mm512_mul_ps(dwv, _mm512_set1_ps(*da.add(j * n_sub + s)));
                        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[j]);
                        if MIN {
                            let mwv = _mm512_loadu_ps(packed.mw.floats().as_ptr().add(s * TR));
                            acc[j] = _mm512_fmadd_ps(
                                mwv,
                                _mm512_set1_ps(*sa.add(j * n_sub + s)),
                                acc[j],
                            );
                        }
                    }
                }
                let mask = row_mask(packed.n_rows);
                for (j, acc) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(out.row(t0 + j).as_mut_ptr(), mask, *acc);
                }
            }
        }
    };
}

// The VNNI build of the same kernel is in `avx512vnni.rs`.
pub(super) use dot_q_kernel;

dot_q_kernel!(
    dot_q_bw,
    dot_q_bw_tile,
    "avx512f,avx512bw,avx512vl,fma,f16c",
    false
);

#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
pub unsafe fn pack_f(rows: &WeightRows, scratch: &mut PackedQ, packed: &mut PackedF) {
    packed.reset(TR, rows);
    let n_in = rows.n_in;
    let w = packed.w.floats_mut().as_mut_ptr();
    if let Some(scheme) = Scheme::of(rows.dtype) {
        // SAFETY: `pack_q` has the same preconditions as this function.
        unsafe { pack_q(rows, scratch) };
        let (sl, g_n) = (scheme.sub_len, scheme.groups());
        let zero = _mm512_set1_epi32(scheme.zero as i32);
        let byte = _mm512_set1_epi32(0xff);
        // SAFETY: reads stay inside the packed tile of `n_in` elements and
        // writes inside the `n_in * TR` floats `reset` sized.
        unsafe {
            let qs = scratch.qs.words().as_ptr();
            for s in 0..n_in / sl {
                let dwv = _mm512_loadu_ps(scratch.dw.floats().as_ptr().add(s * TR));
                let mwv = if scheme.has_min {
                    _mm512_loadu_ps(scratch.mw.floats().as_ptr().add(s * TR))
                } else {
                    _mm512_setzero_ps()
                };
                for g in 0..g_n {
                    let v = _mm512_loadu_si512(qs.add((s * g_n + g) * TR) as *const _);
                    let bytes = [
                        _mm512_and_si512(v, byte),
                        _mm512_and_si512(_mm512_srli_epi32::<8>(v), byte),
                        _mm512_and_si512(_mm512_srli_epi32::<16>(v), byte),
                        _mm512_srli_epi32::<24>(v),
                    ];
                    for (k, b) in bytes.into_iter().enumerate() {
                        let code = _mm512_cvtepi32_ps(_mm512_sub_epi32(b, zero));
                        // Multiply then add, like the scalar reference.
                        let x = _mm512_add_ps(_mm512_mul_ps(dwv, code), mwv);
                        _mm512_storeu_ps(w.add((s * sl + 4 * g + k) * TR), x);
                    }
                }
            }
        }
        return;
    }
    if n_in.is_multiple_of(32) {
        for b in 0..n_in / 32 {
            // SAFETY: block `b` is inside the rows; stores stay inside the
            // `n_in * TR` floats.
            unsafe {
                for (k, v) in float_block(rows, b).into_iter().enumerate() {
                    _mm512_storeu_ps(w.add((32 * b + k) * TR), v);
                }
            }
        }
        return;
    }
    if n_in < 2 {
        return scalar::pack_f_with(rows, TR, scratch, packed);
    }
    let mask = row_mask(rows.n_rows);
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(rows.row_bytes as i32),
    );
    let p = rows.data.as_ptr();
    // SAFETY: gathers read 4 bytes at byte offsets below `row_bytes` of rows
    // below `n_rows` (the odd f16 / bf16 tail re-reads the previous pair);
    // stores stay inside the `n_in * TR` floats.
    unsafe {
        match rows.dtype {
            DType::F32 => {
                for i in 0..n_in {
                    let v = gather(mask, idx, p.add(4 * i));
                    _mm512_storeu_ps(w.add(i * TR), _mm512_castsi512_ps(v));
                }
            }
            DType::F16 | DType::BF16 => {
                let f16 = rows.dtype == DType::F16;
                let lo = |v: __m512i| {
                    if f16 {
                        f16_lo(v)
                    } else {
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v))
                    }
                };
                let hi = |v: __m512i| lo(_mm512_srli_epi32::<16>(v));
                for i in (0..n_in - 1).step_by(2) {
                    let v = gather(mask, idx, p.add(2 * i));
                    _mm512_storeu_ps(w.add(i * TR), lo(v));
                    _mm512_storeu_ps(w.add((i + 1) * TR), hi(v));
                }
                if n_in % 2 == 1 {
                    let v = gather(mask, idx, p.add(2 * (n_in - 2)));
                    _mm512_storeu_ps(w.add((n_in - 1) * TR), hi(v));
                }
            }
            other => unreachable!("{other:?} has an integer scheme"),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
pub unsafe fn dot_f(packed: &PackedF, x: &[f32], out: &mut OutTile) {
    let n_tok = out.stripe.n_rows();
    sweep_tokens!(n_tok, 8, |t0, NT| unsafe {
        dot_f_tile::<NT>(packed, x, t0, out)
    })
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn dot_f_tile<const NT: usize>(packed: &PackedF, x: &[f32], t0: usize, out: &mut OutTile) {
    let n_in = packed.n_in;
    let mut acc = [_mm512_setzero_ps(); NT];
    // SAFETY: the tile holds `n_in * TR` floats and `x` holds `n_in` per
    // token with `t0 + NT <= n_tok`.
    unsafe {
        let w = packed.w.floats().as_ptr();
        let x = x.as_ptr().add(t0 * n_in);
        for i in 0..n_in {
            let wv = _mm512_loadu_ps(w.add(i * TR));
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(wv, _mm512_set1_ps(*x.add(j * n_in + i)), *acc);
            }
        }
        let mask = row_mask(packed.n_rows);
        for (j, acc) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(out.row(t0 + j).as_mut_ptr(), mask, *acc);
        }
    }
}
