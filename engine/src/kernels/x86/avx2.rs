//! AVX2 + FMA + F16C kernels, 8 rows per tile (one lane of a 256-bit
//! vector per weight row).

use std::arch::x86_64::*;

use crate::kernels::{scalar, ActRowMut, OutTile, PackedF, PackedQ, QuantActs, Scheme, WeightRows};
use crate::quant::DType;

/// Tile rows: one lane of a 256-bit vector per weight row.
pub(super) const TR: usize = 8;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn lane_mask(n_rows: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n_rows as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gather(mask: __m256i, idx: __m256i, p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes at `p + idx[r]` for
    // every lane `r` set in `mask`; other lanes are not accessed.
    unsafe { _mm256_mask_i32gather_epi32::<1>(_mm256_setzero_si256(), p as _, idx, mask) }
}

/// Low halves of each 32-bit lane as f16 -> f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_lo(v: __m256i) -> __m256 {
    let low = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
    // Lanes are below 2^16, so the unsigned saturation never bites.
    let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(low, low));
    _mm256_cvtph_ps(_mm256_castsi256_si128(packed))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax_ps(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// [`scalar::quantize_row`] eight lanes at a time, with and without fine
/// codes: the same f32 operations in the same order (`cvtps` rounds ties to
/// even as `round_ties_even` does), so every code, scale and sum is the
/// scalar one.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize(scheme: &Scheme, x: &[f32], row: &mut ActRowMut) {
    let (ab, sl) = (scheme.act_block, scheme.sub_len);
    let zero = scheme.zero as i32;
    let fine = !row.fine.is_empty();
    assert_eq!(x.len(), row.qs.len());
    assert_eq!(x.len() % ab, 0);
    assert!(!fine || row.fine.len() == x.len());
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let (k256, lo, hi) = (
        _mm256_set1_ps(256.0),
        _mm256_set1_epi32(-127),
        _mm256_set1_epi32(127),
    );
    // 32 i32 lanes to 32 bytes in element order: packs interleaves 128-bit
    // lanes, the permute restores the order.
    let narrow = |v: [__m256i; 4]| {
        let w = _mm256_packs_epi16(
            _mm256_packs_epi32(v[0], v[1]),
            _mm256_packs_epi32(v[2], v[3]),
        );
        _mm256_permutevar8x32_epi32(w, order)
    };
    let mut s = 0;
    for (b, (xb, qb)) in x
        .chunks_exact(ab)
        .zip(row.qs.chunks_exact_mut(ab))
        .enumerate()
    {
        let xp = xb.as_ptr();
        let mut m = _mm256_setzero_ps();
        for i in (0..ab).step_by(8) {
            // SAFETY: `i + 8 <= ab == xb.len()`.
            m = _mm256_max_ps(
                m,
                _mm256_and_ps(abs_mask, unsafe { _mm256_loadu_ps(xp.add(i)) }),
            );
        }
        let d = hmax_ps(m) / 127.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let ds = if fine { d / 256.0 } else { d };
        for (c, (xs, qs)) in xb.chunks_exact(32).zip(qb.chunks_exact_mut(32)).enumerate() {
            // SAFETY: 32 elements of `xs`.
            let t: [__m256; 4] = std::array::from_fn(|k| unsafe {
                _mm256_mul_ps(_mm256_loadu_ps(xs.as_ptr().add(8 * k)), id)
            });
            let q = t.map(|t| _mm256_cvtps_epi32(t));
            // SAFETY: 32 bytes of `qs`.
            unsafe { _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, narrow(q)) };
            // Per half of 16 elements (a Q6_K sub-block).
            let mut sums = [
                hsum_epi32(_mm256_add_epi32(q[0], q[1])),
                hsum_epi32(_mm256_add_epi32(q[2], q[3])),
            ];
            if fine {
                // `round(256 * (t - q))` clamped to ±127, as the scalar
                // quantizer computes it (`q` as f32 is exact).
                let f: [__m256i; 4] = std::array::from_fn(|k| {
                    let r = _mm256_sub_ps(t[k], _mm256_cvtepi32_ps(q[k]));
                    let f = _mm256_cvtps_epi32(_mm256_mul_ps(r, k256));
                    _mm256_max_epi32(_mm256_min_epi32(f, hi), lo)
                });
                let at = b * ab + 32 * c;
                // SAFETY: `at + 32 <= x.len() == row.fine.len()` (asserted).
                unsafe {
                    _mm256_storeu_si256(row.fine.as_mut_ptr().add(at) as *mut __m256i, narrow(f))
                };
                sums[0] = 256 * sums[0] + hsum_epi32(_mm256_add_epi32(f[0], f[1]));
                sums[1] = 256 * sums[1] + hsum_epi32(_mm256_add_epi32(f[2], f[3]));
            }
            let sub_sums: &[i32] = if sl == 16 {
                &sums
            } else {
                &[sums[0] + sums[1]]
            };
            for &sum in sub_sums {
                row.da[s] = ds;
                row.sa[s] = ds * sum as f32;
                row.corr[s] = -zero * sum;
                s += 1;
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pack_q(rows: &WeightRows, packed: &mut PackedQ) {
    if !matches!(rows.dtype, DType::Q4_0 | DType::Q4_1 | DType::Q8_0) {
        return scalar::pack_q_with(rows, TR, packed);
    }
    packed.reset(TR, rows);
    let mask = lane_mask(rows.n_rows);
    let idx = _mm256_mullo_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_set1_epi32(rows.row_bytes as i32),
    );
    let bb = rows.dtype.block_bytes();
    let nib = _mm256_set1_epi8(0x0f);
    let qs = packed.qs.words_mut().as_mut_ptr();
    let dw = packed.dw.floats_mut().as_mut_ptr();
    let mw = packed.mw.floats_mut().as_mut_ptr();
    // SAFETY: as in the AVX-512 `pack_q`: gathers read inside blocks of
    // valid rows, stores inside the buffers sized by `reset`.
    unsafe {
        let store = |i: usize, v: __m256i| _mm256_storeu_si256(qs.add(i * TR) as *mut _, v);
        for b in 0..rows.n_in / 32 {
            let p = rows.data.as_ptr().add(b * bb);
            let hdr = gather(mask, idx, p);
            _mm256_storeu_ps(dw.add(b * TR), f16_lo(hdr));
            match rows.dtype {
                DType::Q8_0 => {
                    for g in 0..8 {
                        let v = gather(mask, idx, p.add(2 + 4 * g));
                        store(b * 8 + g, _mm256_xor_si256(v, _mm256_set1_epi8(-128)));
                    }
                }
                _ => {
                    let q4_1 = rows.dtype == DType::Q4_1;
                    if q4_1 {
                        _mm256_storeu_ps(mw.add(b * TR), f16_lo(_mm256_srli_epi32::<16>(hdr)));
                    }
                    let off = if q4_1 { 4 } else { 2 };
                    for g in 0..4 {
                        let v = gather(mask, idx, p.add(off + 4 * g));
                        store(b * 8 + g, _mm256_and_si256(v, nib));
                        store(
                            b * 8 + g + 4,
                            _mm256_and_si256(_mm256_srli_epi32::<4>(v), nib),
                        );
                    }
                }
            }
        }
    }
}

/// The integer dot product of a packed tile with every token, written once
/// for both AVX2 kernel sets: `$vnni` picks AVX-VNNI's `vpdpbusd` (VEX, one
/// instruction per four byte products, no saturation) over `vpmaddubsw` +
/// `vpmaddwd` (which saturate, hence the sign trick for wide codes). Both
/// compute the same integers, so both give the same bits.
///
/// Without VNNI the pair sums of `vpmaddubsw` are added in 16 bits over
/// [`Scheme::i16_groups`] byte-groups (a whole 32-element sub-block for
/// 4-bit weights, where the bound allows) before one `vpmaddwd` widens them:
/// the one integer-multiply pipe of older cores then does one multiply per
/// four byte products, not two. The sums are exact, so the bits are those of
/// `vpdpbusd` and of the scalar kernel's integers.
macro_rules! dot_q_kernel {
    ($name:ident, $tile:ident, $features:literal, $vnni:expr) => {
        #[target_feature(enable = $features)]
        pub unsafe fn $name(packed: &PackedQ, acts: &QuantActs, out: &mut OutTile) {
            let fine = acts.has_fine();
            // `vpdpbusd` widens as it multiplies: nothing to group.
            let k16 = if $vnni {
                1
            } else {
                packed.scheme().i16_groups()
            };
            by_scheme!(packed.scheme(), |G, MIN, WIDE| sweep_tokens!(
                acts.n_tok,
                4,
                |t0, NT| unsafe {
                    match fine {
                        true => $tile::<NT, G, MIN, WIDE, true>(packed, acts, k16, t0, out),
                        false => $tile::<NT, G, MIN, WIDE, false>(packed, acts, k16, t0, out),
                    }
                }
            ))
        }

        /// `k16`: byte-groups summed in 16 bits before widening (a power of
        /// two dividing `G`; see [`Scheme::i16_groups`]).
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
            k16: usize,
            t0: usize,
            out: &mut OutTile,
        ) {
            let (n_sub, n_in) = (acts.n_sub(), acts.n_in);
            debug_assert!(k16.is_power_of_two() && G % k16 == 0);
            // `vpdpbusd` takes the offset bytes of wide codes as they are
            // (the zero-point term corrects them); `vpmaddubsw` could
            // saturate on them, so without VNNI wide codes take the sign trick.
            let sign_trick = WIDE && !$vnni;
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_ps(); NT];
            let bytes4 = |signs: __m256i, a: *const i8| {
                // SAFETY: callers pass 4 readable bytes.
                let av = _mm256_set1_epi32(unsafe { (a as *const i32).read_unaligned() });
                if sign_trick {
                    _mm256_sign_epi8(av, signs)
                } else {
                    av
                }
            };
            // SAFETY: as in the AVX-512 tile kernel.
            unsafe {
                let qs = packed.qs.words().as_ptr();
                let a0 = acts.qs.as_ptr().add(t0 * n_in);
                let f0 = if FINE {
                    acts.fine.as_ptr().add(t0 * n_in)
                } else {
                    a0
                };
                for s in 0..n_sub {
                    let mut w = [_mm256_setzero_si256(); G];
                    let mut signs = [_mm256_setzero_si256(); G];
                    for g in 0..G {
                        w[g] = _mm256_loadu_si256(qs.add((s * G + g) * TR) as *const _);
                        if sign_trick {
                            signs[g] = _mm256_xor_si256(w[g], _mm256_set1_epi8(-128));
                            w[g] = _mm256_abs_epi8(signs[g]);
                        }
                    }
                    let dwv = _mm256_loadu_ps(packed.dw.floats().as_ptr().add(s * TR));
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let t = t0 + j;
                        let a = a0.add(j * n_in + s * 4 * G);
                        let f = f0.add(j * n_in + s * 4 * G);
                        let corr = if sign_trick {
                            _mm256_setzero_si256()
                        } else {
                            _mm256_set1_epi32(acts.corr[t * n_sub + s])
                        };
                        let (mut sum, mut fine) = match FINE {
                            true => (_mm256_setzero_si256(), corr),
                            false => (corr, corr),
                        };
                        if $vnni {
                            for g in 0..G {
                                let av = bytes4(signs[g], a.add(4 * g));
                                sum = _mm256_dpbusd_avx_epi32(sum, w[g], av);
                                if FINE {
                                    let fv = bytes4(signs[g], f.add(4 * g));
                                    fine = _mm256_dpbusd_avx_epi32(fine, w[g], fv);
                                }
                            }
                        } else {
                            // 16-bit pair sums of the current run of `k16` groups.
                            let (mut p, mut pf) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                            for g in 0..G {
                                let av = bytes4(signs[g], a.add(4 * g));
                                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w[g], av));
                                if FINE {
                                    let fv = bytes4(signs[g], f.add(4 * g));
                                    pf = _mm256_add_epi16(pf, _mm256_maddubs_epi16(w[g], fv));
                                }
                                // `k16` is a power of two: no division.
                                if (g + 1) & (k16 - 1) == 0 {
                                    sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, ones));
                                    p = _mm256_setzero_si256();
                                    if FINE {
                                        fine = _mm256_add_epi32(fine, _mm256_madd_epi16(pf, ones));
                                        pf = _mm256_setzero_si256();
                                    }
                                }
                            }
                        }
                        if FINE {
                            sum = _mm256_add_epi32(_mm256_slli_epi32::<8>(sum), fine);
                        }
                        let scale = _mm256_mul_ps(dwv, _mm256_set1_ps(acts.da[t * n_sub + s]));
                        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, *acc);
                        if MIN {
                            let mwv = _mm256_loadu_ps(packed.mw.floats().as_ptr().add(s * TR));
                            *acc =
                                _mm256_fmadd_ps(mwv, _mm256_set1_ps(acts.sa[t * n_sub + s]), *acc);
                        }
                    }
                }
                let mask = lane_mask(packed.n_rows);
                for (j, acc) in acc.iter().enumerate() {
                    _mm256_maskstore_ps(out.row(t0 + j).as_mut_ptr(), mask, *acc);
                }
            }
        }
    };
}

// The AVX-VNNI build of the same kernel is in `avxvnni.rs`.
pub(super) use dot_q_kernel;

dot_q_kernel!(dot_q, dot_q_tile, "avx2,fma,f16c", false);

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pack_f(rows: &WeightRows, scratch: &mut PackedQ, packed: &mut PackedF) {
    if Scheme::of(rows.dtype).is_none() && rows.dtype != DType::F16 {
        return scalar::pack_f_with(rows, TR, scratch, packed);
    }
    packed.reset(TR, rows);
    let n_in = rows.n_in;
    let w = packed.w.floats_mut().as_mut_ptr();
    if let Some(scheme) = Scheme::of(rows.dtype) {
        // SAFETY: `pack_q` has the same preconditions as this function.
        unsafe { pack_q(rows, scratch) };
        let (sl, g_n) = (scheme.sub_len, scheme.groups());
        let zero = _mm256_set1_epi32(scheme.zero as i32);
        let byte = _mm256_set1_epi32(0xff);
        // SAFETY: reads inside the packed tile, writes inside `n_in * TR` floats.
        unsafe {
            let qs = scratch.qs.words().as_ptr();
            for s in 0..n_in / sl {
                let dwv = _mm256_loadu_ps(scratch.dw.floats().as_ptr().add(s * TR));
                let mwv = if scheme.has_min {
                    _mm256_loadu_ps(scratch.mw.floats().as_ptr().add(s * TR))
                } else {
                    _mm256_setzero_ps()
                };
                for g in 0..g_n {
                    let v = _mm256_loadu_si256(qs.add((s * g_n + g) * TR) as *const _);
                    let bytes = [
                        _mm256_and_si256(v, byte),
                        _mm256_and_si256(_mm256_srli_epi32::<8>(v), byte),
                        _mm256_and_si256(_mm256_srli_epi32::<16>(v), byte),
                        _mm256_srli_epi32::<24>(v),
                    ];
                    for (k, b) in bytes.into_iter().enumerate() {
                        let code = _mm256_cvtepi32_ps(_mm256_sub_epi32(b, zero));
                        let x = _mm256_add_ps(_mm256_mul_ps(dwv, code), mwv);
                        _mm256_storeu_ps(w.add((s * sl + 4 * g + k) * TR), x);
                    }
                }
            }
        }
        return;
    }
    if n_in < 2 {
        return scalar::pack_f_with(rows, TR, scratch, packed);
    }
    let mask = lane_mask(rows.n_rows);
    let idx = _mm256_mullo_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_set1_epi32(rows.row_bytes as i32),
    );
    let p = rows.data.as_ptr();
    // SAFETY: as in the AVX-512 `pack_f` for f16.
    unsafe {
        for i in (0..n_in - 1).step_by(2) {
            let v = gather(mask, idx, p.add(2 * i));
            _mm256_storeu_ps(w.add(i * TR), f16_lo(v));
            _mm256_storeu_ps(w.add((i + 1) * TR), f16_lo(_mm256_srli_epi32::<16>(v)));
        }
        if n_in % 2 == 1 {
            let v = gather(mask, idx, p.add(2 * (n_in - 2)));
            _mm256_storeu_ps(w.add((n_in - 1) * TR), f16_lo(_mm256_srli_epi32::<16>(v)));
        }
    }
}

/// Tokens per f32 register tile: 12 accumulators (8 rows x 12 tokens) of
/// the 16 ymm registers, one for the weight vector and one for the
/// broadcast token value. FMA has a latency of 4-5 cycles on two pipes, so
/// 8 to 10 independent chains keep both busy; 12 leave slack for the 13
/// loads per step (one weight vector, 12 broadcasts) to issue around them.
const F_TOKENS: usize = 12;

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f(packed: &PackedF, x: &[f32], out: &mut OutTile) {
    let n_tok = out.stripe.n_rows();
    let mut t0 = 0;
    while t0 + F_TOKENS <= n_tok {
        // SAFETY: `t0 + F_TOKENS <= n_tok`.
        unsafe { dot_f_tile::<F_TOKENS>(packed, x, t0, out) };
        t0 += F_TOKENS;
    }
    // The remainder (0..F_TOKENS tokens): 8 at most in one tile, then the rest.
    let base = t0;
    sweep_tokens!(n_tok - base, 8, |t0, NT| unsafe {
        dot_f_tile::<NT>(packed, x, base + t0, out)
    })
}

/// Rows `0..8` of the packed tile times tokens `t0..t0 + NT`. Each token's
/// row of `x` gets its own pointer, computed once, so the inner loop
/// addresses every broadcast as `row + i` (one index register for all)
/// instead of recomputing `(t0 + j) * n_in + i`. The sum over `i` runs in
/// input order with one rounding per step, as the scalar reference does
/// (without its separate multiply rounding).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f_tile<const NT: usize>(packed: &PackedF, x: &[f32], t0: usize, out: &mut OutTile) {
    let n_in = packed.n_in;
    let mut acc = [_mm256_setzero_ps(); NT];
    // SAFETY: the tile holds `n_in * TR` floats and `x` holds `n_in` per
    // token with `t0 + NT <= n_tok` (callers), so every row pointer and
    // `row + i` for `i < n_in` lies inside `x`.
    unsafe {
        let w = packed.w.floats().as_ptr();
        let base = x.as_ptr().add(t0 * n_in);
        let rows: [*const f32; NT] = std::array::from_fn(|j| base.add(j * n_in));
        for i in 0..n_in {
            let wv = _mm256_loadu_ps(w.add(i * TR));
            for (acc, row) in acc.iter_mut().zip(&rows) {
                *acc = _mm256_fmadd_ps(wv, _mm256_broadcast_ss(&*row.add(i)), *acc);
            }
        }
        let mask = lane_mask(packed.n_rows);
        for (j, acc) in acc.iter().enumerate() {
            _mm256_maskstore_ps(out.row(t0 + j).as_mut_ptr(), mask, *acc);
        }
    }
}
