//! Tests across all block formats: golden vectors from the `gguf` python
//! package, round-trip error bounds, and dot products against f64 references.

use rand::{Rng, SeedableRng};

use super::*;

const QUANTIZED: [DType; 8] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q8_1,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::Q8_K,
];

const WEIGHTS: [DType; 9] = DType::WEIGHT_TYPES;

/// Normally distributed values (Box-Muller), times `scale`.
fn gaussian(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * scale
        })
        .collect()
}

fn quantize_vec(dtype: DType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; dtype.row_bytes(x.len()).unwrap()];
    quantize_row(dtype, x, &mut q).unwrap();
    q
}

fn dequantize_vec(dtype: DType, q: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    dequantize_row(dtype, q, &mut y);
    y
}

// ---------------------------------------------------------------------------
// Golden vectors: tests/reference/quant_vectors.py (the `gguf` package)
// ---------------------------------------------------------------------------

/// The bytes stored as hex under `name` in tests/data/quant/vectors.json
/// (written by tests/reference/quant_vectors.py).
fn golden(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/data/quant/vectors.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let vectors: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex = vectors[name]
        .as_str()
        .unwrap_or_else(|| panic!("{path}: no vector '{name}'"));
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex byte"))
        .collect()
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn dequantize_matches_gguf_package_bit_for_bit() {
    for dtype in [
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ] {
        let name = dtype.name().to_ascii_lowercase();
        let q = golden(&format!("{name}.quant.bin"));
        let want = floats(&golden(&format!("{name}.dequant.f32")));
        let got = dequantize_vec(dtype, &q, want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{dtype:?} element {i}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn quantize_matches_gguf_package_byte_for_byte() {
    let x = floats(&golden("input.f32"));
    for dtype in [
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
    ] {
        let name = dtype.name().to_ascii_lowercase();
        let want = golden(&format!("{name}.quant.bin"));
        let got = quantize_vec(dtype, &x);
        let block = dtype.block_bytes();
        for (b, (g, w)) in got.chunks(block).zip(want.chunks(block)).enumerate() {
            assert_eq!(g, w, "{dtype:?} block {b}");
        }
    }
}

#[test]
fn k_quantize_matches_ggml_byte_for_byte() {
    // ggml's own reference quantizers, through the ggml-python bindings
    // (the gguf package has none for the k-quants).
    let x = floats(&golden("kquant.input.f32"));
    for dtype in [DType::Q4_K, DType::Q5_K, DType::Q6_K] {
        let name = dtype.name().to_ascii_lowercase();
        let want = golden(&format!("{name}.ggml.quant.bin"));
        let got = quantize_vec(dtype, &x);
        let block = dtype.block_bytes();
        for (b, (g, w)) in got.chunks(block).zip(want.chunks(block)).enumerate() {
            assert_eq!(g, w, "{dtype:?} block {b}");
        }
    }
}

/// Rows of the SmolLM2 fixture, read from the model file itself (weights are
/// never committed): llama.cpp's reference quantizer wrote them, so
/// quantizing our dequantized values must find the same scales and codes.
#[test]
// Reads the whole 100 MB fixture into linear memory: under Node's WASI on the
// CI machine that crashed Node itself (SIGSEGV). The quantizers are scalar
// code shared by every target, so the native run covers them.
#[cfg_attr(
    target_family = "wasm",
    ignore = "reads a 100 MB file; covered natively"
)]
fn real_model_rows_requantize_to_the_same_bytes() {
    let dir = std::env::var_os("MAIN_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures"));
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/fetch-fixtures", path.display()));
    let g = crate::gguf::Gguf::parse(&bytes).unwrap();
    for (tensor, dtype, rows) in [
        ("blk.0.attn_q.weight", DType::Q4_1, [0usize, 1, 287, 575]),
        ("token_embd.weight", DType::Q8_0, [0, 1, 1000, 49151]),
    ] {
        let t = g.tensor(tensor).unwrap();
        assert_eq!(t.dtype, dtype, "{tensor}");
        let n_in = t.dims[0];
        let rb = dtype.row_bytes(n_in).unwrap();
        for r in rows {
            let q = &bytes[t.offset + r * rb..t.offset + (r + 1) * rb];
            let got = dequantize_vec(dtype, q, n_in);
            assert!(got.iter().all(|v| v.is_finite()), "{tensor} row {r}");
            let again = quantize_vec(dtype, &got);
            let block = dtype.block_bytes();
            for (b, (x, y)) in again.chunks(block).zip(q.chunks(block)).enumerate() {
                assert_eq!(x, y, "{tensor} row {r} block {b}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

/// Largest error `dequantize(quantize(x))` may make on a 32-element block of
/// the simple formats, from the format's rounding: half a step, plus the f16
/// rounding (relative 2^-11) of the stored scale and offset.
fn simple_block_bound(dtype: DType, x: &[f32]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let min = x.iter().fold(f32::MAX, |m, &v| m.min(v));
    let max = x.iter().fold(-f32::MAX, |m, &v| m.max(v));
    let f16_eps = 2f32.powi(-11);
    match dtype {
        // Codes reach -8 on the largest magnitude's side but only +7 on the
        // other, so values there may be off by a whole step.
        DType::Q4_0 => amax / 8.0 * (1.0 + 8.0 * f16_eps),
        DType::Q4_1 => {
            let d = (max - min) / 15.0;
            d * (0.5 + 15.0 * f16_eps) + min.abs() * f16_eps
        }
        DType::Q8_0 | DType::Q8_1 => amax / 127.0 * (0.5 + 127.0 * f16_eps),
        other => unreachable!("{other:?}"),
    }
}

#[test]
fn round_trip_error_is_within_format_bounds() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let n = 4 * QK_K;
    let mut x = gaussian(&mut rng, n, 0.02);
    // Blocks with an outlier, a constant value, zeros and one sign only.
    x[5] = 0.5;
    x[64..96].fill(-0.01);
    x[96..128].fill(0.0);
    for v in &mut x[256..512] {
        *v = v.abs();
    }
    for dtype in QUANTIZED {
        let y = dequantize_vec(dtype, &quantize_vec(dtype, &x), n);
        assert!(
            y.iter().all(|v| v.is_finite()),
            "{dtype:?}: non-finite output"
        );
        if dtype.block_len() == 32 {
            for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let bound = simple_block_bound(dtype, xb);
                for (i, (a, b_)) in xb.iter().zip(yb).enumerate() {
                    assert!(
                        (a - b_).abs() <= bound,
                        "{dtype:?} block {b} element {i}: {a} -> {b_}, bound {bound}"
                    );
                }
            }
        }
    }
}

#[test]
fn round_trip_rms_error_of_gaussian_data() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let n = 16 * QK_K;
    let x = gaussian(&mut rng, n, 0.02);
    for dtype in QUANTIZED {
        let y = dequantize_vec(dtype, &quantize_vec(dtype, &x), n);
        // Measured on this data (our quantizers match ggml's byte for byte):
        // Q4_0 0.086, Q4_1 0.078, Q4_K 0.071, Q5_K 0.036, Q6_K 0.0175,
        // Q8_0/Q8_1 0.0054, Q8_K 0.0070. Bounds leave about 15% headroom.
        let bound = match dtype {
            DType::Q4_0 => 0.10,
            DType::Q4_1 => 0.09,
            DType::Q4_K => 0.08,
            DType::Q5_K => 0.042,
            DType::Q6_K => 0.02,
            DType::Q8_0 | DType::Q8_1 => 0.0062,
            DType::Q8_K => 0.008,
            _ => unreachable!(),
        };
        let err2: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let sig2: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
        let rel = (err2 / sig2).sqrt();
        assert!(
            rel < bound,
            "{dtype:?}: relative RMS error {rel}, bound {bound}"
        );
    }
}

#[test]
fn zero_rows_quantize_to_zero() {
    let x = vec![0f32; 2 * QK_K];
    for dtype in QUANTIZED {
        let y = dequantize_vec(dtype, &quantize_vec(dtype, &x), x.len());
        assert!(y.iter().all(|v| *v == 0.0), "{dtype:?}");
    }
}

#[test]
fn activation_blocks_carry_consistent_sums() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let x = gaussian(&mut rng, 2 * QK_K, 1.0);
    for b in blocks::<BlockQ8K>(&quantize_vec(DType::Q8_K, &x), x.len()) {
        for (j, s) in b.bsums.iter().enumerate() {
            let sum: i32 = b.qs[16 * j..16 * (j + 1)].iter().map(|&q| q as i32).sum();
            assert_eq!(*s as i32, sum);
        }
        assert!(b.qs.iter().all(|&q| q != -128), "Q8_K codes are symmetric");
    }
    // ggml maps each Q8_K block's value of largest magnitude to code -127, and
    // each Q8_0/Q8_1 block's to +-127.
    for (xb, b) in x
        .chunks(QK_K)
        .zip(blocks::<BlockQ8K>(&quantize_vec(DType::Q8_K, &x), x.len()))
    {
        let i = (0..QK_K)
            .max_by(|&i, &j| xb[i].abs().total_cmp(&xb[j].abs()))
            .unwrap();
        assert_eq!(b.qs[i], -127);
        assert_eq!(b.d, 1.0 / (-127.0 / xb[i]));
    }
    for (xb, b) in x
        .chunks(32)
        .zip(blocks::<BlockQ8_1>(&quantize_vec(DType::Q8_1, &x), x.len()))
    {
        let i = (0..32)
            .max_by(|&i, &j| xb[i].abs().total_cmp(&xb[j].abs()))
            .unwrap();
        assert_eq!(b.qs[i] as f32, 127.0 * xb[i].signum());
        assert_eq!(b.d, half::f16::from_f32(xb[i].abs() / 127.0));
    }
    for b in blocks::<BlockQ8_1>(&quantize_vec(DType::Q8_1, &x), x.len()) {
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        let want = sum as f32 * b.d.to_f32();
        assert!((b.s.to_f32() - want).abs() <= want.abs() * 2e-3 + 1e-6);
    }
}

#[test]
fn blocks_survive_write_then_read() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let x = gaussian(&mut rng, QK_K, 1.0);
    fn check<B: Block + PartialEq + std::fmt::Debug>(x: &[f32]) {
        let bytes = quantize_vec(B::DTYPE, x);
        let mut again = vec![0u8; bytes.len()];
        for (b, out) in blocks::<B>(&bytes, x.len()).zip(again.chunks_exact_mut(B::BYTES)) {
            b.write(out);
            assert_eq!(B::read(out), b);
        }
        assert_eq!(again, bytes, "{:?}", B::DTYPE);
    }
    check::<BlockQ4_0>(&x);
    check::<BlockQ4_1>(&x);
    check::<BlockQ8_0>(&x);
    check::<BlockQ8_1>(&x);
    check::<BlockQ4K>(&x);
    check::<BlockQ5K>(&x);
    check::<BlockQ6K>(&x);
    check::<BlockQ8K>(&x);
}

// ---------------------------------------------------------------------------
// Row-level API
// ---------------------------------------------------------------------------

#[test]
fn quantize_row_rejects_bad_lengths() {
    let x = vec![0f32; 48];
    let mut dst = vec![0u8; 64];
    let err = quantize_row(DType::Q4_0, &x, &mut dst).unwrap_err();
    assert!(err.to_string().contains("48 elements"), "{err}");
    let x = vec![0f32; 64];
    let err = quantize_row(DType::Q4_0, &x, &mut dst).unwrap_err();
    assert!(err.to_string().contains("64 bytes"), "{err}");
    let err = quantize_row(DType::Q4_K, &x, &mut dst).unwrap_err();
    assert!(err.to_string().contains("Q4_K"), "{err}");
    let mut dst = vec![0u8; 36];
    quantize_row(DType::Q4_0, &x, &mut dst).unwrap();
}

#[test]
fn float_types_round_trip() {
    let x = [1.0f32, -2.5, 1.0e-3, 65504.0, 3.0e-8, 0.1];
    assert_eq!(
        dequantize_vec(DType::F32, &quantize_vec(DType::F32, &x), 6),
        x
    );
    for dtype in [DType::F16, DType::BF16] {
        let y = dequantize_vec(dtype, &quantize_vec(dtype, &x), 6);
        for (a, b) in x.iter().zip(&y) {
            let eps = if dtype == DType::F16 {
                2f32.powi(-11)
            } else {
                2f32.powi(-8)
            };
            // f16 has subnormals below 6e-5, where the error is absolute.
            assert!(
                (a - b).abs() <= a.abs() * eps + 3e-8,
                "{dtype:?}: {a} -> {b}"
            );
        }
    }
}

#[test]
fn activation_types_follow_ggml() {
    assert_eq!(activation_type(DType::Q4_0), DType::Q8_0);
    assert_eq!(activation_type(DType::Q8_0), DType::Q8_0);
    assert_eq!(activation_type(DType::Q4_1), DType::Q8_1);
    for k in [DType::Q4_K, DType::Q5_K, DType::Q6_K] {
        assert_eq!(activation_type(k), DType::Q8_K);
    }
    for f in [DType::F32, DType::F16, DType::BF16] {
        assert_eq!(activation_type(f), DType::F32);
    }
}

// ---------------------------------------------------------------------------
// Dot products
// ---------------------------------------------------------------------------

/// Largest error activation quantization may add to element `i`'s term:
/// half a step of its block's scale plus the f16 rounding of that scale.
fn activation_step(act: DType, x: &[f32], i: usize) -> f64 {
    let len = act.block_len();
    let block = &x[i / len * len..(i / len + 1) * len];
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    match act {
        DType::F32 => 0.0,
        DType::Q8_0 | DType::Q8_1 => amax / 127.0 * (0.5 + 127.0 * 2f64.powi(-11)),
        DType::Q8_K => amax / 127.0 * 0.5 * (1.0 + 1e-6),
        other => unreachable!("{other:?}"),
    }
}

#[test]
fn vec_dot_matches_f64_dot_of_dequantized_rows() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let n = 3 * QK_K;
    for dtype in WEIGHTS {
        let act = activation_type(dtype);
        for trial in 0..4 {
            let mut w = gaussian(&mut rng, n, 0.05);
            let mut x = gaussian(&mut rng, n, 1.0);
            if trial == 1 {
                // Activations of one sign, so an offset term cannot cancel.
                x.iter_mut().for_each(|v| *v = v.abs() + 0.5);
                w.iter_mut().for_each(|v| *v += 0.1);
            }
            let wq = quantize_vec(dtype, &w);
            let aq = quantize_vec(act, &x);
            let got = vec_dot_scalar(dtype, &wq, &aq, n) as f64;

            let w_hat = dequantize_vec(dtype, &wq, n);
            let x_hat = dequantize_vec(act, &aq, n);
            // The integer dot product of the codes, scaled: the dequantized rows'
            // dot up to f32 rounding (and, for Q8_1, the f16 rounding of `s`).
            let exact: f64 = w_hat
                .iter()
                .zip(&x_hat)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            let mag: f64 = w_hat
                .iter()
                .zip(&x_hat)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            let mut tol = 1e-5 * mag;
            if act == DType::Q8_1 {
                for (wb, ab) in blocks::<BlockQ4_1>(&wq, n).zip(blocks::<BlockQ8_1>(&aq, n)) {
                    let sum: f64 = ab.qs.iter().map(|&q| q as f64).sum();
                    tol += (wb.m.to_f64() * ab.d.to_f64() * sum).abs() * 2f64.powi(-10);
                }
            }
            assert!(
                (got - exact).abs() <= tol,
                "{dtype:?} trial {trial}: vec_dot {got}, dequantized dot {exact}, tol {tol}"
            );

            // Against the unquantized activations the only extra error is the
            // activations' rounding, bounded element by element.
            let reference: f64 = w_hat
                .iter()
                .zip(&x)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            let bound: f64 = tol
                + (0..n)
                    .map(|i| (w_hat[i] as f64).abs() * activation_step(act, &x, i))
                    .sum::<f64>();
            assert!(
                (got - reference).abs() <= bound,
                "{dtype:?} trial {trial}: vec_dot {got}, f64 reference {reference}, bound {bound}"
            );
        }
    }
}

#[test]
fn vec_dot_detects_a_wrong_code() {
    // The dot product must see every code: flipping one weight code changes it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let n = QK_K;
    let x = gaussian(&mut rng, n, 1.0);
    for dtype in [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ] {
        let w = gaussian(&mut rng, n, 0.05);
        let aq = quantize_vec(activation_type(dtype), &x);
        let mut wq = quantize_vec(dtype, &w);
        let before = vec_dot_scalar(dtype, &wq, &aq, n);
        let last = wq.len() - dtype.block_bytes() / 2; // a code byte in every layout
        wq[last] ^= 0x11;
        let after = vec_dot_scalar(dtype, &wq, &aq, n);
        assert_ne!(before, after, "{dtype:?}");
    }
}
