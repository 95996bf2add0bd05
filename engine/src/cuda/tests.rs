//! The GPU path against the CPU: every kernel and the whole packed forward
//! pass, through `emulator::Emulator` (kernels.cu compiled as C++) here, and
//! on a real GPU (device 0) when `MAIN_GPU_TESTS=1` (`scripts/check-gpu`,
//! which builds with `--features cuda` and runs these one at a time).
//!
//! On a GPU each test runs in a process of its own (`scripts/check-gpu
//! tests` calls the test binary once per test with `--exact`): a kernel
//! that faults (an illegal address) leaves its CUDA context unusable for
//! every later call, so tests sharing one process (one context, opened
//! once by `device`) would all fail after the first fault. One process per
//! test keeps a fault to the test that caused it.

use std::sync::Arc;

use super::backend::{Arg, Backend, Buf, Elem};
use super::emulator::Emulator;
use super::forward::{decode_into, GpuModel};
use super::{GpuSide, GpuView};
use crate::error::Error;
use crate::logprob::head_logprobs;
use crate::matmul::{Precision, Weight};
use crate::model::{Model, Runtime};
use crate::quant::{dequantize_row, quantize_row, DType};

const GIB: usize = 1 << 30;

fn emulator(limit: usize) -> Arc<dyn Backend> {
    Arc::new(Emulator::new(limit))
}

/// Whether these tests run on a real GPU (`MAIN_GPU_TESTS=1`).
fn on_gpu() -> bool {
    std::env::var_os("MAIN_GPU_TESTS").is_some_and(|v| v == "1")
}

/// The device under test: GPU 0 with `MAIN_GPU_TESTS=1` (opened once per
/// process: compiling the kernels takes seconds), else an emulator of
/// `limit` bytes.
fn device(limit: usize) -> Arc<dyn Backend> {
    if !on_gpu() {
        return emulator(limit);
    }
    #[cfg(feature = "cuda")]
    {
        static GPU: std::sync::OnceLock<Arc<dyn Backend>> = std::sync::OnceLock::new();
        GPU.get_or_init(|| {
            Arc::new(super::driver::CudaDevice::open(0).unwrap_or_else(|e| panic!("{e}")))
        })
        .clone()
    }
    #[cfg(not(feature = "cuda"))]
    panic!("MAIN_GPU_TESTS=1 needs a build with --features cuda")
}

/// How far packing may move a view's numbers: nowhere on the emulator;
/// on a GPU cuBLAS may pick another kernel (another summation order) for
/// another batch shape.
fn packing_tolerance(p: Precision) -> f64 {
    match (on_gpu(), p) {
        (false, _) => 0.0,
        (true, Precision::Bf16) => 5e-3,
        (true, _) => 1e-5,
    }
}

/// A fixture file: under `$MAIN_FIXTURES` (as scripts/fetch-fixtures and
/// scripts/check-gpu name it), else the checkout's fixtures/. Missing, the
/// test is skipped, or fails with `MAIN_REQUIRE_FIXTURES=1`.
fn fixture(rel: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("MAIN_FIXTURES").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
        std::path::PathBuf::from,
    );
    let p = dir.join(rel);
    if p.exists() {
        Some(p)
    } else if std::env::var_os("MAIN_REQUIRE_FIXTURES").is_some_and(|v| v == "1") {
        // scripts/check-gpu: a missing fixture is a failure, not a pass.
        panic!("{} is missing (MAIN_REQUIRE_FIXTURES=1)", p.display())
    } else {
        eprintln!(
            "skipped: {} is missing (run scripts/fetch-fixtures)",
            p.display()
        );
        None
    }
}

/// Deterministic values in about [-2, 2] with some outliers.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 33) as f32 / (1u64 << 31) as f32;
            let v = 4.0 * u - 2.0;
            if i % 97 == 0 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

fn bf16_round(v: f32) -> f32 {
    let u = v.to_bits();
    let r = u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16;
    f32::from_bits(r << 16)
}

/// Every weight type decoded on `gpu` into f32 and bf16, against the CPU's
/// `dequantize_row`: one line per (type, element type) whose values differ
/// in any bit, with the count and the first difference.
fn decoder_mismatches(gpu: &Arc<dyn Backend>) -> Vec<String> {
    // Rows with a remainder of blocks per launch (n_out * blocks not a multiple of 256).
    let (n_out, n_in) = (7, 512);
    let mut bad = Vec::new();
    for dtype in DType::WEIGHT_TYPES {
        let x = values(n_out * n_in, dtype.ggml_id() as u64);
        let mut bytes = vec![0u8; n_out * n_in / dtype.block_len() * dtype.block_bytes()];
        quantize_row(dtype, &x, &mut bytes).unwrap();
        let mut want = vec![0f32; n_out * n_in];
        dequantize_row(dtype, &bytes, &mut want);
        let w = Weight {
            dtype,
            n_out,
            n_in,
            data: &bytes,
        };
        for elem in [Elem::F32, Elem::Bf16] {
            // Decoded into the middle of a fused matrix, as Q/K/V are.
            let dst = Buf::new(gpu, (n_out + 3) * n_in * elem.bytes(), "test").unwrap();
            decode_into(gpu, &w, "t", &dst, 2, elem).unwrap();
            let mut raw = vec![0u8; n_out * n_in * elem.bytes()];
            gpu.download(dst.at(2 * n_in * elem.bytes()), &mut raw)
                .unwrap();
            let got: Vec<f32> = match elem {
                Elem::F32 => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Elem::Bf16 => raw
                    .chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                    .collect(),
            };
            let differ: Vec<(usize, f32, f32)> = got
                .iter()
                .zip(&want)
                .enumerate()
                .map(|(i, (&g, &w))| (i, g, if elem == Elem::Bf16 { bf16_round(w) } else { w }))
                .filter(|(_, g, w)| g.to_bits() != w.to_bits())
                .collect();
            if let Some(&(i, g, w)) = differ.first() {
                bad.push(format!(
                    "{dtype:?} -> {elem:?}: {} of {} elements differ, first {i}: {g} vs {w}",
                    differ.len(),
                    got.len()
                ));
            }
        }
    }
    bad
}

/// RoPE on `gpu` against the CPU's (`model::RopeTable`, the same f64
/// tables rounded to f32), both layouts: how many values differ in any bit.
fn rope_mismatches(gpu: &Arc<dyn Backend>) -> usize {
    use crate::config::RopeStyle;
    let (h, hkv, hd) = (4usize, 2usize, 64usize);
    let s = (h + 2 * hkv) * hd;
    let positions: Vec<usize> = (0..37).map(|t| 3 * t + 1).collect();
    let n_tok = positions.len();
    let inv_freqs: Vec<f64> = (0..hd / 2)
        .map(|i| 10_000f64.powf(-2.0 * i as f64 / hd as f64))
        .collect();
    // The GPU's table: every position up to the largest, as forward.rs builds it.
    let n_pos = positions.iter().max().unwrap() + 1;
    let table = crate::model::RopeTable::new(&inv_freqs, &(0..n_pos).collect::<Vec<_>>());
    let cpu = crate::model::RopeTable::new(&inv_freqs, &positions);
    let mut differ = 0;
    for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
        let qkv = values(n_tok * s, 31);
        let (mut q, mut k) = (Vec::new(), Vec::new());
        for row in qkv.chunks_exact(s) {
            q.extend_from_slice(&row[..h * hd]);
            k.extend_from_slice(&row[h * hd..(h + hkv) * hd]);
        }
        cpu.apply(&mut q, h, hd, style);
        cpu.apply(&mut k, hkv, hd, style);
        let qb = Buf::from_f32(gpu, &qkv, "t").unwrap();
        let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let posb = Buf::from_i32(gpu, &pos, "t").unwrap();
        let cosb = Buf::from_f32(gpu, &table.cos, "t").unwrap();
        let sinb = Buf::from_f32(gpu, &table.sin, "t").unwrap();
        let n = n_tok * (h + hkv) * hd / 2;
        gpu.launch(
            "rope",
            n.div_ceil(256) as u32,
            256,
            &[
                qb.arg(),
                posb.arg(),
                cosb.arg(),
                sinb.arg(),
                Arg::I64(n as i64),
                Arg::I32(h as i32),
                Arg::I32(hkv as i32),
                Arg::I32(hd as i32),
                Arg::I32((style == RopeStyle::Interleaved) as i32),
            ],
        )
        .unwrap();
        let got = qb.to_f32(n_tok * s).unwrap();
        for (t, row) in got.chunks_exact(s).enumerate() {
            let want_q = &q[t * h * hd..(t + 1) * h * hd];
            let want_k = &k[t * hkv * hd..(t + 1) * hkv * hd];
            let want_v = &qkv[t * s + (h + hkv) * hd..(t + 1) * s];
            let want = want_q.iter().chain(want_k).chain(want_v);
            differ += row
                .iter()
                .zip(want)
                .filter(|(g, w)| g.to_bits() != w.to_bits())
                .count();
        }
    }
    differ
}

#[test]
fn rope_kernel_equals_the_cpu_bit_for_bit() {
    assert_eq!(rope_mismatches(&device(GIB)), 0);
}

#[test]
fn weight_decoders_equal_the_cpu_for_every_block_type() {
    let bad = decoder_mismatches(&device(GIB));
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The bit-exact kernel tests can see a fused multiply-add. With NVRTC's
/// default `--fmad=true` (translated for the emulator into `-mfma
/// -ffp-contract=fast`), RoPE's `x0 * cos - x1 * sin` rounds once where
/// the CPU rounds three times, and differs from it; so these tests hold on
/// a GPU only because `NVRTC_OPTIONS` turns contraction off, and the
/// emulator builds with the same options. (The decoders' `q * d + m` is
/// not moved by contraction: a 4- to 6-bit code times an f16 scale, or a
/// 6-bit scale times an f16, is exact in f32, so only the add rounds; their
/// test stays bit for bit under either option.)
#[test]
fn a_fused_multiply_add_would_break_the_bit_exact_kernels() {
    assert!(
        super::NVRTC_OPTIONS.contains(&"--fmad=false"),
        "NVRTC_OPTIONS must turn off fused multiply-add: {:?}",
        super::NVRTC_OPTIONS
    );
    assert!(super::emulator::cxx_flags(super::NVRTC_OPTIONS).contains(&"-ffp-contract=off"));
    if !super::emulator::host_has_fma() {
        eprintln!("skipped: this CPU has no FMA, so the emulator cannot show NVRTC's default");
        return;
    }
    let fused: Vec<&str> = super::NVRTC_OPTIONS
        .iter()
        .map(|&o| {
            if o == "--fmad=false" {
                "--fmad=true"
            } else {
                o
            }
        })
        .collect();
    let gpu: Arc<dyn Backend> = Arc::new(Emulator::with_nvrtc_options(GIB, &fused));
    let differ = rope_mismatches(&gpu);
    eprintln!("with --fmad=true, {differ} RoPE values differ from the CPU");
    assert!(differ > 0, "a contracted RoPE should differ from the CPU");
    let bad = decoder_mismatches(&gpu);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn swiglu_kernel_equals_the_cpu_bit_for_bit() {
    let gpu = device(GIB);
    let (t, f) = (3, 333);
    let gu = values(t * 2 * f, 7);
    let gub = Buf::from_f32(&gpu, &gu, "t").unwrap();
    let out = Buf::new(&gpu, t * f * 4, "t").unwrap();
    let n = t * f;
    gpu.launch(
        "swiglu_f32",
        n.div_ceil(256) as u32,
        256,
        &[gub.arg(), out.arg(), Arg::I64(n as i64), Arg::I32(f as i32)],
    )
    .unwrap();
    let got = out.to_f32(n).unwrap();
    for r in 0..t {
        let mut gate = gu[r * 2 * f..r * 2 * f + f].to_vec();
        crate::kernels::activation::silu_mul(&mut gate, &gu[r * 2 * f + f..(r + 1) * 2 * f]);
        for j in 0..f {
            let g = got[r * f + j];
            assert!(
                (g - gate[j]).abs() <= 1e-6 * gate[j].abs().max(1.0),
                "row {r} col {j}: {g} vs {}",
                gate[j]
            );
        }
    }
}

/// f64 attention of one query against keys/values `0..=p` (or the window).
fn attention_ref(q: &[f32], keys: &[&[f32]], values: &[&[f32]], scale: f64) -> Vec<f64> {
    let s: Vec<f64> = keys
        .iter()
        .map(|k| {
            q.iter()
                .zip(*k)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
                * scale
        })
        .collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    let mut out = vec![0f64; q.len()];
    for (w, v) in e.iter().zip(values) {
        for (o, &x) in out.iter_mut().zip(*v) {
            *o += w / z * x as f64;
        }
    }
    out
}

#[test]
fn packed_attention_with_a_prefix_gqa_and_a_window_matches_f64() {
    let gpu = device(GIB);
    // head_dim 40: a partial last lane group; 70 keys: chunks of 32 with a remainder.
    let (h, hkv, hd) = (4usize, 2usize, 40usize);
    let s = (h + 2 * hkv) * hd;
    let n_prefix = 9;
    // Two sequences: one continuing 5 prefix positions with 70 new tokens,
    // one from scratch with 33.
    let seqs = [(5usize, 70usize), (0, 33)];
    let n: usize = seqs.iter().map(|x| x.1).sum();
    let qkv = values(n * s, 11);
    let prefix = values(n_prefix * s, 12);
    let (mut pos, mut first) = (Vec::new(), Vec::new());
    for &(shared, len) in &seqs {
        let base = pos.len();
        for i in 0..len {
            pos.push((shared + i) as i32);
            first.push(base as i32);
        }
    }
    let scale = 1.0 / (hd as f32).sqrt();
    for window in [0usize, 16] {
        let qb = Buf::from_f32(&gpu, &qkv, "t").unwrap();
        let pb = Buf::from_f32(&gpu, &prefix, "t").unwrap();
        let posb = Buf::from_i32(&gpu, &pos, "t").unwrap();
        let fb = Buf::from_i32(&gpu, &first, "t").unwrap();
        let out = Buf::new(&gpu, n * h * hd * 4, "t").unwrap();
        gpu.launch(
            "attention_f32",
            (n * h).div_ceil(4) as u32,
            128,
            &[
                qb.arg(),
                pb.arg(),
                posb.arg(),
                fb.arg(),
                out.arg(),
                Arg::I32(n as i32),
                Arg::I32(h as i32),
                Arg::I32(hkv as i32),
                Arg::I32(hd as i32),
                Arg::F32(scale),
                Arg::I32(window as i32),
            ],
        )
        .unwrap();
        let got = out.to_f32(n * h * hd).unwrap();
        let mut worst = 0f64;
        for t in 0..n {
            let (p, s0) = (pos[t] as usize, first[t] as usize);
            let shared = pos[s0] as usize;
            let row = |kp: usize| -> &[f32] {
                if kp < shared {
                    &prefix[kp * s..(kp + 1) * s]
                } else {
                    &qkv[(s0 + kp - shared) * s..(s0 + kp - shared + 1) * s]
                }
            };
            let lo = if window > 0 {
                (p + 1).saturating_sub(window)
            } else {
                0
            };
            for head in 0..h {
                let kvh = head / (h / hkv);
                let q = &qkv[t * s + head * hd..t * s + (head + 1) * hd];
                let ks: Vec<&[f32]> = (lo..=p)
                    .map(|kp| &row(kp)[h * hd + kvh * hd..][..hd])
                    .collect();
                let vs: Vec<&[f32]> = (lo..=p)
                    .map(|kp| &row(kp)[(h + hkv) * hd + kvh * hd..][..hd])
                    .collect();
                let want = attention_ref(q, &ks, &vs, scale as f64);
                for (i, w) in want.iter().enumerate() {
                    let g = got[t * h * hd + head * hd + i] as f64;
                    worst = worst.max((g - w).abs());
                }
            }
        }
        assert!(worst < 2e-5, "window {window}: worst difference {worst}");
    }
}

/// Per-token target log-probs of each view on the CPU (`Precision::Exact`).
fn cpu_view_logprobs(model: &Model, views: &[GpuView]) -> Vec<Vec<f64>> {
    let rt = Runtime::new(2, Precision::Exact);
    views
        .iter()
        .map(|v| {
            let mut cache = model.new_cache(v.ids.len());
            let hidden = model
                .forward(&rt, std::slice::from_mut(&mut cache), &[v.ids])
                .unwrap();
            let d = model.config.d_model;
            let rows: Vec<f32> = hidden[(v.n_prompt - 1) * d..(v.ids.len() - 1) * d].to_vec();
            head_logprobs(&model.output_weight(), &rt, &rows, &v.ids[v.n_prompt..])
        })
        .collect()
}

/// A prefix, and views of 8..60 tokens that continue parts of it (including
/// none), longer than Mistral's window of 16.
/// A view as owned parts: ids, prompt length, tokens shared with the prefix.
type OwnedView = (Vec<u32>, usize, usize);

fn test_views(model: &Model) -> (Vec<u32>, Vec<OwnedView>) {
    let tok = &model.tokenizer;
    let prefix = tok
        .encode(
            "<|im_start|>system\nYou are a careful assistant.<|im_end|>\n<|im_start|>user\n",
            false,
            true,
        )
        .unwrap();
    let texts = [
        "Name three primary colours and say why mixing them gives brown.",
        "Write a haiku about the sea.",
        "What is 17 multiplied by 23? Explain each step of the calculation in detail, please, so a child could follow.",
        "Hi.",
    ];
    let mut views = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let keep = [prefix.len(), 3, 0, prefix.len() - 1][i];
        let mut ids = prefix[..keep].to_vec();
        let body = tok.encode(text, false, true).unwrap();
        let n_prompt = ids.len() + body.len() / 2 + 1;
        ids.extend(body);
        ids.extend(
            tok.encode(
                " The answer follows from the question as asked.",
                false,
                true,
            )
            .unwrap(),
        );
        let shared = keep.min(n_prompt - 1);
        views.push((ids, n_prompt, shared));
    }
    (prefix, views)
}

fn as_views(v: &[OwnedView]) -> Vec<GpuView<'_>> {
    v.iter()
        .map(|(ids, n_prompt, shared)| GpuView {
            ids,
            n_prompt: *n_prompt,
            shared: *shared,
        })
        .collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

/// The largest difference of per-view mean log-probs (what §3's scores use).
fn max_mean_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    a.iter()
        .zip(b)
        .map(|(x, y)| (mean(x) - mean(y)).abs())
        .fold(0.0, f64::max)
}

/// The tiny Mistral (sliding window 16, GQA) from GGUF (interleaved RoPE)
/// and from its Hugging Face folder (halves), both precisions, against the
/// CPU's exact forward pass; and packing must not change a view's numbers.
#[test]
fn gpu_side_matches_the_cpu_on_both_rope_layouts() {
    for rel in ["mistral-tiny/model.gguf", "mistral-tiny/hf"] {
        let Some(path) = fixture(rel) else { return };
        let model = Model::load(&path).unwrap();
        let (prefix, owned) = test_views(&model);
        let views = as_views(&owned);
        let want = cpu_view_logprobs(&model, &views);
        // bf16 on random weights: per token about 0.07 nats at worst (its
        // logits are far less peaked than a trained model's), view means
        // within the 0.02.
        for (precision, tol, tol_mean) in [
            (Precision::Exact, 1e-4, 1e-5),
            (Precision::Bf16, 0.15, 0.02),
        ] {
            let mut side = GpuSide::new(device(GIB), &model, precision, &prefix).unwrap();
            let packed = side.run(&views).unwrap();
            let d = max_diff(&packed, &want);
            let dm = max_mean_diff(&packed, &want);
            eprintln!(
                "{rel} {}: max |GPU - CPU| {d:.2e} nats per token, {dm:.2e} per view mean",
                precision.name()
            );
            assert!(
                d < tol && dm < tol_mean,
                "{rel} {}: {d} {dm}",
                precision.name()
            );
            // One view per batch gives the same numbers as the packed batch.
            side.set_max_batch_tokens(1);
            let single = side.run(&views).unwrap();
            let moved = max_diff(&single, &packed);
            assert!(
                moved <= packing_tolerance(precision),
                "{rel}: packing moved a log-prob by {moved}"
            );
        }
    }
}

/// Real weights (SmolLM2, Q4_1 with a Q8_0/Q6_K head) through the GPU path
/// in exact and bf16.
#[test]
fn gpu_side_matches_the_cpu_on_the_fixture_model() {
    let Some(path) = fixture("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let model = Model::load(&path).unwrap();
    let (prefix, mut owned) = test_views(&model);
    owned.truncate(2);
    let views = as_views(&owned);
    let want = cpu_view_logprobs(&model, &views);
    for (precision, tol) in [(Precision::Exact, 1e-4), (Precision::Bf16, 0.1)] {
        let mut side = GpuSide::new(device(4 * GIB), &model, precision, &prefix).unwrap();
        let got = side.run(&views).unwrap();
        let d = max_diff(&got, &want);
        let dm = max_mean_diff(&got, &want);
        eprintln!(
            "SmolLM2 {}: max per-token {d:.2e}, max per-view mean {dm:.2e}",
            precision.name()
        );
        assert!(d < tol, "{}: {d}", precision.name());
        assert!(
            dm < if precision == Precision::Exact {
                1e-4
            } else {
                0.02
            },
            "{}: {dm}",
            precision.name()
        );
    }
}

#[test]
fn an_impossible_allocation_is_an_error() {
    let gpu = device(GIB);
    let e = Buf::new(&gpu, 1 << 50, "allocating a petabyte")
        .err()
        .expect("no device has 1 PiB");
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, Error::GpuOutOfMemory { .. }), "{msg}");
    assert!(
        msg.contains("out of memory while allocating a petabyte"),
        "{msg}"
    );
    // The device is still usable afterwards.
    let b = Buf::from_f32(&gpu, &[1.0, 2.0], "t").unwrap();
    assert_eq!(b.to_f32(2).unwrap(), vec![1.0, 2.0]);
}

#[test]
fn memory_is_sized_and_running_out_is_an_error_not_a_crash() {
    if on_gpu() {
        eprintln!("skipped on a GPU: the emulator sets the memory size (an_impossible_allocation_is_an_error runs there)");
        return;
    }
    let Some(path) = fixture("mistral-tiny/model.gguf") else {
        return;
    };
    let model = Model::load(&path).unwrap();
    // Too little memory for the weights: a clear error naming the step.
    let e = GpuSide::new(emulator(1 << 20), &model, Precision::Exact, &[1, 2, 3])
        .err()
        .expect("1 MiB cannot hold the model");
    let msg = e.to_string();
    assert!(matches!(e, Error::GpuOutOfMemory { .. }), "{msg}");
    assert!(msg.contains("out of memory while allocating"), "{msg}");
    // Little room for activations: batches shrink to fit instead of failing,
    // with the same numbers.
    let (prefix, owned) = test_views(&model);
    let views = as_views(&owned);
    let mut big = GpuSide::new(device(GIB), &model, Precision::Exact, &prefix).unwrap();
    let want = big.run(&views).unwrap();
    let emu = Arc::new(Emulator::new(GIB));
    let mut small = GpuSide::new(emu.clone(), &model, Precision::Exact, &prefix).unwrap();
    // Room for about 20 tokens of activations and logits: several batches.
    let per_token = small.model.bytes_per_token() + 8192 * 4;
    emu.set_limit(emu.used() + 20 * per_token * 8 / 7);
    let total: usize = views.iter().map(|v| v.ids.len() - v.shared).sum();
    let targets: usize = views.iter().map(|v| v.ids.len() - v.n_prompt).sum();
    eprintln!(
        "views: {total} new tokens, {targets} targets; room for 20 tokens ({} bytes)",
        emu.free_memory().unwrap()
    );
    assert_eq!(max_diff(&small.run(&views).unwrap(), &want), 0.0);
    assert!(small.cap.is_none(), "sizing alone should have fitted");
    // A device that claims more than it has: batches fail, then shrink.
    emu.set_overstate(1 << 30);
    assert_eq!(max_diff(&small.run(&views).unwrap(), &want), 0.0);
    assert!(
        small.cap.is_some(),
        "the out-of-memory retry should have lowered the cap"
    );
    // Not even one view fits: the error says so.
    emu.set_limit(emu.used() + 1000);
    let e = small.run(&views).unwrap_err();
    assert!(matches!(e, Error::GpuOutOfMemory { .. }), "{e}");
    let tiny_model = GpuModel::upload(device(GIB), &model, Precision::Exact).unwrap();
    assert!(tiny_model.bytes_per_token() > 0);
}

#[test]
fn gpu_precisions_are_checked() {
    let Some(path) = fixture("mistral-tiny/model.gguf") else {
        return;
    };
    let model = Model::load(&path).unwrap();
    let e = GpuModel::upload(device(GIB), &model, Precision::Fast)
        .err()
        .unwrap();
    assert!(e.to_string().contains("fast is a CPU precision"), "{e}");
}

/// Asking for a GPU where there is none (or in a build without the `cuda`
/// feature) is an error that says what to do, never a panic.
#[test]
fn a_missing_gpu_is_a_clear_error() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("skipped: this machine has a GPU (scripts/check-gpu tests it)");
        return;
    }
    let e = match super::open(0) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened a GPU on a machine without /dev/nvidia0"),
    };
    eprintln!("{e}");
    assert!(e.starts_with("GPU cuda:0: "), "{e}");
    if cfg!(feature = "cuda") {
        assert!(e.contains("not found") || e.contains("CUDA"), "{e}");
    } else {
        assert!(e.contains("--features cuda"), "{e}");
    }
    // What `main-score inspect --device cuda` calls: errors too, never a panic.
    let e = super::libraries(0)
        .and_then(|_| super::device_report(0))
        .expect_err("no GPU here")
        .to_string();
    assert!(e.starts_with("GPU cuda:0: "), "{e}");
}

/// Libraries are looked for under cudarc's names in cudarc's order, so the
/// file checked is the file cudarc loads: `libcuda.so` (which may be a
/// toolkit's link stub) before `libcuda.so.1`.
#[cfg(feature = "cuda")]
#[test]
fn cuda_libraries_are_looked_for_in_cudarcs_order() {
    use super::driver::{candidates, LIBRARIES};
    for (what, stems) in LIBRARIES {
        let ours = candidates(stems);
        let cudarcs: Vec<String> = stems
            .iter()
            .flat_map(|s| cudarc::get_lib_name_candidates(s))
            .collect();
        assert_eq!(ours, cudarcs, "{what}");
    }
    let driver = candidates(LIBRARIES[0].1);
    let at = |n: &str| driver.iter().position(|c| c == n).unwrap();
    assert_eq!(driver[0], "libcuda.so");
    assert!(at("libcuda.so.13") < at("libcuda.so.1"));
    let lt = candidates(LIBRARIES[3].1);
    assert_eq!(lt[0], "libcublasLt.so");
}

#[cfg(feature = "cuda")]
#[test]
fn library_files_and_releases_are_read_from_proc_maps() {
    use super::driver::{mapped_files, release_of};
    let maps = "\
7f0000000000-7f0000001000 r--p 00000000 00:2a 123 /usr/local/cuda-13.0/lib64/libcublasLt.so.13.0.2.14
7f0000001000-7f0000002000 r-xp 00001000 00:2a 123 /usr/local/cuda-13.0/lib64/libcublasLt.so.13.0.2.14
7f0000002000-7f0000003000 r--p 00000000 00:2a 124 /usr/local/cuda-13.0/lib64/libcublas.so.13.0.2.14
7f0000003000-7f0000004000 r--p 00000000 00:2a 125 /opt/my libs/libcuda.so.580.159.04
7f0000004000-7f0000005000 rw-p 00000000 00:00 0 
7f0000005000-7f0000006000 r--p 00000000 00:2a 126 /usr/lib/x86_64-linux-gnu/libcudart.so.13.0.96
7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0                          [stack]
";
    assert_eq!(
        mapped_files(maps, "libcublas.so"),
        ["/usr/local/cuda-13.0/lib64/libcublas.so.13.0.2.14"]
    );
    assert_eq!(
        mapped_files(maps, "libcublasLt.so"),
        ["/usr/local/cuda-13.0/lib64/libcublasLt.so.13.0.2.14"]
    );
    assert_eq!(
        mapped_files(maps, "libcuda.so"),
        ["/opt/my libs/libcuda.so.580.159.04"]
    );
    assert!(mapped_files(maps, "libnvrtc.so").is_empty());
    assert_eq!(
        release_of("/usr/local/cuda-13.0/lib64/libcublasLt.so.13.0.2.14"),
        Some("13.0.2.14")
    );
    assert_eq!(release_of("/x/libcublas.so"), None);
}

/// Once the kernels are compiled, the NVRTC this process loaded is named
/// by its real file (what `inspect --device cuda` prints), and it is the
/// one cudarc's first candidate finds.
#[cfg(feature = "cuda")]
#[test]
fn the_loaded_nvrtc_is_named_by_its_file() {
    if !super::driver::nvrtc_present() {
        eprintln!("skipped: libnvrtc was not found (scripts/nvrtc-lib)");
        return;
    }
    super::driver::compile_kernels("compute_80", "test").unwrap_or_else(|e| panic!("{e}"));
    let files = super::driver::loaded_library_files();
    eprintln!("{files:?}");
    let nvrtc: Vec<&String> = files
        .iter()
        .filter(|(p, _)| *p == "libnvrtc.so")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(nvrtc.len(), 1, "{files:?}");
    assert!(std::path::Path::new(nvrtc[0]).is_file(), "{}", nvrtc[0]);
}

/// The kernel source compiles with NVRTC for the GPUs MAIN targets, so a
/// syntax error in kernels.cu is caught on a machine without a GPU.
/// NVRTC comes from PyPI's nvidia-cuda-nvrtc (scripts/test puts it on
/// LD_LIBRARY_PATH); without it the test says so and passes.
#[cfg(feature = "cuda")]
#[test]
fn kernels_compile_with_nvrtc() {
    if !super::driver::nvrtc_present() {
        eprintln!("skipped: libnvrtc was not found (pip install nvidia-cuda-nvrtc, then put its lib/ on LD_LIBRARY_PATH)");
        return;
    }
    // Ampere, Hopper (H100/H200) as cubins, and portable PTX.
    for arch in ["sm_80", "sm_90", "compute_80"] {
        let image = super::driver::compile_kernels(arch, "test").unwrap_or_else(|e| panic!("{e}"));
        assert!(image.len() > 1000, "{arch}: {} bytes", image.len());
        if arch.starts_with("compute") {
            let ptx = String::from_utf8_lossy(&image);
            for k in super::KERNELS {
                assert!(
                    ptx.contains(&format!(".entry {k}(")),
                    "{arch}: no entry {k}"
                );
            }
        }
        eprintln!("{arch}: {} bytes", image.len());
    }
    let e = super::driver::compile_kernels("sm_1", "test")
        .unwrap_err()
        .to_string();
    assert!(e.contains("compiling the kernels for sm_1"), "{e}");
}

/// NVRTC itself, with the options the GPU gets, emits no fused
/// multiply-add in the kernels the CPU oracle checks bit for bit or to
/// the last rounding (decoders, embedding, RMSNorm, RoPE, row gather); with
/// its default it does (so this test can see one). Kernels that call
/// `expf` keep the fused operations of CUDA's own `expf`, which the tests
/// bound by tolerance.
#[cfg(feature = "cuda")]
#[test]
fn nvrtc_fuses_no_multiply_add_into_the_exact_kernels() {
    if !super::driver::nvrtc_present() {
        eprintln!("skipped: libnvrtc was not found (scripts/nvrtc-lib)");
        return;
    }
    let fused_entries = |options: &[&str]| -> Vec<String> {
        let image = super::driver::compile_kernels_with("compute_90", options, "test")
            .unwrap_or_else(|e| panic!("{e}"));
        let ptx = String::from_utf8_lossy(&image).into_owned();
        let mut out = Vec::new();
        for k in super::KERNELS {
            let exact = ["dequant_", "embed_", "add_rmsnorm_", "rope", "gather_rows_"];
            if !exact.iter().any(|p| k.starts_with(p)) {
                continue;
            }
            let start = ptx
                .find(&format!(".entry {k}("))
                .unwrap_or_else(|| panic!("no entry {k}"));
            let body = &ptx[start..];
            let body = &body[..body[1..].find(".entry ").map_or(body.len(), |e| e + 1)];
            if body.contains("fma.") {
                out.push(k.to_string());
            }
        }
        out
    };
    let fused = fused_entries(super::NVRTC_OPTIONS);
    assert!(fused.is_empty(), "fused multiply-adds in {fused:?}");
    let default: Vec<&str> = super::NVRTC_OPTIONS
        .iter()
        .copied()
        .filter(|o| !o.starts_with("--fmad"))
        .collect();
    let fused = fused_entries(&default);
    eprintln!("NVRTC's default fuses in {fused:?}");
    assert!(
        fused.iter().any(|k| k == "dequant_q4_1_f32"),
        "NVRTC's default should fuse q * d + m: {fused:?}"
    );
}

/// The whole scorer on the GPU path (the emulator): every §3 field of real
/// pairs equals the CPU's within 1e-4 in exact, contrastive and per-token
/// detail included.
#[test]
fn scorer_on_the_gpu_path_gives_the_cpu_scores() {
    use crate::score::Pair;
    use crate::scorer::{Scorer, ScorerParams};
    let Some(path) = fixture("mistral-tiny/model.gguf") else {
        return;
    };
    let model = Arc::new(Model::load(&path).unwrap());
    let pairs = [
        Pair::new("Name a primary colour.", "Red."),
        Pair::new(
            "What is 2 + 2?",
            "2 + 2 = 4, because adding two and two gives four.",
        ),
        Pair::new("Translate 'cat' to French.", "Chat."),
        Pair::new(
            "Write a very short poem about rain on a tin roof at night.",
            "Drum of the dark, / tin sings under water, / sleep comes in the noise.",
        ),
    ];
    let params = ScorerParams {
        precision: Precision::Exact,
        negatives: 2,
        tokens: true,
        max_tokens: 40,
        ..ScorerParams::default()
    };
    let mut cpu = Scorer::new(model.clone(), None, params.clone()).unwrap();
    let want = cpu.score_batch(&pairs).unwrap();
    let mut gpu = Scorer::with_backend(model, None, params, Some(device(GIB))).unwrap();
    let got = gpu.score_batch(&pairs).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let fields = |s: &crate::score::PairScore| {
            [
                s.alignment,
                s.fwd_pmi,
                s.rev_pmi,
                s.fwd_cond,
                s.fwd_uncond,
                s.rev_cond,
                s.rev_uncond,
                s.semantic,
                s.structural,
                s.contrastive.unwrap(),
            ]
        };
        for (a, b) in fields(g).iter().zip(fields(w)) {
            assert!((a - b).abs() < 1e-4, "pair {i}: {a} vs {b}");
        }
        assert_eq!(g.truncated, w.truncated);
        assert_eq!(g.response_tokens, w.response_tokens);
        let (gd, wd) = (
            g.response_detail.as_ref().unwrap(),
            w.response_detail.as_ref().unwrap(),
        );
        assert_eq!(gd.len(), wd.len());
        assert!(gd
            .iter()
            .zip(wd)
            .all(|(a, b)| a.text == b.text && (a.cond - b.cond).abs() < 1e-4));
    }
    assert!(
        got.iter().any(|s| s.truncated),
        "max_tokens 40 should cut the poem"
    );
}
