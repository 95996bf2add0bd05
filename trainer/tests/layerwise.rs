//! The layerwise step (per-layer recomputation, query-block attention over
//! packed sequences, the chunked head) against the whole-graph autograd
//! path on the same sequences unpacked (right-padded batch), on tiny random
//! models: LLaMA with a tied head and GQA, Mistral with an untied head, GQA
//! and a sliding window shorter than the sequences.
//!
//! Tolerances: in f64 the two paths differ by rounding only, and both land
//! their gradients on the f32 masters, so each gradient tensor must agree
//! to 1e-5 of its largest entry (f32 rounding plus margin) and the losses
//! to 1e-10 relative. In f32, packed against one sequence at a time: 1e-4.

mod common;

use candle_core::{DType, Device, Tensor};
use main_trainer::data::Example;
use main_trainer::data::{Direction, WeightedPair};
use main_trainer::head::HeadChunks;
use main_trainer::layerwise::{self, GradSink, Settings};
use main_trainer::model::{Batch, TrainModel};
use main_trainer::pack::Packed;
use main_trainer::sft::{train, TrainConfig};

/// Keeps every gradient, summing repeats (a test checks there are none).
struct Collect(Vec<Option<Tensor>>, Vec<usize>);

impl GradSink for Collect {
    fn take(&mut self, param: usize, grad: Tensor) -> main_trainer::Result<()> {
        self.1[param] += 1;
        self.0[param] = Some(match self.0[param].take() {
            None => grad,
            Some(a) => (a + grad).unwrap(),
        });
        Ok(())
    }
}

/// Three sequences of lengths 19, 7, 13 with prompts, weights 1, 0.5, 2.
fn examples(vocab: u32) -> Vec<Example> {
    let mut s = 12345u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) % vocab as u64) as u32
    };
    [(19usize, 5usize, 1.0), (7, 2, 0.5), (13, 9, 2.0)]
        .into_iter()
        .map(|(len, n_prompt, weight)| Example {
            ids: (0..len).map(|_| next()).collect(),
            n_prompt,
            weight,
        })
        .collect()
}

/// `-sum w * logprob` and every gradient by whole-graph autograd on a padded batch.
fn whole_graph(model: &TrainModel, exs: &[Example]) -> (f64, Vec<Tensor>) {
    let seqs: Vec<(&[u32], usize)> = exs.iter().map(|e| (&e.ids[..], e.n_prompt)).collect();
    let batch = Batch::new(&seqs, &model.device).unwrap();
    let w: Vec<f64> = batch.target_seq.iter().map(|&s| exs[s].weight).collect();
    let lp = model.target_logprobs(&batch).unwrap();
    let w = Tensor::from_vec(w, batch.n_targets(), &model.device)
        .unwrap()
        .to_dtype(lp.dtype())
        .unwrap();
    let loss = (lp * w).unwrap().sum_all().unwrap().neg().unwrap();
    let g = loss.backward().unwrap();
    let grads = model
        .params
        .iter()
        .map(|p| g.get(p.var.as_tensor()).unwrap().clone())
        .collect();
    let loss = loss.to_dtype(DType::F64).unwrap().to_scalar().unwrap();
    (loss, grads)
}

fn layerwise_grads(model: &TrainModel, exs: &[&Example], set: &Settings) -> (f64, Vec<Tensor>) {
    let p = Packed::new(exs, |e| e.weight).unwrap();
    let n = model.params.len();
    let mut sink = Collect(vec![None; n], vec![0; n]);
    let loss = layerwise::loss_and_grads(model, &p, 1.0, set, &mut sink).unwrap();
    assert!(
        sink.1.iter().all(|&c| c == 1),
        "each weight's gradient handed over exactly once: {:?}",
        sink.1
    );
    (loss, sink.0.into_iter().map(Option::unwrap).collect())
}

fn assert_close(model: &TrainModel, a: &[Tensor], b: &[Tensor], rel: f64) {
    for ((p, x), y) in model.params.iter().zip(a).zip(b) {
        assert_eq!(x.dims(), y.dims(), "{}", p.name);
        let max = |t: Tensor| -> f64 {
            t.to_dtype(DType::F64)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let scale = max(y.clone());
        let diff = max((x - y).unwrap());
        assert!(
            diff <= rel * scale + 1e-12,
            "{}: max |diff| {diff:e} vs max |grad| {scale:e}",
            p.name
        );
        assert!(scale > 0.0, "{}: zero gradient", p.name);
    }
}

fn against_whole_graph(arch: &str, tied: bool, set: Settings) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), arch, tied, 3);
    let model = TrainModel::load(&dir, &Device::Cpu, DType::F64).unwrap();
    let exs = examples(model.config.vocab_size as u32);
    let (want_loss, want) = whole_graph(&model, &exs);
    let refs: Vec<&Example> = exs.iter().collect();
    let (loss, got) = layerwise_grads(&model, &refs, &set);
    eprintln!("{arch}: loss {loss} vs whole graph {want_loss}");
    assert!((loss - want_loss).abs() <= 1e-10 * want_loss.abs());
    assert_close(&model, &got, &want, 1e-5);
}

#[test]
fn llama_tied_gqa_layerwise_packed_equals_whole_graph() {
    // Query blocks of 4 rows: ragged last blocks in every sequence; head
    // chunks that do not divide the targets or the vocabulary.
    let set = Settings {
        q_block: 4,
        head: HeadChunks {
            rows: 7,
            vocab: 5000,
        },
    };
    against_whole_graph("llama", true, set);
}

#[test]
fn mistral_window_untied_layerwise_packed_equals_whole_graph() {
    // Window 8 < 19-token sequence: blocks of 3 rows read keys from up to
    // 7 rows back; one-row blocks exercise the smallest block.
    for q_block in [3, 1, 64] {
        let set = Settings {
            q_block,
            head: HeadChunks::default(),
        };
        against_whole_graph("mistral", false, set);
    }
}

/// Packed in f32 (the CPU training dtype): the same loss and gradients as
/// the sequences stepped one at a time and summed.
#[test]
fn packed_equals_one_sequence_at_a_time_in_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), "mistral", true, 4);
    let model = TrainModel::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let exs = examples(model.config.vocab_size as u32);
    let set = Settings {
        q_block: 5,
        head: HeadChunks::default(),
    };
    let refs: Vec<&Example> = exs.iter().collect();
    let (loss, got) = layerwise_grads(&model, &refs, &set);
    let (mut want_loss, mut want): (f64, Vec<Tensor>) = (0.0, Vec::new());
    for e in &exs {
        let (l, g) = layerwise_grads(&model, &[e], &set);
        want_loss += l;
        want = if want.is_empty() {
            g
        } else {
            want.iter().zip(g).map(|(a, b)| (a + b).unwrap()).collect()
        };
    }
    assert!(
        (loss - want_loss).abs() <= 1e-5 * want_loss,
        "{loss} vs {want_loss}"
    );
    assert_close(&model, &got, &want, 1e-4);
    // The forward-only NLL (eval) agrees with the training step's loss.
    let p = Packed::new(&refs, |e| e.weight).unwrap();
    let nll = layerwise::target_nll(&model, &p, &set).unwrap();
    let weighted: f64 = nll.iter().zip(&p.weights).map(|(n, w)| n * w).sum();
    assert!(
        (weighted - loss).abs() <= 1e-5 * loss,
        "{weighted} vs {loss}"
    );
}

fn run_losses(
    model: &TrainModel,
    cfg: &TrainConfig,
    run: &std::path::Path,
) -> Vec<serde_json::Value> {
    let pairs: Vec<WeightedPair> = common::alpaca_pairs(16)
        .into_iter()
        .map(|p| WeightedPair::new(p, 1.0))
        .collect();
    train(model, &pairs, Direction::Forward, cfg, run, false, false).unwrap();
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("loss").is_some())
        .collect()
}

fn sft_config() -> TrainConfig {
    TrainConfig {
        steps: 3,
        batch_size: 4,
        lr: 1e-2,
        warmup: 1,
        max_tokens: 96,
        eval_fraction: 0.0,
        ..Default::default()
    }
}

/// `sft` through the layerwise step and through whole-graph autograd: the
/// same losses and gradient norms step after step (f32, 1e-4 relative),
/// with gradient accumulation.
#[test]
fn sft_recompute_true_and_false_train_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), "mistral", false, 5);
    let cfg = TrainConfig {
        grad_accum: 2,
        ..sft_config()
    };
    let mut runs = Vec::new();
    for recompute in [true, false] {
        let model = TrainModel::load(&dir, &Device::Cpu, DType::F32).unwrap();
        let cfg = TrainConfig {
            recompute,
            ..cfg.clone()
        };
        runs.push(run_losses(
            &model,
            &cfg,
            &tmp.path().join(format!("run-{recompute}")),
        ));
    }
    assert_eq!(runs[0].len(), 3);
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        for key in ["loss", "grad_norm"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-4 * y.abs(), "{key}: {x} vs {y}");
        }
    }
}

/// The optimizer step inside backward (weight by weight, gradients dropped)
/// gives the run of the step after backward at `clip = 0`; packed steps of
/// at most `tokens` tokens; and `clip > 0` is refused with it.
#[test]
fn step_in_backward_packed_equals_step_after_backward() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), "llama", true, 6);
    let cfg = TrainConfig {
        tokens: 200,
        clip: 0.0,
        ..sft_config()
    };
    let mut runs = Vec::new();
    for step_in_backward in [true, false] {
        let model = TrainModel::load(&dir, &Device::Cpu, DType::F32).unwrap();
        let cfg = TrainConfig {
            step_in_backward,
            ..cfg.clone()
        };
        runs.push(run_losses(
            &model,
            &cfg,
            &tmp.path().join(format!("run-{step_in_backward}")),
        ));
    }
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        let tokens = a["tokens"].as_u64().unwrap();
        assert!(tokens > 96 && tokens <= 200, "{tokens} tokens in a step");
        assert_eq!(a["tokens"], b["tokens"]);
        // Both gradient norms are the same f64 sums of squares, tensor by
        // tensor (inside backward as the gradients go by).
        for key in ["loss", "grad_norm"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5 * y.abs(), "{key}: {x} vs {y}");
        }
    }
    let bad = TrainConfig {
        step_in_backward: true,
        clip: 1.0,
        ..sft_config()
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("clip"), "{e}");
}

/// A timing probe on the fixture model (by hand: `cargo test --release -p
/// main-trainer --test layerwise -- --ignored --nocapture`): the layerwise
/// step, its head alone and the whole-graph step on the same 4 examples.
#[test]
#[ignore]
fn probe_step_times_on_the_fixture_model() {
    use std::time::Instant;
    let model =
        TrainModel::load(&common::fixture("smollm2-f32"), &Device::Cpu, DType::F32).unwrap();
    let exs: Vec<Example> = common::alpaca_pairs(4)
        .iter()
        .map(|p| {
            let wp = WeightedPair::new(p.clone(), 1.0);
            main_trainer::data::example(&model, &wp, Direction::Forward, 256).unwrap()
        })
        .collect();
    let refs: Vec<&Example> = exs.iter().collect();
    let set = Settings::default();
    for _ in 0..2 {
        let t = Instant::now();
        let _ = whole_graph(&model, &exs);
        let whole = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = layerwise_grads(&model, &refs, &set);
        let lw = t.elapsed().as_secs_f64();
        let p = Packed::new(&refs, |e| e.weight).unwrap();
        let h = Tensor::randn(
            0f32,
            1.0,
            (p.n_targets(), model.config.d_model),
            &Device::Cpu,
        )
        .unwrap();
        let w = model
            .param("token_embd.weight")
            .unwrap()
            .as_tensor()
            .detach();
        let tg = Tensor::from_vec(p.targets.clone(), p.n_targets(), &Device::Cpu).unwrap();
        let t = Instant::now();
        let _ = main_trainer::head::loss_and_grads(&h, &w, &tg, &p.weights, set.head).unwrap();
        let head = t.elapsed().as_secs_f64();
        eprintln!(
            "{} tokens, {} targets: whole graph {whole:.2}s, layerwise {lw:.2}s (head {head:.2}s)",
            p.n_tokens(),
            p.n_targets()
        );
    }
}
