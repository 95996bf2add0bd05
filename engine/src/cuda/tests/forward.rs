//! The packed forward pass against the CPU's on the fixture models, and
//! its memory: sized up front, running out an error, not a crash.

use super::*;

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
