//! The MAIN pipeline end to end on a small slice with a tiny model: two
//! rounds of training, synthesis, mutual filtering (the agreement check on,
//! as by default) and weighting, the kept pairs accumulating over the
//! rounds, producing the curated file, the models and the reports.

mod common;

use std::path::Path;

fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn pipeline_runs_end_to_end_on_a_small_slice() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), "llama", true, 11);
    let pairs = common::alpaca_pairs(128);
    let seed = tmp.path().join("seed.jsonl");
    common::write_pairs(&seed, &pairs[..64]);
    let unlabeled = tmp.path().join("unlabeled.jsonl");
    let mut u = String::new();
    for p in &pairs[64..] {
        u.push_str(&serde_json::json!({ "response": p.response }).to_string());
        u.push('\n');
    }
    std::fs::write(&unlabeled, u).unwrap();
    let out = tmp.path().join("out");
    let config = tmp.path().join("main.toml");
    std::fs::write(
        &config,
        format!(
            r#"
base_model = "{}"
seed_pairs = "seed.jsonl"
unlabeled = "unlabeled.jsonl"
out_dir = "out"
rounds = 2
threads = 2

[train]
steps = 3
batch_size = 4
lr = 1e-2
warmup = 1
max_tokens = 96
eval_fraction = 0.125

[synthesis]
candidates = 2
temperature = 1.0
top_p = 0.95
max_instruction_tokens = 8
max_answer_tokens = 8

[filter]
keep_top = 0.5
max_tokens = 96

[weighting]
synthetic_start = 0.5
synthetic_growth = 0.25
"#,
            model.display()
        ),
    )
    .unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_main-train"))
        .args(["pipeline", "--config"])
        .arg(&config)
        .status()
        .unwrap();
    assert!(st.success());

    let min_agreement = main_trainer::pipeline::DEFAULT_MIN_AGREEMENT;
    let mut kept_sources = std::collections::BTreeSet::new();
    for round in [1, 2] {
        let dir = out.join(format!("round-{round}"));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        let cands = read_jsonl(&dir.join("synthetic.jsonl"));
        assert_eq!(
            report["n_candidates"].as_u64().unwrap() as usize,
            cands.len()
        );
        assert!(
            cands.len() >= 64,
            "round {round}: {} candidates",
            cands.len()
        );
        let kept: Vec<_> = cands.iter().filter(|c| c["kept"] == true).collect();
        // The agreement check answered a response's candidates until one
        // agreed: at most one agreeing candidate per response, and those
        // are the per-response winners.
        let agrees =
            |c: &serde_json::Value| c["agreement"].as_f64().is_some_and(|a| a >= min_agreement);
        let winners: Vec<_> = cands.iter().filter(|c| agrees(c)).collect();
        let sources: std::collections::BTreeSet<u64> = winners
            .iter()
            .map(|c| c["source"].as_u64().unwrap())
            .collect();
        assert_eq!(sources.len(), winners.len(), "round {round}");
        for c in &cands {
            assert_eq!(c["answer"].is_string(), c["agreement"].is_number());
        }
        // Answered lazily: a response whose best candidate agrees costs one
        // answer, not one per candidate.
        let answered = cands.iter().filter(|c| c["answer"].is_string()).count();
        eprintln!(
            "round {round}: {answered} of {} candidates answered, {} agreed",
            cands.len(),
            winners.len()
        );
        assert!(answered >= winners.len() && answered < cands.len());
        // keep_top 0.5 of the per-response winners (round(0.5 x n), as
        // main-score keeps them), the best aligned.
        assert!(
            winners.len() > 32,
            "round {round}: {} winners",
            winners.len()
        );
        assert_eq!(kept.len(), winners.len().div_ceil(2), "round {round}");
        assert_eq!(report["n_kept"].as_u64().unwrap() as usize, kept.len());
        let alignment = |c: &&serde_json::Value| c["alignment"].as_f64().unwrap();
        let min_kept = kept.iter().map(alignment).fold(f64::INFINITY, f64::min);
        let max_left = winners
            .iter()
            .filter(|c| c["kept"] == false)
            .map(alignment)
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(min_kept >= max_left, "kept min {min_kept} < {max_left}");
        for c in &kept {
            assert!(agrees(c));
        }
        for c in &cands {
            assert_eq!(c["round"].as_u64().unwrap(), round);
            assert!(!c["instruction"].as_str().unwrap().is_empty());
        }
        for d in ["forward", "reverse"] {
            assert!(dir.join(d).join("model/model.safetensors").exists());
            assert!(report[d]["eval_loss_after"].is_number());
        }
        // Kept pairs accumulate: this round's and the earlier rounds' (one
        // per response).
        let n_trained = kept_sources.len();
        kept_sources.extend(kept.iter().map(|c| c["source"].as_u64().unwrap()));
        assert_eq!(
            report["n_synthetic_trained"].as_u64().unwrap() as usize,
            n_trained
        );
        assert_eq!(
            report["n_kept_total"].as_u64().unwrap() as usize,
            kept_sources.len()
        );
        let curated = read_jsonl(&dir.join("curated.jsonl"));
        assert_eq!(curated.len(), 64 + kept_sources.len(), "round {round}");
    }
    // Round 2 trained on seed plus round 1's kept pairs, with the start share.
    let r2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("round-2/report.json")).unwrap()).unwrap();
    assert!((r2["synthetic_scale"].as_f64().unwrap() - 0.5).abs() < 1e-12);
    let n_kept_2 = r2["n_kept"].as_u64().unwrap() as usize;
    // Round 1's pairs stay where round 2 kept nothing for their response.
    assert!(kept_sources.len() > n_kept_2, "nothing accumulated");

    let curated = read_jsonl(&out.join("curated.jsonl"));
    assert_eq!(curated.len(), 64 + kept_sources.len());
    let synth: Vec<_> = curated
        .iter()
        .filter(|c| c["origin"] == "synthetic")
        .collect();
    assert_eq!(synth.len(), kept_sources.len());
    let in_round = |r: u64| synth.iter().filter(|c| c["round"] == r).count();
    assert_eq!(in_round(2), n_kept_2);
    assert_eq!(in_round(1), kept_sources.len() - n_kept_2);
    for c in &synth {
        let w = c["weight"].as_f64().unwrap();
        // The final retraining share (round 3): 0.5 + 0.25, times [0.1, 1].
        assert!((0.075 - 1e-9..=0.75 + 1e-9).contains(&w), "weight {w}");
        assert!(c["alignment"]["alignment"].is_number());
    }
    for d in ["forward", "reverse"] {
        assert!(out.join("final").join(d).join("model/config.json").exists());
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["n_curated"].as_u64().unwrap() as usize,
        64 + kept_sources.len()
    );
}
