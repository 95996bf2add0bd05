//! Checkpoints of the memory-light optimizer (bf16 or 8-bit moments, bf16
//! weights with or without an f32 master) round-trip exactly, and a run
//! resumed from one continues bit for bit.

mod common;

use candle_core::{DType, Tensor};
use main_trainer::checkpoint::{self, TrainState};
use main_trainer::model::TrainModel;
use main_trainer::optim::{AdamW, AdamWParams, MomentsKind};

fn grads(model: &TrainModel, step: u64) -> Vec<Tensor> {
    model
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let n = p.var.elem_count();
            let v: Vec<f32> = (0..n)
                .map(|j| {
                    let x = main_trainer::optim::bf16_rounding::mix64(
                        (step << 40) ^ ((i as u64) << 24) ^ j as u64,
                    );
                    ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.01
                })
                .collect();
            Tensor::from_vec(v, p.var.dims(), &model.device).unwrap()
        })
        .collect()
}

fn snapshot(model: &TrainModel, opt: &AdamW) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, usize) {
    let w = model
        .params
        .iter()
        .map(|p| {
            p.var
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect();
    let s = opt
        .state
        .iter()
        .flat_map(|s| {
            [
                s.m.to_f32(),
                s.v.to_f32(),
                s.master.clone().unwrap_or_default(),
            ]
        })
        .collect();
    (w, s, opt.step)
}

fn round_trip(moments: MomentsKind, master: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), "llama", false, 11);
    let load = || {
        let mut m = TrainModel::load(&dir, &candle_core::Device::Cpu, DType::F32).unwrap();
        m.cast_params(DType::BF16).unwrap();
        m
    };
    let params = AdamWParams {
        moments,
        master,
        seed: 5,
        weight_decay: 0.01,
        ..Default::default()
    };
    let model = load();
    let mut opt = AdamW::new(&model.params, params.clone()).unwrap();
    for step in 0..3 {
        opt.update(&model.params, &grads(&model, step), 1e-3)
            .unwrap();
    }
    let state = TrainState {
        step: 3,
        cursor: 12,
        epoch_rng: 9,
        fingerprint: "test".into(),
    };
    let run = tmp.path().join("run");
    let saved = checkpoint::save(&run, &model, &opt, &state, 2).unwrap();

    // A fresh model (the original weights) and zeroed optimizer, loaded.
    let model2 = load();
    let mut opt2 = AdamW::new(&model2.params, params.clone()).unwrap();
    let back = checkpoint::load(&saved, &model2, &mut opt2).unwrap();
    assert_eq!(back, state);
    assert_eq!(
        snapshot(&model, &opt),
        snapshot(&model2, &opt2),
        "{moments:?} master={master}"
    );

    // And both continue identically (stochastic rounding keyed by step).
    for step in 3..5 {
        opt.update(&model.params, &grads(&model, step), 1e-3)
            .unwrap();
        opt2.update(&model2.params, &grads(&model2, step), 1e-3)
            .unwrap();
    }
    assert_eq!(snapshot(&model, &opt), snapshot(&model2, &opt2));

    // A run with other moments is refused with the reason.
    let other = if moments == MomentsKind::Bit8 {
        MomentsKind::F32
    } else {
        MomentsKind::Bit8
    };
    let mut opt3 = AdamW::new(
        &model2.params,
        AdamWParams {
            moments: other,
            ..params
        },
    )
    .unwrap();
    let e = checkpoint::load(&saved, &model2, &mut opt3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--moments"), "{e}");
}

#[test]
fn eight_bit_moments_bf16_weights_round_trip_exactly() {
    round_trip(MomentsKind::Bit8, false);
}

#[test]
fn bf16_moments_with_master_round_trip_exactly() {
    round_trip(MomentsKind::Bf16, true);
}

/// The memory-light settings train: the held-out loss of a tiny LLaMA falls
/// about as far as with f32 everything (same data, steps and seed), and the
/// final model is written as bf16 that the engine loads.
#[test]
fn bf16_weights_and_8bit_moments_train_like_f32() {
    use main_trainer::data::{Direction, WeightedPair};
    use main_trainer::model::ParamDtype;
    use main_trainer::sft::{train, TrainConfig};
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), "llama", true, 1);
    let pairs: Vec<WeightedPair> = common::alpaca_pairs(16)
        .into_iter()
        .map(|p| WeightedPair::new(p, 1.0))
        .collect();
    let mut drops = Vec::new();
    for (moments, param_dtype) in [
        (MomentsKind::F32, ParamDtype::F32),
        (MomentsKind::Bit8, ParamDtype::Bf16),
    ] {
        let cfg = TrainConfig {
            steps: 8,
            batch_size: 4,
            lr: 1e-2,
            warmup: 2,
            max_tokens: 64,
            eval_fraction: 0.25,
            moments,
            param_dtype,
            ..Default::default()
        };
        let mut model = TrainModel::load(&dir, &candle_core::Device::Cpu, DType::F32).unwrap();
        model.cast_params(param_dtype.dtype()).unwrap();
        let run = tmp.path().join(format!("run-{}", moments.name()));
        let r = train(&model, &pairs, Direction::Forward, &cfg, &run, false, false).unwrap();
        let (before, after) = (r.eval_loss_before.unwrap(), r.eval_loss_after.unwrap());
        eprintln!("{moments:?} {param_dtype:?}: held-out loss {before:.4} -> {after:.4}");
        drops.push(before - after);
        let saved = main_engine::model::Model::load(&run.join("model")).unwrap();
        let emb = saved
            .tensors()
            .find(|t| t.name == "token_embd.weight")
            .unwrap();
        let want = if param_dtype == ParamDtype::Bf16 {
            main_engine::quant::DType::BF16
        } else {
            main_engine::quant::DType::F32
        };
        assert_eq!(emb.dtype, want);
    }
    assert!(drops[0] > 0.3, "f32 run learned: {drops:?}");
    assert!(
        drops[1] > 0.8 * drops[0],
        "8-bit moments + bf16 weights learned {:.4} nats, f32 {:.4}",
        drops[1],
        drops[0]
    );
}
