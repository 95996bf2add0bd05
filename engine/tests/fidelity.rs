//! Fidelity of the forward pass on the real SmolLM2-135M-Instruct weights,
//! against an independent float64 numpy reference (tests/reference/
//! reference.py, golden values in tests/data/reference_f64.json) and against
//! llama.cpp (tests/reference/llamacpp_golden.py -> llamacpp_golden.json),
//! over ~4,800 tokens of varied text (tests/data/fidelity.txt).

mod common;

use common::*;
use main_engine::logprob::sequence_logprobs;
use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};

fn segments() -> Vec<String> {
    let text = std::fs::read_to_string(repo_file("tests/data/fidelity.txt")).expect("fidelity.txt");
    text.split("\n=====\n").map(str::to_string).collect()
}

/// Our log-probs for the golden token ids of every segment, pooled.
fn score_segments(
    model: &Model,
    precision: Precision,
    golden: &serde_json::Value,
) -> Vec<Vec<f64>> {
    let rt = Runtime::new(0, precision);
    golden["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seg| {
            let ids = ids_of(&seg["ids"]);
            sequence_logprobs(model, &rt, &ids)
                .unwrap()
                .into_iter()
                .skip(1)
                .map(|x| x.unwrap())
                .collect()
        })
        .collect()
}

fn reference_logprobs() -> Vec<Vec<f64>> {
    let r = read_json("tests/data/reference_f64.json");
    r["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| logprobs_of(&s["logprobs"]))
        .collect()
}

#[test]
fn tokenization_matches_llama_cpp_exactly() {
    let model = Model::load(&default_model()).unwrap();
    let golden = read_json("tests/data/llamacpp_golden.json");
    let segs = segments();
    let gsegs = golden["segments"].as_array().unwrap();
    assert_eq!(segs.len(), gsegs.len());
    for (i, (text, g)) in segs.iter().zip(gsegs).enumerate() {
        let ids = model
            .tokenizer
            .encode(text, model.tokenizer.add_bos_default(), false)
            .unwrap();
        assert_eq!(
            ids,
            ids_of(&g["ids"]),
            "segment {i}: token ids differ from llama.cpp"
        );
    }
}

#[test]
fn exact_mode_matches_float64_reference() {
    let model = Model::load(&default_model()).unwrap();
    let golden = read_json("tests/data/reference_f64.json");
    let ours: Vec<f64> = score_segments(&model, Precision::Exact, &golden).concat();
    let reference: Vec<f64> = reference_logprobs().concat();
    assert!(ours.len() >= 2000, "only {} tokens scored", ours.len());
    let (mean, max) = abs_diff(&ours, &reference);
    eprintln!(
        "exact vs f64 over {} tokens: mean |d| {mean:.2e}, max {max:.2e}",
        ours.len()
    );
    assert!(mean <= 0.002, "exact mode: mean |d| {mean} > 0.002 nats");
    assert!(max <= 0.02, "exact mode: max |d| {max} > 0.02 nats");
}

#[test]
fn fast_mode_matches_float64_reference_and_llama_cpp() {
    let model = Model::load(&default_model()).unwrap();
    let golden = read_json("tests/data/reference_f64.json");
    let ours: Vec<f64> = score_segments(&model, Precision::Fast, &golden).concat();
    let reference: Vec<f64> = reference_logprobs().concat();
    let (mean, max) = abs_diff(&ours, &reference);
    let (ppl, ref_ppl) = (pooled_ppl(&ours), pooled_ppl(&reference));
    let llama = read_json("tests/data/llamacpp_golden.json");
    let llama_ppl = llama["pooled_ppl"].as_f64().unwrap();
    eprintln!(
        "fast vs f64 over {} tokens: mean |d| {mean:.4}, max {max:.3}; ppl ours {ppl:.4}, f64 {ref_ppl:.4}, llama.cpp {llama_ppl:.4}",
        ours.len()
    );
    assert!(mean <= 0.04, "fast mode: mean |d| {mean} > 0.04 nats");
    assert!(
        (ppl / ref_ppl - 1.0).abs() <= 0.01,
        "fast mode: perplexity {ppl} vs f64 {ref_ppl}: more than 1% apart"
    );
    assert!(
        (ppl / llama_ppl - 1.0).abs() <= 0.015,
        "fast mode: perplexity {ppl} vs llama.cpp {llama_ppl}: more than 1.5% apart"
    );
}

/// Fast mode on float weights (the F32 safetensors copy of the same
/// weights): its one approximation is rounding the weights to 8-bit codes per
/// block of 32 as tiles are packed, on top of the fine activation codes. The
/// same bounds as fast mode on the GGUF.
#[test]
fn fast_mode_on_float_weights_matches_float64_reference() {
    let model = Model::load(&fixture("smollm2-f32")).unwrap();
    let golden = read_json("tests/data/reference_f64.json");
    let ours: Vec<f64> = score_segments(&model, Precision::Fast, &golden).concat();
    let reference: Vec<f64> = reference_logprobs().concat();
    let (mean, max) = abs_diff(&ours, &reference);
    let (ppl, ref_ppl) = (pooled_ppl(&ours), pooled_ppl(&reference));
    eprintln!(
        "fast on F32 weights vs f64 over {} tokens: mean |d| {mean:.4}, max {max:.3}; ppl ours {ppl:.4}, f64 {ref_ppl:.4}",
        ours.len()
    );
    assert!(
        mean <= 0.04,
        "fast mode, float weights: mean |d| {mean} > 0.04 nats"
    );
    assert!(
        (ppl / ref_ppl - 1.0).abs() <= 0.01,
        "fast mode, float weights: perplexity {ppl} vs f64 {ref_ppl}: more than 1% apart"
    );
}

#[test]
fn gguf_and_dequantized_safetensors_agree() {
    let gguf = Model::load(&default_model()).unwrap();
    let hf = Model::load(&fixture("smollm2-f32")).unwrap();
    let rt = Runtime::new(0, Precision::Exact);
    let golden = read_json("tests/data/llamacpp_golden.json");
    for seg in golden["segments"].as_array().unwrap().iter().take(2) {
        let ids = ids_of(&seg["ids"]);
        let ids = &ids[..ids.len().min(300)];
        let a: Vec<f64> = sequence_logprobs(&gguf, &rt, ids)
            .unwrap()
            .into_iter()
            .skip(1)
            .map(|x| x.unwrap())
            .collect();
        let b: Vec<f64> = sequence_logprobs(&hf, &rt, ids)
            .unwrap()
            .into_iter()
            .skip(1)
            .map(|x| x.unwrap())
            .collect();
        let (mean, max) = abs_diff(&a, &b);
        eprintln!("GGUF Q4_1 vs F32 safetensors: mean |d| {mean:.2e}, max {max:.2e}");
        assert!(
            max <= 1e-4,
            "GGUF and safetensors copies differ by {max} nats"
        );
    }
}

#[test]
fn sliding_window_mistral_matches_float64_reference() {
    let golden = read_json("tests/data/mistral_tiny_f64.json");
    for path in ["mistral-tiny/model.gguf", "mistral-tiny/hf"] {
        let model = Model::load(&fixture(path)).unwrap();
        assert_eq!(
            model.config.sliding_window,
            Some(16),
            "{path}: sliding window not read"
        );
        let rt = Runtime::new(0, Precision::Exact);
        let mut all = (Vec::new(), Vec::new(), Vec::new());
        for seg in golden["segments"].as_array().unwrap() {
            let ids = ids_of(&seg["ids"]);
            let ours: Vec<f64> = sequence_logprobs(&model, &rt, &ids)
                .unwrap()
                .into_iter()
                .skip(1)
                .map(|x| x.unwrap())
                .collect();
            all.0.extend(ours);
            all.1.extend(logprobs_of(&seg["logprobs"]));
            all.2.extend(logprobs_of(&seg["logprobs_no_window"]));
        }
        let (mean, max) = abs_diff(&all.0, &all.1);
        let (mean_nw, _) = abs_diff(&all.0, &all.2);
        eprintln!(
            "{path}: vs f64 mean |d| {mean:.2e} max {max:.2e}; vs no-window reference {mean_nw:.3}"
        );
        assert!(
            mean <= 0.002 && max <= 0.02,
            "{path}: mean {mean}, max {max}"
        );
        assert!(
            mean_nw > 0.1,
            "{path}: the window made no difference ({mean_nw})"
        );
    }
}
