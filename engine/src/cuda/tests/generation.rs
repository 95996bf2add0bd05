//! Batched generation on the GPU path (`decode::GpuDecoder` driven by
//! `generate::generate_batch_with`) against one-at-a-time GPU decoding and
//! against the CPU, token for token under greedy decoding; and a KV cache
//! that does not fit, an error naming it.

use super::*;
use crate::cuda::decode::GpuDecoder;
use crate::generate::{chat_stop_ids, generate_batch, generate_batch_on, BatchParams, Request};
use crate::template::ChatTemplate;

/// Chat prompts of different lengths, rendered with `model`'s template.
fn prompts(model: &Model, questions: &[&str]) -> Vec<Vec<u32>> {
    let tpl = ChatTemplate::for_model(model).unwrap();
    let tok = &model.tokenizer;
    questions
        .iter()
        .map(|q| {
            let text = tpl.render_prompt(q).unwrap();
            tok.encode(&text, tok.add_bos_default(), true).unwrap()
        })
        .collect()
}

/// Greedy requests, one budget each, ended by the model's end of turn.
fn requests(model: &Model, prompts: &[Vec<u32>], max_new: &[usize]) -> Vec<Request> {
    let stop = chat_stop_ids(model, &ChatTemplate::for_model(model).unwrap()).unwrap();
    prompts
        .iter()
        .zip(max_new)
        .map(|(p, &n)| Request {
            stop_ids: stop.clone(),
            ..Request::new(p.clone(), n)
        })
        .collect()
}

/// Greedy tokens on the GPU path: all the requests with `params`.
fn gpu_tokens(
    model: &Model,
    gpu: &mut GpuModel,
    reqs: Vec<Request>,
    params: BatchParams,
) -> Vec<Vec<u32>> {
    let mut dec = GpuDecoder::new(model, gpu).unwrap();
    generate_batch_on(&mut dec, reqs, params)
        .unwrap()
        .into_iter()
        .map(|g| g.tokens)
        .collect()
}

/// Each request alone on the GPU path (one sequence per run).
fn gpu_one_at_a_time(model: &Model, gpu: &mut GpuModel, reqs: Vec<Request>) -> Vec<Vec<u32>> {
    reqs.into_iter()
        .map(|r| gpu_tokens(model, gpu, vec![r], BatchParams::default()).remove(0))
        .collect()
}

fn cpu_tokens(model: &Model, reqs: Vec<Request>) -> Vec<Vec<u32>> {
    let rt = Runtime::new(2, Precision::Exact);
    generate_batch(model, &rt, reqs, BatchParams::default())
        .unwrap()
        .into_iter()
        .map(|g| g.tokens)
        .collect()
}

/// The tiny Mistral (GQA, sliding window 16): prompts of 20-40 tokens and
/// up to 9 new ones run past the window, so decode attention must drop the
/// oldest keys as the CPU does. Budgets differ, so sequences leave at
/// different steps, and with two at a time the third joins mid-run
/// (continuous batching), its prompt prefilled while the others decode;
/// the fourth repeats the first's prompt and continues a copy of its cache.
/// Exact: GPU batched == GPU alone == CPU, token for token. bf16: batched
/// == alone (on the emulator each row is computed alone, so exactly).
#[test]
fn gpu_generation_matches_one_at_a_time_and_the_cpu_with_a_sliding_window() {
    let Some(path) = fixture("mistral-tiny/model.gguf") else {
        return;
    };
    let model = Model::load(&path).unwrap();
    assert_eq!(model.config.sliding_window, Some(16));
    let ps = prompts(
        &model,
        &[
            "Name three primary colours and say why mixing them gives brown.",
            "Hi.",
            "What is 17 multiplied by 23? Explain each step of the calculation.",
        ],
    );
    assert!(
        ps.iter().any(|p| p.len() > 16),
        "no prompt passes the window of 16"
    );
    // A repeated prompt takes a copy of the first one's cache
    // (`fork_cache`): with two at a time, while the first decodes.
    let mut ps = ps;
    ps.push(ps[0].clone());
    let max_new = [9, 3, 6, 7];
    let want = cpu_tokens(&model, requests(&model, &ps, &max_new));
    for (i, w) in want.iter().enumerate() {
        assert_eq!(w.len(), max_new[i], "sequence {i} stopped early: {w:?}");
    }
    for precision in [Precision::Exact, Precision::Bf16] {
        let mut gpu = GpuModel::upload(device(GIB), &model, precision).unwrap();
        let alone = gpu_one_at_a_time(&model, &mut gpu, requests(&model, &ps, &max_new));
        for params in [
            BatchParams::default(),
            // Two at a time, and a prefill budget below every prompt: the
            // GPU prefills whole prompts, one per call.
            BatchParams {
                max_batch: 2,
                prefill_tokens: 5,
            },
        ] {
            let got = gpu_tokens(&model, &mut gpu, requests(&model, &ps, &max_new), params);
            assert_eq!(got, alone, "{}: batched {params:?}", precision.name());
        }
        if precision == Precision::Exact {
            assert_eq!(alone, want, "exact: the GPU path against the CPU");
        } else {
            let same = alone
                .iter()
                .zip(&want)
                .map(|(a, w)| a.iter().zip(w).take_while(|(x, y)| x == y).count())
                .sum::<usize>();
            let total: usize = want.iter().map(Vec::len).sum();
            eprintln!("bf16: {same} of {total} greedy tokens as the CPU's exact before a first difference");
        }
    }
}

/// Real weights (SmolLM2 Q4_1): exact GPU batched generation gives the
/// CPU's greedy tokens. Short plain-text prompts and a few tokens only (the
/// emulator's matrix products are plain loops).
#[test]
fn gpu_generation_matches_the_cpu_on_the_fixture_model() {
    let Some(path) = fixture("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let model = Model::load(&path).unwrap();
    let tok = &model.tokenizer;
    let ps: Vec<Vec<u32>> = ["The capital of France is", "1, 2, 3, 4,"]
        .iter()
        .map(|t| tok.encode(t, tok.add_bos_default(), false).unwrap())
        .collect();
    let max_new = [4, 3];
    let want = cpu_tokens(&model, requests(&model, &ps, &max_new));
    let mut gpu = GpuModel::upload(device(4 * GIB), &model, Precision::Exact).unwrap();
    let got = gpu_tokens(
        &model,
        &mut gpu,
        requests(&model, &ps, &max_new),
        BatchParams::default(),
    );
    assert_eq!(got, want);
    eprintln!("SmolLM2: {}", tok.decode(&got[1]));
}

/// A KV cache the device cannot hold is an error that names it, and the
/// device stays usable: after a smaller request succeeds.
#[test]
fn a_kv_cache_that_does_not_fit_is_a_clear_error() {
    if on_gpu() {
        eprintln!("skipped on a GPU: the emulator sets the memory size");
        return;
    }
    let Some(path) = fixture("mistral-tiny/model.gguf") else {
        return;
    };
    let model = Model::load(&path).unwrap();
    let emu = Arc::new(Emulator::new(GIB));
    let mut gpu = GpuModel::upload(emu.clone(), &model, Precision::Exact).unwrap();
    let ps = prompts(&model, &["Hi."]);
    // One position of a cache: every layer's QKV row, f32.
    let per_pos = model.config.n_layers * gpu.qkv_width() * 4;
    // Room for a cache of 100 positions, not of 400.
    emu.set_limit(emu.used() + 100 * per_pos);
    let e = generate_batch_on(
        &mut GpuDecoder::new(&model, &mut gpu).unwrap(),
        requests(&model, &ps, &[400]),
        BatchParams::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, Error::GpuOutOfMemory { .. }), "{msg}");
    assert!(
        msg.contains("the KV cache of a sequence") && msg.contains("positions"),
        "{msg}"
    );
    // Nothing leaked: the same device then runs a request that fits, with
    // room for its activations.
    emu.set_limit(emu.used() + 100 * per_pos + (64 << 20));
    let ok = generate_batch_on(
        &mut GpuDecoder::new(&model, &mut gpu).unwrap(),
        requests(&model, &ps, &[2]),
        BatchParams::default(),
    )
    .unwrap();
    assert_eq!(ok[0].tokens.len(), 2);
}

/// A scorer on the GPU generates there (its reverse guesses and the
/// forward model's answers, what the trainer's synthesis asks of it): the
/// CPU scorer's texts in exact.
#[test]
fn the_scorer_generates_on_its_gpu() {
    use crate::sample::{Sampler, SamplerParams};
    use crate::scorer::{Scorer, ScorerParams};
    let Some(path) = fixture("mistral-tiny/model.gguf") else {
        return;
    };
    let model = Arc::new(Model::load(&path).unwrap());
    let params = ScorerParams {
        precision: Precision::Exact,
        max_tokens: 64,
        ..ScorerParams::default()
    };
    let mut cpu = Scorer::new(model.clone(), None, params.clone()).unwrap();
    let mut gpu = Scorer::with_backend(model, None, params, Some(device(GIB))).unwrap();
    let responses = ["Red.", "2 + 2 = 4, because adding two and two gives four."];
    let greedy = || vec![Sampler::new(SamplerParams::default()).unwrap(); 2];
    let want = cpu.guess_instructions(&responses, 5, greedy()).unwrap();
    assert!(want.iter().all(|g| !g.is_empty()), "{want:?}");
    assert_eq!(
        gpu.guess_instructions(&responses, 5, greedy()).unwrap(),
        want
    );
    let asked = ["Name a colour.", "What is 2 + 2?"];
    let want = cpu.answers(&asked, 4).unwrap();
    assert_eq!(gpu.answers(&asked, 4).unwrap(), want);
}
