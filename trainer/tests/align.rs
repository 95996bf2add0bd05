//! The alignment loss's gradient (backprop through the candle graph) agrees
//! with central finite differences, computed in f64 on a tiny model.

mod common;

use candle_core::{DType, Device, Tensor};
use main_trainer::align::{align_loss, align_terms};
use main_trainer::model::TrainModel;

#[test]
fn align_loss_gradient_matches_finite_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    // Larger weights than the default init so the loss surface is not flat.
    main_trainer::model::write_random(
        &dir,
        &common::tiny_config("llama"),
        true,
        &common::fixture("smollm2-f32"),
        0.2,
        5,
    )
    .unwrap();
    let model = TrainModel::load(&dir, &Device::Cpu, DType::F64).unwrap();
    let pairs: Vec<_> = common::alpaca_pairs(3)
        .into_iter()
        .map(|mut p| {
            // Short texts keep the 2K² + 2K sequences small.
            p.instruction = p.instruction.chars().take(60).collect();
            p.response = p.response.chars().take(80).collect();
            p
        })
        .collect();
    let refs: Vec<_> = pairs.iter().collect();
    let (l1, l2) = (1.0, 0.5);
    let loss_of = || -> f64 {
        align_loss(&model, &refs, 64, l1, l2)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let terms = align_terms(&model, &refs, 64).unwrap();
    let c: f64 = terms.contrastive.to_scalar().unwrap();
    let k: f64 = terms.consistency.to_scalar().unwrap();
    assert!(c > 0.0 && k > 0.0, "contrastive {c}, consistency {k}");

    let loss = align_loss(&model, &refs, 64, l1, l2).unwrap();
    let grads = loss.backward().unwrap();
    let mut checked = 0;
    for name in [
        "blk.0.attn_q.weight",
        "blk.1.ffn_down.weight",
        "blk.0.attn_norm.weight",
        "output_norm.weight",
    ] {
        let var = model.param(name).unwrap();
        let g: Vec<f32> = grads
            .get(var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // The coordinates with the largest gradients, where a wrong graph shows.
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        let original = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for &i in &idx[..3] {
            let h = 1e-3f32;
            let set = |x: f32| {
                let mut v = original.clone();
                v[i] = x;
                let t = Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap();
                var.set(&t).unwrap();
            };
            let (xp, xm) = (original[i] + h, original[i] - h);
            set(xp);
            let lp = loss_of();
            set(xm);
            let lm = loss_of();
            set(original[i]);
            let fd = (lp - lm) / (xp as f64 - xm as f64);
            let an = g[i] as f64;
            let rel = (fd - an).abs() / an.abs().max(1e-4);
            eprintln!("{name}[{i}]: backprop {an:.6e}, finite difference {fd:.6e}, rel {rel:.1e}");
            assert!(
                rel < 1e-3,
                "{name}[{i}]: backprop {an} vs finite difference {fd}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}
