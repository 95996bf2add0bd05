//! The scorer's four per-view means against an independent implementation
//! of the same views (`tests/reference/score_views.py`: the chat template
//! rendered by Jinja2, llama.cpp's tokenizer, the float64 numpy forward pass
//! of `reference.py`), on 50 real pairs of LLaMA-Factory's Alpaca demo set
//! (fetched by scripts/fetch-fixtures; the golden file holds only their
//! line numbers): mean |Δ| per view ≤ 0.03 nats with the fast default and
//! ≤ 0.002 with exact precision, and the same target token counts.

mod common;

use std::sync::Arc;

use common::*;
use main_engine::matmul::Precision;
use main_engine::model::Model;
use main_engine::score::{Pair, PairScore};
use main_engine::scorer::{Scorer, ScorerParams};

const GOLDEN: &str = "tests/data/scorer_views_f64.json";
const VIEWS: [&str; 4] = ["fwd_cond", "fwd_uncond", "rev_cond", "rev_uncond"];

fn view_mean(s: &PairScore, view: &str) -> f64 {
    match view {
        "fwd_cond" => s.fwd_cond,
        "fwd_uncond" => s.fwd_uncond,
        "rev_cond" => s.rev_cond,
        "rev_uncond" => s.rev_uncond,
        _ => unreachable!(),
    }
}

/// The golden records and the pairs on their lines of the data set.
fn golden_pairs() -> (Vec<serde_json::Value>, Vec<Pair>) {
    let golden = read_json(GOLDEN);
    assert_eq!(golden["source"], "fixtures/alpaca_en_demo.jsonl");
    let records = golden["pairs"].as_array().expect("pairs").clone();
    assert!(records.len() >= 50, "{} golden pairs", records.len());
    let text = std::fs::read_to_string(fixture("alpaca_en_demo.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let pairs = records
        .iter()
        .map(|r| {
            let line = r["line"].as_u64().expect("line") as usize;
            let v: serde_json::Value = serde_json::from_str(lines[line]).unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
            Pair::from_alpaca(&s("instruction"), &s("input"), &s("output"))
        })
        .collect();
    (records, pairs)
}

/// Mean and max over pairs of |ours - golden| per view, after checking
/// token counts.
fn abs_delta(scores: &[PairScore], records: &[serde_json::Value]) -> ([f64; 4], [f64; 4]) {
    let mut sums = [0.0; 4];
    let mut maxs = [0.0f64; 4];
    for (s, r) in scores.iter().zip(records) {
        let line = &r["line"];
        assert!(!s.truncated, "line {line}: truncated");
        assert_eq!(
            s.response_tokens as u64,
            r["n_fwd"].as_u64().unwrap(),
            "line {line}: response target tokens"
        );
        assert_eq!(
            s.instruction_tokens as u64,
            r["n_rev"].as_u64().unwrap(),
            "line {line}: instruction target tokens"
        );
        for (k, view) in VIEWS.iter().enumerate() {
            let d = (view_mean(s, view) - r[*view].as_f64().unwrap()).abs();
            sums[k] += d;
            maxs[k] = maxs[k].max(d);
        }
    }
    (sums.map(|x| x / scores.len() as f64), maxs)
}

#[test]
fn per_view_means_match_the_float64_reference() {
    let (records, pairs) = golden_pairs();
    let model = Arc::new(Model::load(&default_model()).expect("load fixture model"));
    let mut failures = Vec::new();
    for (precision, tol) in [(Precision::Fast, 0.03), (Precision::Exact, 0.002)] {
        let t = std::time::Instant::now();
        let params = ScorerParams {
            precision,
            ..ScorerParams::default()
        };
        let mut scorer = Scorer::new(model.clone(), None, params).unwrap();
        let scores = scorer.score_batch(&pairs).unwrap();
        let (delta, max) = abs_delta(&scores, &records);
        let per_view: Vec<String> = VIEWS
            .iter()
            .enumerate()
            .map(|(k, v)| format!("{v} {:.2e} (max {:.2e})", delta[k], max[k]))
            .collect();
        eprintln!(
            "{precision:?}, {} pairs, {:.1}s: mean |Δ| {} nats (tolerance {tol})",
            pairs.len(),
            t.elapsed().as_secs_f64(),
            per_view.join(", ")
        );
        for (view, d) in VIEWS.iter().zip(delta) {
            if d > tol {
                failures.push(format!("{precision:?} {view}: mean |Δ| {d:.5} > {tol}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("; "));
}

/// The summed scores (`fwd_pmi_total`, `rev_pmi_total`) against two other
/// computations: the per-token detail of the same pass summed here, and the
/// float64 reference's view means times the target counts (mean |Δ| per
/// target token within the exact tolerance of the means).
#[test]
fn pmi_totals_match_the_token_detail_and_the_float64_reference() {
    let (records, pairs) = golden_pairs();
    let (records, pairs) = (&records[..12], &pairs[..12]);
    let model = Arc::new(Model::load(&default_model()).expect("load fixture model"));
    let params = ScorerParams {
        precision: Precision::Exact,
        tokens: true,
        ..ScorerParams::default()
    };
    let mut scorer = Scorer::new(model, None, params).unwrap();
    let scores = scorer.score_batch(pairs).unwrap();
    let (mut fwd_delta, mut rev_delta) = (0.0, 0.0);
    for (s, r) in scores.iter().zip(records) {
        let line = &r["line"];
        let sum = |d: &Option<Vec<main_engine::score::TokenScore>>| -> f64 {
            d.as_ref()
                .expect("detail")
                .iter()
                .map(|t| t.cond - t.uncond)
                .sum()
        };
        let (fwd, rev) = (sum(&s.response_detail), sum(&s.instruction_detail));
        assert!(
            (s.fwd_pmi_total - fwd).abs() < 1e-9,
            "line {line}: fwd {} vs {fwd}",
            s.fwd_pmi_total
        );
        assert!(
            (s.rev_pmi_total - rev).abs() < 1e-9,
            "line {line}: rev {} vs {rev}",
            s.rev_pmi_total
        );
        let reference = |cond: &str, uncond: &str, n: &str| {
            let n = r[n].as_f64().unwrap();
            (
                n * (r[cond].as_f64().unwrap() - r[uncond].as_f64().unwrap()),
                n,
            )
        };
        let (f, nf) = reference("fwd_cond", "fwd_uncond", "n_fwd");
        let (b, nb) = reference("rev_cond", "rev_uncond", "n_rev");
        fwd_delta += (s.fwd_pmi_total - f).abs() / nf;
        rev_delta += (s.rev_pmi_total - b).abs() / nb;
    }
    let n = scores.len() as f64;
    let (fwd_delta, rev_delta) = (fwd_delta / n, rev_delta / n);
    eprintln!("pmi totals against float64: mean |Δ| per target token fwd {fwd_delta:.2e}, rev {rev_delta:.2e} nats");
    // The difference of two means each within 0.002 of the reference.
    assert!(
        fwd_delta <= 0.004 && rev_delta <= 0.004,
        "fwd {fwd_delta}, rev {rev_delta}"
    );
}

/// `Scorer::forward_cond` (the one view the trainer's agreement check
/// needs) gives `score_batch`'s `fwd_cond` without the other three views:
/// the same view tokens; batched with different neighbours, so equal to
/// float rounding (1e-6 nats; exact precision; 0 measured).
#[test]
fn forward_cond_alone_equals_the_batch_fwd_cond() {
    let (_, pairs) = golden_pairs();
    let pairs = &pairs[..12];
    let model = Arc::new(Model::load(&default_model()).expect("load fixture model"));
    let params = ScorerParams {
        precision: Precision::Exact,
        ..ScorerParams::default()
    };
    let mut scorer = Scorer::new(model, None, params).unwrap();
    let full = scorer.score_batch(pairs).unwrap();
    let alone = scorer.forward_cond(pairs).unwrap();
    assert_eq!(alone.len(), pairs.len());
    let max = full
        .iter()
        .zip(&alone)
        .map(|(s, a)| (s.fwd_cond - a).abs())
        .fold(0f64, f64::max);
    eprintln!("forward_cond vs score_batch fwd_cond: max |Δ| {max:.2e} nats");
    assert!(max <= 1e-6, "max |Δ| {max}");
}

/// Two threads deal a batch's views to one lane per thread (`lanes`: 8
/// pairs hold well over 2 x 256 new tokens per model, and batches of 512
/// tokens make each lane run several); one thread runs them all itself. A
/// view's log-probs depend only on its tokens, so every score is the same,
/// bit for bit.
#[test]
fn lanes_of_views_give_the_one_thread_scores() {
    let (_, pairs) = golden_pairs();
    let pairs = &pairs[..8];
    let model = Arc::new(Model::load(&default_model()).expect("load fixture model"));
    let score = |n_threads| {
        let params = ScorerParams {
            n_threads,
            batch_tokens: 512,
            tokens: true,
            ..ScorerParams::default()
        };
        let mut scorer = Scorer::new(model.clone(), None, params).unwrap();
        scorer.score_batch(pairs).unwrap()
    };
    assert_eq!(score(1), score(2));
}

/// Pairs that repeat a response or an instruction (one prompt answered
/// several ways, one response under several instructions, a pair twice)
/// repeat unconditional views, which the scorer computes once and copies:
/// every pair still gets the scores it gets alone (exact precision, to
/// float rounding across different batch neighbours: 1e-6 nats).
#[test]
fn repeated_views_score_as_they_do_alone() {
    let (_, pairs) = golden_pairs();
    let (a, b) = (&pairs[0], &pairs[1]);
    let batch = vec![
        a.clone(),
        Pair::new(a.instruction.clone(), b.response.clone()),
        b.clone(),
        Pair::new(b.instruction.clone(), a.response.clone()),
        a.clone(),
    ];
    let model = Arc::new(Model::load(&default_model()).expect("load fixture model"));
    let params = ScorerParams {
        precision: Precision::Exact,
        ..ScorerParams::default()
    };
    let mut scorer = Scorer::new(model, None, params).unwrap();
    let together = scorer.score_batch(&batch).unwrap();
    for (i, (p, t)) in batch.iter().zip(&together).enumerate() {
        let alone = scorer.score_pair(p).unwrap();
        for view in VIEWS {
            let d = (view_mean(t, view) - view_mean(&alone, view)).abs();
            assert!(d <= 1e-6, "pair {i} {view}: |Δ| {d}");
        }
        assert_eq!(t.response_tokens, alone.response_tokens, "pair {i}");
        assert_eq!(t.instruction_tokens, alone.instruction_tokens, "pair {i}");
    }
}
