//! `main-train export`: a trained model folder written as GGUF (F16, Q8_0,
//! Q4_K) loads in the engine and gives the log-probs of the original.

mod common;

use std::path::Path;

use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};
use main_engine::quant::DType;
use main_engine::views::build_view;

fn mean_abs_diff(a: &Model, b: &Model) -> f64 {
    let rt = Runtime::new(2, Precision::Exact);
    let tpl = main_engine::template::ChatTemplate::for_model(a).unwrap();
    let (mut sum, mut n) = (0.0, 0);
    for p in common::alpaca_pairs(2) {
        let v = build_view(&a.tokenizer, &tpl, &p.instruction, &p.response, 128).unwrap();
        let la = main_engine::logprob::sequence_logprobs(a, &rt, &v.ids).unwrap();
        let lb = main_engine::logprob::sequence_logprobs(b, &rt, &v.ids).unwrap();
        for (x, y) in la[v.n_prompt..].iter().zip(&lb[v.n_prompt..]) {
            sum += (x.unwrap() - y.unwrap()).abs();
            n += 1;
        }
    }
    sum / n as f64
}

fn export(model: &Path, ty: DType, out: &Path) -> Model {
    main_trainer::export::export_gguf(model, &common::fixture("mistral-tiny/model.gguf"), ty, out)
        .unwrap();
    let m = Model::load(out).unwrap();
    // Matrices really are in the asked type (rows of 256 for the k-quants).
    let q = m
        .tensors()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(q.dtype, ty);
    m
}

#[test]
fn exported_gguf_matches_the_trained_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::tiny_config("mistral");
    config.d_model = 256;
    config.d_ff = 512;
    config.head_dim = 64;
    let dir = tmp.path().join("m");
    main_trainer::model::write_random(
        &dir,
        &config,
        false,
        &common::fixture("smollm2-f32"),
        0.08,
        9,
    )
    .unwrap();
    let hf = Model::load(&dir).unwrap();
    for (ty, tol) in [(DType::F16, 5e-3), (DType::Q8_0, 0.1), (DType::Q4_K, 1.0)] {
        let out = tmp.path().join(format!("m-{}.gguf", ty.name()));
        let g = export(&dir, ty, &out);
        assert_eq!(g.config.sliding_window, Some(8));
        let d = mean_abs_diff(&hf, &g);
        eprintln!("{}: mean |Δ log-prob| {d:.2e}", ty.name());
        assert!(d <= tol, "{}: mean |Δ| {d} > {tol}", ty.name());
    }
}

#[test]
fn export_refuses_a_vocabulary_of_another_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), "llama", true, 1);
    let gguf = common::fixture("llama-vocab/ggml-vocab-llama-spm.gguf");
    let err =
        main_trainer::export::export_gguf(&dir, &gguf, DType::F16, &tmp.path().join("x.gguf"))
            .expect_err("another vocabulary must be refused");
    assert!(err.to_string().contains("another tokenizer"), "{err}");
}
