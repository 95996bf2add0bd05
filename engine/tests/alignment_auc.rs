//! The scorer does its job: on 200 real pairs (LLaMA-Factory's Alpaca demo
//! set, fetched by scripts/fetch-fixtures), each pair scored as it is and
//! with its response swapped for another pair's, `alignment` separates true
//! from swapped pairs (ROC AUC >= 0.95), and so do `fwd_pmi` and `rev_pmi`
//! (>= 0.90 each), with the fixture model.

mod common;

use std::sync::Arc;

use common::*;
use main_engine::model::Model;
use main_engine::score::Pair;
use main_engine::scorer::{Scorer, ScorerParams};

/// Probability that a random true pair outscores a random swapped one (ties count half).
fn roc_auc(pos: &[f64], neg: &[f64]) -> f64 {
    let mut wins = 0.0;
    for p in pos {
        for n in neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

#[test]
fn auc_roc_separates_true_from_swapped_pairs() {
    let text = std::fs::read_to_string(fixture("alpaca_en_demo.jsonl")).unwrap();
    let mut pairs: Vec<Pair> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
            Pair::from_alpaca(&s("instruction"), &s("input"), &s("output"))
        })
        .collect();
    // The 200 shortest pairs keep the test to a couple of minutes on 2 cores.
    pairs.sort_by_key(|p| {
        (
            p.instruction.len() + p.response.len(),
            p.instruction.clone(),
        )
    });
    pairs.truncate(200);
    let n = pairs.len();
    assert_eq!(n, 200);
    // Swap with a pair far away in the list so no response is paired with itself.
    let swapped: Vec<Pair> = (0..n)
        .map(|i| {
            Pair::new(
                pairs[i].instruction.clone(),
                pairs[(i + n / 2 + 1) % n].response.clone(),
            )
        })
        .collect();

    let model = Arc::new(Model::load(&default_model()).unwrap());
    let params = ScorerParams {
        max_tokens: 256,
        ..Default::default()
    };
    let mut scorer = Scorer::new(model, None, params).unwrap();
    // One call: a swapped pair's unconditional views (its instruction
    // alone, its response alone) are those of two true pairs, and the
    // scorer computes a view repeated in a batch once.
    let all: Vec<Pair> = pairs.iter().chain(&swapped).cloned().collect();
    let mut scores = scorer.score_batch(&all).unwrap();
    let f = scores.split_off(n);
    let t = scores;
    let auc = |g: fn(&main_engine::score::PairScore) -> f64| {
        roc_auc(
            &t.iter().map(g).collect::<Vec<_>>(),
            &f.iter().map(g).collect::<Vec<_>>(),
        )
    };
    let (a, fwd, rev) = (auc(|s| s.alignment), auc(|s| s.fwd_pmi), auc(|s| s.rev_pmi));
    eprintln!("ROC AUC over {n} true vs {n} swapped pairs: alignment {a:.3}, fwd_pmi {fwd:.3}, rev_pmi {rev:.3}");
    assert!(a >= 0.95, "alignment AUC {a} < 0.95");
    assert!(fwd >= 0.90, "fwd_pmi AUC {fwd} < 0.90");
    assert!(rev >= 0.90, "rev_pmi AUC {rev} < 0.90");
}
