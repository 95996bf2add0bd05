//! Every kernel set on this CPU against the scalar reference, and the scalar
//! reference against `quant`'s ggml oracle, on random data of awkward sizes.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::quant::{self, activation_type};

const QUANT_TYPES: [DType; 6] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];
const FLOAT_TYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
const N_TOKS: [usize; 4] = [1, 3, 17, 64];

fn random_f32(rng: &mut StdRng, n: usize) -> Vec<f32> {
    // Mostly small values with a few outliers, like real activations.
    (0..n)
        .map(|_| {
            let v: f32 = rng.random_range(-1.0..1.0);
            if rng.random_range(0..50) == 0 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

/// `n_rows` random rows of `n_in` elements stored as `dtype`.
fn random_rows(rng: &mut StdRng, dtype: DType, n_rows: usize, n_in: usize) -> Vec<u8> {
    let rb = dtype.row_bytes(n_in).unwrap();
    let mut out = vec![0u8; n_rows * rb];
    for row in out.chunks_exact_mut(rb) {
        quant::quantize_row(dtype, &random_f32(rng, n_in), row).unwrap();
    }
    out
}

/// Input widths for a type: one block and several.
fn widths(dtype: DType) -> Vec<usize> {
    match dtype.block_len() {
        1 => vec![1, 7, 32, 97],
        32 => vec![32, 96],
        _ => vec![256, 512],
    }
}

/// Types and widths integer packing takes: every quantized type, and float
/// types (coded as they are packed) in whole blocks of 32.
fn integer_cases() -> Vec<(DType, usize)> {
    let quant = QUANT_TYPES
        .into_iter()
        .flat_map(|t| widths(t).into_iter().map(move |n| (t, n)));
    let float = FLOAT_TYPES
        .into_iter()
        .flat_map(|t| [32, 96, 160].map(move |n| (t, n)));
    quant.chain(float).collect()
}

fn rows<'a>(dtype: DType, n_in: usize, n_rows: usize, data: &'a [u8]) -> WeightRows<'a> {
    WeightRows {
        dtype,
        n_in,
        n_rows,
        row_bytes: dtype.row_bytes(n_in).unwrap(),
        data,
    }
}

/// Runs `f` on a fresh `[n_tok, width]` output through one stripe.
fn with_out(n_tok: usize, width: usize, f: impl FnOnce(&mut OutTile)) -> Vec<f32> {
    let mut y = vec![f32::NAN; n_tok * width];
    let stripes = ColumnStripes::new(&mut y, n_tok, width, width);
    let mut stripe = stripes.claim(0);
    f(&mut OutTile {
        stripe: &mut stripe,
        col: 0,
    });
    y
}

fn assert_close(got: &[f32], want: &[f32], tol: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, ((g, w), t)) in got.iter().zip(want).zip(tol).enumerate() {
        assert!(
            (g - w).abs() <= *t,
            "{what}: element {i}: got {g}, want {w} (tolerance {t})"
        );
    }
}

/// Σ|w_i x_i| per (token, row): the scale of f32 rounding in a dot product.
fn magnitudes(dtype: DType, data: &[u8], n_rows: usize, n_in: usize, x: &[f32]) -> Vec<f32> {
    let rb = dtype.row_bytes(n_in).unwrap();
    let mut w = vec![0f32; n_in];
    let mut mags = vec![0f32; x.len() / n_in * n_rows];
    for r in 0..n_rows {
        quant::dequantize_row(dtype, &data[r * rb..(r + 1) * rb], &mut w);
        for (t, x) in x.chunks_exact(n_in).enumerate() {
            mags[t * n_rows + r] = w.iter().zip(x).map(|(w, x)| (w * x).abs()).sum();
        }
    }
    mags
}

#[test]
fn scalar_quantizer_matches_ggml_within_one_step() {
    let mut rng = StdRng::seed_from_u64(1);
    for dtype in QUANT_TYPES {
        let scheme = Scheme::of(dtype).unwrap();
        let act = activation_type(dtype);
        let n_in = 512;
        let x = random_f32(&mut rng, n_in);
        let mine = scalar::kernels().quantize_acts(scheme, &x, 1, false);
        let mut ggml = vec![0u8; act.row_bytes(n_in).unwrap()];
        quant::quantize_row(act, &x, &mut ggml).unwrap();
        let mut ggml_x = vec![0f32; n_in];
        quant::dequantize_row(act, &ggml, &mut ggml_x);
        for i in 0..n_in {
            let d = mine.da[i / scheme.sub_len];
            let v = d * mine.qs[i] as f32;
            // ggml rounds its scale to f16 (Q8_0 / Q8_1): allow that on top of a step.
            assert!(
                (v - ggml_x[i]).abs() <= d * 1.01 + 2e-3 * x[i].abs(),
                "{dtype:?} element {i}: {v} vs ggml {}",
                ggml_x[i]
            );
        }
    }
}

#[test]
fn scalar_dot_matches_ggml_vec_dot() {
    let mut rng = StdRng::seed_from_u64(2);
    for dtype in QUANT_TYPES {
        let scheme = Scheme::of(dtype).unwrap();
        let act = activation_type(dtype);
        for n_in in widths(dtype) {
            let (n_rows, n_tok) = (5, 3);
            let data = random_rows(&mut rng, dtype, n_rows, n_in);
            let x = random_f32(&mut rng, n_tok * n_in);
            let ggml_acts: Vec<Vec<u8>> = x
                .chunks_exact(n_in)
                .map(|x| {
                    let mut a = vec![0u8; act.row_bytes(n_in).unwrap()];
                    quant::quantize_row(act, x, &mut a).unwrap();
                    a
                })
                .collect();
            let refs: Vec<&[u8]> = ggml_acts.iter().map(|a| a.as_slice()).collect();
            let acts = QuantActs::from_ggml(scheme, &refs, n_in);
            let mut packed = PackedQ::default();
            scalar::pack_q_with(&rows(dtype, n_in, n_rows, &data), n_rows, &mut packed);
            let got = with_out(n_tok, n_rows, |out| scalar::dot_q(&packed, &acts, out));
            let rb = dtype.row_bytes(n_in).unwrap();
            let mut want = vec![0f32; n_tok * n_rows];
            let mut tol = vec![0f32; n_tok * n_rows];
            let mags = magnitudes(dtype, &data, n_rows, n_in, &x);
            for t in 0..n_tok {
                for r in 0..n_rows {
                    let w = &data[r * rb..(r + 1) * rb];
                    want[t * n_rows + r] = quant::vec_dot_scalar(dtype, w, &ggml_acts[t], n_in);
                    tol[t * n_rows + r] = 1e-5 * mags[t * n_rows + r] + 1e-5;
                }
            }
            assert_close(&got, &want, &tol, &format!("scalar {dtype:?} n_in {n_in}"));
        }
    }
}

/// Fine codes carry the rounding error of the codes: `d * (q + f / 256)` is
/// within one fine step (`d / 256`: half a step from rounding, up to a whole
/// one where the clamp to ±127 bites) of `x`, and a pure 8-bit code is not.
#[test]
fn fine_codes_reconstruct_activations_to_a_256th_of_a_step() {
    let mut rng = StdRng::seed_from_u64(2);
    for dtype in QUANT_TYPES {
        let scheme = Scheme::of(dtype).unwrap();
        let n_in = 512;
        let x = random_f32(&mut rng, n_in);
        let acts = scalar::kernels().quantize_acts(scheme, &x, 1, true);
        let (mut worst, mut worst_coarse) = (0f32, 0f32);
        for (i, &x) in x.iter().enumerate() {
            // `da` is the scale of one fine step, d / 256.
            let step = acts.da[i / scheme.sub_len];
            let d = 256.0 * step;
            let coarse = d * acts.qs[i] as f32;
            let v = coarse + step * acts.fine[i] as f32;
            worst = worst.max((v - x).abs() / d);
            worst_coarse = worst_coarse.max((coarse - x).abs() / d);
        }
        assert!(worst <= 1.0 / 256.0 + 1e-5, "{dtype:?}: {worst} of a step");
        assert!(
            worst_coarse > 0.1,
            "{dtype:?}: the test data needs rounding"
        );
    }
}

#[test]
fn quantizers_match_scalar_exactly() {
    let mut rng = StdRng::seed_from_u64(3);
    for k in available() {
        for dtype in QUANT_TYPES {
            let scheme = Scheme::of(dtype).unwrap();
            for n_in in widths(dtype) {
                let mut x = random_f32(&mut rng, 3 * n_in);
                // An all-zero block must give zero codes and scale.
                x[..scheme.act_block].fill(0.0);
                for fine in [false, true] {
                    let got = k.quantize_acts(scheme, &x, 3, fine);
                    let want = scalar::kernels().quantize_acts(scheme, &x, 3, fine);
                    let what = format!("{:?} {dtype:?} n_in {n_in} fine {fine}", k.isa);
                    assert_eq!(got.qs, want.qs, "{what}: codes");
                    assert_eq!(got.fine, want.fine, "{what}: fine codes");
                    assert_eq!(got.da, want.da, "{what}: scales");
                    assert_eq!(got.sa, want.sa, "{what}: scaled sums");
                    assert_eq!(got.corr, want.corr, "{what}: zero-point terms");
                }
            }
        }
    }
}

/// Block `b` of `ab` activations of an adversarial kind (`b` picks it):
/// codes and fine codes exactly halfway (ties go to even), remainders of
/// exactly half a step (the fine code clamps to ±127), zeros and negative
/// zeros, all-equal blocks, one lone value, and the largest and very small
/// magnitudes. Halfway values use scales `2^e` with a largest element
/// `127 * 2^e`, so `d = 2^e` and `x / d` is exact.
fn adversarial_block(rng: &mut StdRng, b: usize, ab: usize) -> Vec<f32> {
    let pow2 = |e: i32| 2f32.powi(e);
    let e = [0, -3, 5][b % 3];
    let mut v: Vec<f32> = match b % 10 {
        // Codes halfway: k + 0.5.
        0 => (0..ab)
            .map(|i| (i as f32 - 127.0).clamp(-127.0, 126.0) + 0.5)
            .collect(),
        // Fine codes halfway: k + (2m + 1) / 512, so 256 (t - q) = m + 0.5.
        1 => (0..ab)
            .map(|i| (i % 200) as f32 - 100.0 + (2 * (i % 128) + 1) as f32 / 512.0)
            .collect(),
        // Remainders of exactly ±1/2: the fine code would be ±128.
        2 => (0..ab)
            .map(|i| (i % 100) as f32 - 50.0 + if i % 2 == 0 { 0.5 } else { -0.5 })
            .collect(),
        3 => vec![0.0; ab],
        4 => (0..ab)
            .map(|i| if i % 2 == 0 { -0.0 } else { 0.0 })
            .collect(),
        5 => vec![if b % 4 == 1 { -0.3 } else { 1.7 }; ab],
        // One lone value among zeros.
        6 => (0..ab)
            .map(|i| if i == b % ab { -3.25 } else { 0.0 })
            .collect(),
        // Huge: up to the largest finite f32.
        7 => (0..ab)
            .map(|i| match i {
                0 => f32::MAX,
                1 => -f32::MAX,
                _ => rng.random_range(-1.0..1.0) * 3e38,
            })
            .collect(),
        // Tiny, while the scale `amax / 127` stays a normal f32 (below
        // that the codes are not defined alike: see `quantizers_match_scalar_on_adversarial_values`).
        8 => (0..ab)
            .map(|_| rng.random_range(-1.0..1.0) * 1e-33)
            .collect(),
        _ => (0..ab).map(|_| rng.random_range(-1.0..1.0)).collect(),
    };
    if b % 10 < 3 {
        // The largest element sets `d = 2^e` exactly.
        v[ab - 1] = 127.0;
        for v in &mut v {
            *v *= pow2(e);
        }
    }
    v
}

/// Every quantizer against the scalar one on [`adversarial_block`]s, at
/// widths that are not a multiple of any unrolling (1, 3, 5 and 11 blocks),
/// with and without fine codes: the same bits. Finite activations whose
/// block scale `amax / 127` is zero or a normal f32 only: NaN, infinities and
/// blocks below about 1.5e-36 (a subnormal scale, whose inverse loses its
/// precision or overflows) are not given the same codes by every ISA.
#[test]
fn quantizers_match_scalar_on_adversarial_values() {
    let mut rng = StdRng::seed_from_u64(4);
    for dtype in QUANT_TYPES {
        let scheme = Scheme::of(dtype).unwrap();
        let ab = scheme.act_block;
        for n_blocks in [1, 3, 5, 11] {
            let n_in = n_blocks * ab;
            let n_tok = 3;
            let x: Vec<f32> = (0..n_tok * n_blocks)
                .flat_map(|b| adversarial_block(&mut rng, b, ab))
                .collect();
            for fine in [false, true] {
                let want = scalar::kernels().quantize_acts(scheme, &x, n_tok, fine);
                for k in available() {
                    let got = k.quantize_acts(scheme, &x, n_tok, fine);
                    let what = format!("{:?} {dtype:?} n_in {n_in} fine {fine}", k.isa);
                    assert_eq!(got.qs, want.qs, "{what}: codes");
                    assert_eq!(got.fine, want.fine, "{what}: fine codes");
                    assert_eq!(got.da, want.da, "{what}: scales");
                    assert_eq!(got.sa, want.sa, "{what}: scaled sums");
                    assert_eq!(got.corr, want.corr, "{what}: zero-point terms");
                }
            }
            // The halfway cases are really there: ties went to even.
            let acts = scalar::kernels().quantize_acts(scheme, &x, n_tok, true);
            assert_eq!(acts.qs[0], -126, "{dtype:?}: -126.5 rounds to -126");
            assert_eq!(acts.qs[1], -126, "{dtype:?}: -125.5 rounds to -126");
            if n_blocks > 1 {
                // Block 1: t = -100 + 1/512, a 256th-step remainder of 1/2 -> 0.
                assert_eq!(
                    (acts.qs[ab], acts.fine[ab]),
                    (-100, 0),
                    "{dtype:?}: fine tie"
                );
                // Block 2: t = -50 + 1/2 -> code -50 (even), fine 128 clamped.
                assert_eq!(
                    (acts.qs[2 * ab], acts.fine[2 * ab]),
                    (-50, 127),
                    "{dtype:?}: half-step remainder"
                );
            }
        }
    }
}

/// Tile outputs (`tr` lanes per token) with the padding lanes past `n_rows` zeroed.
fn rows_only(v: &[f32], tr: usize, n_rows: usize) -> Vec<f32> {
    v.iter()
        .enumerate()
        .map(|(i, v)| if i % tr < n_rows { *v } else { 0.0 })
        .collect()
}

/// Row counts of a tile: one, a ragged one and a full one.
fn tile_heights(tr: usize) -> [usize; 3] {
    [1, tr - 3, tr]
}

#[test]
fn pack_q_matches_scalar_exactly() {
    let mut rng = StdRng::seed_from_u64(4);
    for k in available() {
        let tr = k.tile_rows;
        for (dtype, n_in) in integer_cases() {
            for n_rows in tile_heights(tr) {
                let data = random_rows(&mut rng, dtype, n_rows, n_in);
                let rows = rows(dtype, n_in, n_rows, &data);
                let (mut got, mut want) = (PackedQ::default(), PackedQ::default());
                k.pack_q(&rows, &mut got);
                scalar::pack_q_with(&rows, tr, &mut want);
                let what = format!("{:?} {dtype:?} n_in {n_in} rows {n_rows}", k.isa);
                let valid = |i: usize| i % tr < n_rows;
                let pick = |v: &[u32]| -> Vec<u32> {
                    v.iter()
                        .enumerate()
                        .filter(|(i, _)| valid(*i))
                        .map(|(_, v)| *v)
                        .collect()
                };
                let pickf = |v: &[f32]| -> Vec<f32> {
                    v.iter()
                        .enumerate()
                        .filter(|(i, _)| valid(*i))
                        .map(|(_, v)| *v)
                        .collect()
                };
                assert_eq!(pick(got.qs.words()), pick(want.qs.words()), "{what}: codes");
                assert_eq!(
                    pickf(got.dw.floats()),
                    pickf(want.dw.floats()),
                    "{what}: scales"
                );
                assert_eq!(
                    pickf(got.mw.floats()),
                    pickf(want.mw.floats()),
                    "{what}: minimums"
                );
            }
        }
    }
}

#[test]
fn dot_q_matches_scalar() {
    let mut rng = StdRng::seed_from_u64(5);
    for k in available() {
        let tr = k.tile_rows;
        for (dtype, n_in) in integer_cases() {
            let scheme = Scheme::for_integer_dots(dtype);
            for n_rows in tile_heights(tr) {
                let data = random_rows(&mut rng, dtype, n_rows, n_in);
                let rows = rows(dtype, n_in, n_rows, &data);
                let mut packed = PackedQ::default();
                k.pack_q(&rows, &mut packed);
                for (n_tok, fine) in N_TOKS.into_iter().flat_map(|n| [(n, false), (n, true)]) {
                    let x = random_f32(&mut rng, n_tok * n_in);
                    let mut acts = scalar::kernels().quantize_acts(scheme, &x, n_tok, fine);
                    k.finish_acts(&mut acts);
                    // The padded output width catches stores past the tile.
                    let got = with_out(n_tok, tr, |out| k.dot_q(&packed, &acts, out));
                    let want = with_out(n_tok, tr, |out| scalar::dot_q(&packed, &acts, out));
                    let mags = magnitudes(dtype, &data, n_rows, n_in, &x);
                    let mut tol = vec![0f32; n_tok * tr];
                    for t in 0..n_tok {
                        for r in 0..n_rows {
                            tol[t * tr + r] = 1e-5 * mags[t * n_rows + r] + 1e-6;
                        }
                    }
                    for t in 0..n_tok {
                        for r in n_rows..tr {
                            assert!(got[t * tr + r].is_nan(), "{:?} wrote past the tile", k.isa);
                        }
                    }
                    let keep = |v: &[f32]| rows_only(v, tr, n_rows);
                    let what = format!(
                        "{:?} {dtype:?} n_in {n_in} rows {n_rows} n_tok {n_tok} fine {fine}",
                        k.isa
                    );
                    assert_close(&keep(&got), &keep(&want), &tol, &what);
                }
            }
        }
    }
}

/// Integer sums at the edge of their ranges: every packed weight byte at 0
/// or its format's largest code, every activation code (and fine code) at
/// ±127 (or -128 where the 16-bit bound of [`Scheme::i16_groups`] claims to
/// cover it), scales 1. The results are then integers and powers-of-two
/// fractions that f32 holds exactly, so every kernel must give the scalar
/// kernel's bits: a 16-bit sum that saturated or wrapped would show.
#[test]
fn dot_q_sums_extreme_codes_exactly() {
    let mut rng = StdRng::seed_from_u64(9);
    for k in available() {
        let tr = k.tile_rows;
        for (dtype, n_in) in integer_cases() {
            let scheme = Scheme::for_integer_dots(dtype);
            // The sign trick of 8-bit codes needs `|a| <= 127`, which the
            // quantizer guarantees; so do kernels that take one 16-bit code
            // `256 q + f` per activation (simd128: -128 would leave i16);
            // the byte kernels with narrower weight codes take any signed
            // byte.
            let lowest: i8 = if scheme.max_code() == 255 || k.wide_acts {
                -127
            } else {
                -128
            };
            let n_rows = tr - 3;
            let data = random_rows(&mut rng, dtype, n_rows, n_in);
            let mut packed = PackedQ::default();
            k.pack_q(&rows(dtype, n_in, n_rows, &data), &mut packed);
            let max = scheme.max_code();
            for w in packed.qs.words_mut() {
                // Mostly the largest code, so one sign of products dominates.
                let b: [u8; 4] =
                    std::array::from_fn(|_| if rng.random_range(0..8) == 0 { 0 } else { max });
                *w = u32::from_le_bytes(b);
            }
            packed.dw.floats_mut().fill(1.0);
            packed.mw.floats_mut().fill(0.0);
            for (n_tok, fine) in [(1, false), (3, true), (6, false), (17, true)] {
                let mut acts = QuantActs::zeroed(scheme, n_tok, n_in, fine);
                // Per token one sign, mostly at the extreme.
                for (t, mut row) in acts.rows_mut().enumerate() {
                    let hi = if t % 2 == 0 { lowest } else { 127 };
                    let code = |rng: &mut StdRng| match rng.random_range(0..8) {
                        0 => rng.random_range(-127..=127),
                        _ => hi,
                    };
                    for q in row.qs.iter_mut() {
                        *q = code(&mut rng);
                    }
                    for f in row.fine.iter_mut() {
                        *f = code(&mut rng).max(-127);
                    }
                    QuantActs::finish_row(&scheme, &mut row, |_| 1.0);
                }
                k.finish_acts(&mut acts);
                let got = with_out(n_tok, tr, |out| k.dot_q(&packed, &acts, out));
                let want = with_out(n_tok, tr, |out| scalar::dot_q(&packed, &acts, out));
                let bits = |v: &[f32]| -> Vec<u32> {
                    rows_only(v, tr, n_rows)
                        .iter()
                        .map(|v| v.to_bits())
                        .collect()
                };
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{:?} {dtype:?} n_in {n_in} n_tok {n_tok} fine {fine}",
                    k.isa
                );
            }
        }
    }
}

/// Kernel sets that differ only in their byte dot product (`vpmaddubsw` or
/// `vpdpbusd`, NEON's `smull` or `sdot`) sum the same integers, so they must
/// give the same bits, not merely agree within the scalar tolerance.
#[test]
fn byte_dot_instructions_give_identical_bits() {
    let pairs = [
        (Isa::Avx2, Isa::AvxVnni),
        (Isa::Avx512, Isa::Avx512Vnni),
        (Isa::Neon, Isa::NeonDot),
    ];
    let mut rng = StdRng::seed_from_u64(8);
    for (plain, dot) in pairs {
        let (Some(plain), Some(dot)) = (for_isa(plain), for_isa(dot)) else {
            continue;
        };
        let tr = plain.tile_rows;
        assert_eq!(dot.tile_rows, tr);
        for (dtype, n_in) in integer_cases() {
            let scheme = Scheme::for_integer_dots(dtype);
            let n_rows = tr - 3;
            let data = random_rows(&mut rng, dtype, n_rows, n_in);
            let mut packed = PackedQ::default();
            plain.pack_q(&rows(dtype, n_in, n_rows, &data), &mut packed);
            for (n_tok, fine) in [(1, false), (17, false), (17, true)] {
                let x = random_f32(&mut rng, n_tok * n_in);
                let mut acts = scalar::kernels().quantize_acts(scheme, &x, n_tok, fine);
                plain.finish_acts(&mut acts);
                let a = with_out(n_tok, tr, |out| plain.dot_q(&packed, &acts, out));
                let b = with_out(n_tok, tr, |out| dot.dot_q(&packed, &acts, out));
                let bits = |v: &[f32]| -> Vec<u32> {
                    rows_only(v, tr, n_rows)
                        .iter()
                        .map(|v| v.to_bits())
                        .collect()
                };
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "{:?} vs {:?}: {dtype:?} n_in {n_in} n_tok {n_tok} fine {fine}",
                    plain.isa,
                    dot.isa
                );
            }
        }
    }
}

/// A CPU with a byte dot-product extension gets (and so tests) its kernels.
#[test]
fn dot_product_extensions_are_detected() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avxvnni")
        && is_x86_feature_detected!("avx2")
        && isa_cap::allows(Isa::AvxVnni)
    {
        assert!(for_isa(Isa::AvxVnni).is_some());
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert!(for_isa(Isa::Neon).is_some());
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            assert!(for_isa(Isa::NeonDot).is_some());
            assert_eq!(best().isa, Isa::NeonDot);
        }
    }
}

#[test]
fn pack_f_matches_scalar_exactly() {
    let mut rng = StdRng::seed_from_u64(6);
    for k in available() {
        let tr = k.tile_rows;
        for dtype in QUANT_TYPES.into_iter().chain(FLOAT_TYPES) {
            for n_in in widths(dtype) {
                for n_rows in tile_heights(tr) {
                    let data = random_rows(&mut rng, dtype, n_rows, n_in);
                    let rows = rows(dtype, n_in, n_rows, &data);
                    let (mut got, mut want) = (PackedF::default(), PackedF::default());
                    let mut scratch = PackedQ::default();
                    k.pack_f(&rows, &mut scratch, &mut got);
                    scalar::pack_f_with(&rows, tr, &mut scratch, &mut want);
                    let what = format!("{:?} {dtype:?} n_in {n_in} rows {n_rows}", k.isa);
                    for (i, (g, w)) in got.w.floats().iter().zip(want.w.floats()).enumerate() {
                        if i % tr < n_rows {
                            assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
                        }
                    }
                    // And the reference itself dequantizes as `quant` does.
                    let mut row = vec![0f32; n_in];
                    for r in 0..n_rows {
                        quant::dequantize_row(
                            dtype,
                            &data[r * rows.row_bytes..(r + 1) * rows.row_bytes],
                            &mut row,
                        );
                        for (i, v) in row.iter().enumerate() {
                            let p = want.w.floats()[i * tr + r];
                            assert!(
                                (p - v).abs() <= 1e-6 * v.abs().max(1e-3),
                                "{what}: reference element {i} of row {r}: {p} vs quant {v}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn dot_f_matches_scalar() {
    let mut rng = StdRng::seed_from_u64(7);
    for k in available() {
        let tr = k.tile_rows;
        for dtype in [DType::F32, DType::F16, DType::Q4_1, DType::Q8_0] {
            for n_in in widths(dtype) {
                for n_rows in tile_heights(tr) {
                    let data = random_rows(&mut rng, dtype, n_rows, n_in);
                    let rows = rows(dtype, n_in, n_rows, &data);
                    let mut packed = PackedF::default();
                    scalar::pack_f_with(&rows, tr, &mut PackedQ::default(), &mut packed);
                    // 23: a remainder past 8 after whole tiles of 12 tokens (AVX2).
                    for n_tok in N_TOKS.into_iter().chain([23]) {
                        let x = random_f32(&mut rng, n_tok * n_in);
                        let got = with_out(n_tok, tr, |out| k.dot_f(&packed, &x, out));
                        let want = with_out(n_tok, tr, |out| scalar::dot_f(&packed, &x, out));
                        let mags = magnitudes(dtype, &data, n_rows, n_in, &x);
                        let mut tol = vec![0f32; n_tok * tr];
                        for t in 0..n_tok {
                            for r in 0..n_rows {
                                tol[t * tr + r] = 1e-5 * mags[t * n_rows + r] + 1e-6;
                            }
                        }
                        let keep = |v: &[f32]| rows_only(v, tr, n_rows);
                        let what = format!(
                            "{:?} {dtype:?} n_in {n_in} rows {n_rows} n_tok {n_tok}",
                            k.isa
                        );
                        assert_close(&keep(&got), &keep(&want), &tol, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn best_is_detected_once_and_listed() {
    let best = best();
    assert!(std::ptr::eq(best, best_after_second_call()));
    assert_eq!(for_isa(best.isa).map(|k| k.isa), Some(best.isa));
    assert_eq!(for_isa(Isa::Scalar).map(|k| k.tile_rows), Some(8));
}

fn best_after_second_call() -> &'static Kernels {
    best()
}

#[test]
#[should_panic(expected = "claimed twice")]
fn a_stripe_cannot_be_claimed_twice() {
    let mut y = vec![0f32; 12];
    let stripes = ColumnStripes::new(&mut y, 3, 4, 2);
    let _a = stripes.claim(1);
    let _b = stripes.claim(1);
}
