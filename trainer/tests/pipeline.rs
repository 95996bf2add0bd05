//! The MAIN pipeline end to end on a small slice with a tiny model: two
//! rounds of training, synthesis, mutual filtering and weighting, producing
//! the curated file, the models and the reports.

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
        // keep_top 0.5 of the per-response winners: 32 of 64 responses.
        assert_eq!(kept.len(), 32, "round {round}");
        assert_eq!(report["n_kept"].as_u64().unwrap(), 32);
        // The kept ones are the best aligned: their minimum is at least the
        // median of the discarded.
        let min_kept = kept
            .iter()
            .map(|c| c["alignment"].as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);
        let disc_median = report["alignment_discarded"]["median"].as_f64().unwrap();
        assert!(
            min_kept >= disc_median,
            "kept min {min_kept} < discarded median {disc_median}"
        );
        for c in &cands {
            assert_eq!(c["round"].as_u64().unwrap(), round);
            assert!(!c["instruction"].as_str().unwrap().is_empty());
        }
        for d in ["forward", "reverse"] {
            assert!(dir.join(d).join("model/model.safetensors").exists());
            assert!(report[d]["eval_loss_after"].is_number());
        }
        let curated = read_jsonl(&dir.join("curated.jsonl"));
        assert_eq!(curated.len(), 64 + 32);
    }
    // Round 2 trained on seed plus round 1's kept pairs, with the start share.
    let r2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("round-2/report.json")).unwrap()).unwrap();
    assert_eq!(r2["n_synthetic_trained"].as_u64().unwrap(), 32);
    assert!((r2["synthetic_scale"].as_f64().unwrap() - 0.5).abs() < 1e-12);

    let curated = read_jsonl(&out.join("curated.jsonl"));
    assert_eq!(curated.len(), 96);
    let synth: Vec<_> = curated
        .iter()
        .filter(|c| c["origin"] == "synthetic")
        .collect();
    assert_eq!(synth.len(), 32);
    for c in &synth {
        assert_eq!(c["round"].as_u64().unwrap(), 2);
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
    assert_eq!(report["n_curated"].as_u64().unwrap(), 96);
}
