//! One model, two implementations: the trainer's candle graph and the
//! engine's forward pass must give the same per-token log-probabilities on
//! the same weights (issue 6: mean |Δ| <= 1e-3 in f32).

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};
use main_engine::views::{build_view, reverse_content};
use main_trainer::model::{Batch, TrainModel};

/// Mean and max |Δ| between the two implementations over the target tokens
/// of a few real pairs in both directions.
fn compare(dir: &Path, n_pairs: usize) -> (f64, f64, usize) {
    let tm = TrainModel::load(dir, &Device::Cpu, DType::F32).unwrap();
    let em = Model::load(dir).unwrap();
    let rt = Runtime::new(2, Precision::Exact);
    let mut seqs = Vec::new();
    for p in common::alpaca_pairs(n_pairs) {
        for (content, target) in [
            (p.instruction.clone(), p.response.clone()),
            (reverse_content(&p.response), p.instruction.clone()),
        ] {
            seqs.push(build_view(tm.tokenizer(), &tm.template, &content, &target, 192).unwrap());
        }
    }
    let refs: Vec<(&[u32], usize)> = seqs.iter().map(|v| (&v.ids[..], v.n_prompt)).collect();
    let batch = Batch::new(&refs, &Device::Cpu).unwrap();
    let ours = tm
        .target_logprobs(&batch)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut engine = Vec::new();
    for v in &seqs {
        let lps = main_engine::logprob::sequence_logprobs(&em, &rt, &v.ids).unwrap();
        engine.extend(lps[v.n_prompt..].iter().map(|x| x.unwrap()));
    }
    assert_eq!(ours.len(), engine.len());
    let diffs: Vec<f64> = ours
        .iter()
        .zip(&engine)
        .map(|(a, b)| (*a as f64 - b).abs())
        .collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let max = diffs.iter().cloned().fold(0.0, f64::max);
    (mean, max, diffs.len())
}

#[test]
fn smollm2_f32_logprobs_agree_with_the_engine() {
    let (mean, max, n) = compare(&common::fixture("smollm2-f32"), 3);
    eprintln!("smollm2-f32: {n} targets, mean |Δ| {mean:.2e}, max {max:.2e}");
    assert!(n > 100);
    assert!(mean <= 1e-3, "mean |Δ log-prob| {mean} > 1e-3 (max {max})");
}

#[test]
fn tiny_mistral_with_sliding_window_agrees_with_the_engine() {
    // The fixture's window (16) is shorter than these sequences, so the
    // window is exercised.
    let (mean, max, n) = compare(&common::fixture("mistral-tiny/hf"), 3);
    eprintln!("mistral-tiny: {n} targets, mean |Δ| {mean:.2e}, max {max:.2e}");
    assert!(mean <= 1e-3, "mean |Δ log-prob| {mean} > 1e-3 (max {max})");
}

#[test]
fn llama3_rope_scaling_and_untied_head_agree_with_the_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::tiny_config("llama");
    // LLaMA-3.1's scaling, on a head small enough that some frequencies are
    // scaled, some kept and some smoothed.
    let scaling = main_engine::config::Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position: 8192,
    };
    config.rope_theta = 500000.0;
    config.rope_freq_factors = Some(scaling.freq_factors(config.head_dim, config.rope_theta));
    let dir = tmp.path().join("llama3");
    main_trainer::model::write_random(
        &dir,
        &config,
        false,
        &common::fixture("smollm2-f32"),
        0.3,
        7,
    )
    .unwrap();
    // Larger weights than the default init, so the distributions are far
    // from uniform and a wrong RoPE would show.
    let (mean, max, _) = compare(&dir, 2);
    eprintln!("tiny llama3: mean |Δ| {mean:.2e}, max {max:.2e}");
    assert!(mean <= 1e-3, "mean |Δ log-prob| {mean} > 1e-3 (max {max})");
    let tm = TrainModel::load(&dir, &Device::Cpu, DType::F32).unwrap();
    assert!(!tm.tied);
    assert!(tm.config.rope_freq_factors.is_some());
}
