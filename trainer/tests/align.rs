//! The alignment loss (src/align.rs) on a tiny model in f64: it equals an
//! independent reference (each view scored on its own, the loss in plain
//! f64) in both directions, the full in-batch loss at `M = K - 1` and the
//! sampled one below; per-example weights scale each pair's gradient; the
//! sequences it builds grow linearly with the batch; and its gradient
//! (backprop through the candle graph) agrees with central finite
//! differences.

mod common;

use candle_core::{DType, Device, Tensor};
use main_engine::score::Pair;
use main_engine::views::{build_view, reverse_content};
use main_trainer::align::{align_loss, align_terms, align_views, AlignPair};
use main_trainer::data::Direction;
use main_trainer::model::{Batch, TrainModel};

/// A tiny model in f64, weights larger than the default init so the loss
/// surface is not flat.
fn tiny_f64(dir: &std::path::Path) -> TrainModel {
    let dir = dir.join("tiny");
    main_trainer::model::write_random(
        &dir,
        &common::tiny_config("llama"),
        true,
        &common::fixture("smollm2-f32"),
        0.2,
        5,
    )
    .unwrap();
    TrainModel::load(&dir, &Device::Cpu, DType::F64).unwrap()
}

/// Short real pairs keep the views small.
fn short_pairs(n: usize) -> Vec<Pair> {
    common::alpaca_pairs(n)
        .into_iter()
        .map(|mut p| {
            p.instruction = p.instruction.chars().take(60).collect();
            p.response = p.response.chars().take(80).collect();
            p
        })
        .collect()
}

fn align_pairs<'a>(pairs: &'a [Pair], w: &[f64], t: &[Option<f64>]) -> Vec<AlignPair<'a>> {
    pairs
        .iter()
        .zip(w)
        .zip(t)
        .map(|((pair, &weight), &target_pmi)| AlignPair {
            pair,
            weight,
            target_pmi,
        })
        .collect()
}

/// Mean target log-prob of one view, run alone (no padding, no batching).
fn lp(model: &TrainModel, content: &str, target: &str) -> f64 {
    let v = build_view(model.tokenizer(), &model.template, content, target, 64).unwrap();
    let batch = Batch::new(&[(&v.ids[..], v.n_prompt)], &Device::Cpu).unwrap();
    let x: Vec<f64> = model.target_logprobs(&batch).unwrap().to_vec1().unwrap();
    x.iter().sum::<f64>() / x.len() as f64
}

/// The loss's definition in plain f64: `s[i][j] = lp(target_j | anchor_i)`
/// over the candidates `{i} + negatives[i]`.
fn reference(
    model: &TrainModel,
    d: Direction,
    pairs: &[AlignPair],
    negatives: &[Vec<usize>],
) -> (f64, f64) {
    let k = pairs.len() as f64;
    let anchor = |p: &Pair| match d {
        Direction::Forward => p.instruction.clone(),
        Direction::Reverse => reverse_content(&p.response),
    };
    let target = |p: &Pair| match d {
        Direction::Forward => p.response.clone(),
        Direction::Reverse => p.instruction.clone(),
    };
    let (mut nce, mut cons) = (0f64, 0f64);
    for (i, p) in pairs.iter().enumerate() {
        let s_ii = lp(model, &anchor(p.pair), &target(p.pair));
        let mut s = vec![s_ii];
        for &j in &negatives[i] {
            s.push(lp(model, &anchor(p.pair), &target(pairs[j].pair)));
        }
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + s.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        nce += p.weight * (lse - s_ii) / k;
        if let Some(t) = p.target_pmi {
            let pmi = s_ii - lp(model, "", &target(p.pair));
            cons += p.weight * (pmi - t).powi(2) / k;
        }
    }
    (nce, cons)
}

fn close(a: f64, b: f64, what: &str) {
    let rel = (a - b).abs() / b.abs().max(1e-12);
    assert!(rel < 1e-10, "{what}: {a} vs reference {b} (rel {rel:e})");
}

#[test]
fn the_loss_equals_its_definition_full_and_sampled_in_both_directions() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_f64(tmp.path());
    let pairs = short_pairs(5);
    let w = [1.0, 0.3, 0.0, 2.0, 0.7];
    let t = [Some(0.4), None, Some(-0.2), Some(1.5), None];
    let ap = align_pairs(&pairs, &w, &t);
    for d in [Direction::Forward, Direction::Reverse] {
        for m in [4, 1] {
            let terms = align_terms(&model, d, &ap, 64, m, 11).unwrap();
            if m == 4 {
                // M = K - 1: every other pair, the full in-batch loss.
                let all: Vec<Vec<usize>> = (0..5)
                    .map(|i| (0..5).filter(|&j| j != i).collect())
                    .collect();
                assert_eq!(terms.negatives, all);
            }
            let (nce, cons) = reference(&model, d, &ap, &terms.negatives);
            let c: f64 = terms.contrastive.to_scalar().unwrap();
            let k: f64 = terms.consistency.to_scalar().unwrap();
            eprintln!("{d:?} M={m}: contrastive {c:.9} (reference {nce:.9}), consistency {k:.9} ({cons:.9})");
            close(c, nce, &format!("{d:?} M={m} contrastive"));
            close(k, cons, &format!("{d:?} M={m} consistency"));
            assert!(c > 0.0 && k > 0.0);
            // K (M + 1) conditional views and one unconditional per target.
            assert_eq!(terms.n_sequences, 5 * (m + 1) + 3);
        }
    }
}

#[test]
fn sequences_grow_linearly_with_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_f64(tmp.path());
    let pairs = short_pairs(16);
    for k in 2..=16 {
        // The sequences align_terms runs (its n_sequences, checked against
        // this count in the test above); building them is enough to count.
        let ap = align_pairs(&pairs[..k], &[1.0; 16], &[Some(0.0); 16]);
        let n = align_views(&model, Direction::Forward, &ap, 64, 3, 1)
            .unwrap()
            .0
            .len();
        let m = 3.min(k - 1);
        assert_eq!(n, k * (m + 2), "K = {k}");
        eprintln!(
            "K = {k}: {n} sequences (one model, both directions: {})",
            2 * k * k + 2 * k
        );
    }
}

fn grads(model: &TrainModel, loss: &Tensor, names: &[&str]) -> Vec<Vec<f64>> {
    let g = loss.backward().unwrap();
    names
        .iter()
        .map(|n| {
            g.get(model.param(n).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect()
}

/// Weights multiply each pair's term: the gradient at weights `c w` is `c`
/// times the gradient at `w`, and the gradient at `w = 1` is the sum of
/// the gradients with one pair at weight 1 and the others at 0.
#[test]
fn weights_scale_each_pairs_gradient() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_f64(tmp.path());
    let pairs = short_pairs(3);
    let t = [Some(0.5), None, Some(1.0)];
    let names = [
        "blk.0.attn_q.weight",
        "blk.1.ffn_down.weight",
        "output_norm.weight",
    ];
    let grad_at = |d: Direction, w: &[f64]| {
        let ap = align_pairs(&pairs, w, &t);
        let loss = align_loss(&model, d, &ap, 64, 1, 3, 1.0, 0.5).unwrap();
        grads(&model, &loss, &names)
    };
    // The weights enter both directions' terms alike (the direction only
    // picks the views), so the forward model shows it.
    for d in [Direction::Forward] {
        let one = grad_at(d, &[1.0; 3]);
        let scaled = grad_at(d, &[0.3; 3]);
        let mut sum: Vec<Vec<f64>> = one.iter().map(|g| vec![0.0; g.len()]).collect();
        for i in 0..3 {
            let mut w = [0.0; 3];
            w[i] = 1.0;
            for (acc, g) in sum.iter_mut().zip(grad_at(d, &w)) {
                for (a, x) in acc.iter_mut().zip(g) {
                    *a += x;
                }
            }
        }
        let mut max_rel = 0f64;
        for ((g1, gs), gsum) in one.iter().zip(&scaled).zip(&sum) {
            let scale = g1.iter().fold(0f64, |m, x| m.max(x.abs()));
            assert!(scale > 0.0);
            for ((a, b), c) in g1.iter().zip(gs).zip(gsum) {
                max_rel = max_rel
                    .max((0.3 * a - b).abs() / scale)
                    .max((a - c).abs() / scale);
            }
        }
        eprintln!("{d:?}: weights act on the gradient to {max_rel:e} of its largest entry");
        // The gradients land on the f32 master weights: f32 rounding.
        assert!(max_rel < 2e-6, "{d:?}: {max_rel}");
    }
}

#[test]
fn align_loss_gradient_matches_finite_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_f64(tmp.path());
    let pairs = short_pairs(3);
    let w = [1.0, 0.5, 2.0];
    let t = [Some(0.5), None, Some(-0.5)];
    let ap = align_pairs(&pairs, &w, &t);
    let (l1, l2) = (1.0, 0.5);
    let mut checked = 0;
    for d in [Direction::Forward, Direction::Reverse] {
        // One sampled negative of two: the sampled loss is what trains.
        let loss_of = || -> f64 {
            align_loss(&model, d, &ap, 64, 1, 9, l1, l2)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let loss = align_loss(&model, d, &ap, 64, 1, 9, l1, l2).unwrap();
        let grads = loss.backward().unwrap();
        for name in [
            "blk.0.attn_q.weight",
            "blk.1.ffn_down.weight",
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
            for &i in &idx[..2] {
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
                eprintln!(
                    "{d:?} {name}[{i}]: backprop {an:.6e}, finite difference {fd:.6e}, rel {rel:.1e}"
                );
                assert!(
                    rel < 1e-3,
                    "{d:?} {name}[{i}]: backprop {an} vs finite difference {fd}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 12);
}
