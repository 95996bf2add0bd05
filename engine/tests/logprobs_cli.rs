//! `main-score logprobs` end to end on the real fixture model: the `--json`
//! object the issue specifies, the precisions, and errors that name the file.

mod common;

use std::path::PathBuf;
use std::process::Command;

use main_engine::matmul::Precision;
use serde_json::Value;

fn text_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logprobs_cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `main-score logprobs --json` with `args`, parsed.
fn logprobs_json(text: &PathBuf, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_main-score"))
        .arg("logprobs")
        .arg("--model")
        .arg(common::default_model())
        .arg("--text-file")
        .arg(text)
        .args(["--threads", "1", "--json"])
        .args(args)
        .output()
        .expect("main-score runs");
    assert!(
        out.status.success(),
        "main-score logprobs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn logprobs(v: &Value) -> Vec<f64> {
    v["logprobs"].as_array().unwrap()[1..]
        .iter()
        .map(|x| x.as_f64().expect("a number after the first position"))
        .collect()
}

#[test]
fn json_has_ids_pieces_logprobs_and_perplexity() {
    let text = text_file(
        "prose.txt",
        "The quick brown fox jumps over the lazy dog. Größe, 東京, 🙂.\n",
    );
    let fast = logprobs_json(&text, &["--precision", "fast"]);
    // No flag: the engine's default for this CPU.
    let default = logprobs_json(&text, &[]);
    assert_eq!(
        default,
        logprobs_json(&text, &["--precision", Precision::default().name()])
    );
    let ids = fast["ids"].as_array().unwrap();
    let pieces = fast["pieces"].as_array().unwrap();
    let lps = fast["logprobs"].as_array().unwrap();
    assert!(ids.len() > 10, "{} tokens", ids.len());
    assert_eq!(pieces.len(), ids.len());
    assert_eq!(lps.len(), ids.len());
    assert!(lps[0].is_null(), "the first token has no context");
    let lps = logprobs(&fast);
    assert!(lps.iter().all(|&x| x < 0.0 && x.is_finite()));
    // The perplexity is that of the printed log-probs.
    let mean = lps.iter().sum::<f64>() / lps.len() as f64;
    let ppl = fast["perplexity"].as_f64().unwrap();
    assert!(((-mean).exp() / ppl - 1.0).abs() < 1e-9, "{ppl} vs {mean}");

    // `--exact` is `--precision exact`; fast is within its bound of exact.
    let exact = logprobs_json(&text, &["--exact"]);
    assert_eq!(exact, logprobs_json(&text, &["--precision", "exact"]));
    assert_eq!(exact["ids"], fast["ids"]);
    let worst = logprobs(&exact)
        .iter()
        .zip(&lps)
        .map(|(a, b)| (a - b).abs())
        .fold(0f64, f64::max);
    assert!(worst > 0.0 && worst < 0.01, "fast vs exact: {worst}");
}

#[test]
fn conflicting_precisions_and_a_missing_file_are_clear_errors() {
    let text = text_file("short.txt", "Hello there.");
    let out = Command::new(env!("CARGO_BIN_EXE_main-score"))
        .arg("logprobs")
        .arg("--model")
        .arg(common::default_model())
        .arg("--text-file")
        .arg(&text)
        .args(["--exact", "--precision", "int8"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--exact") && err.contains("--precision"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_main-score"))
        .arg("logprobs")
        .arg("--model")
        .arg(common::default_model())
        .args(["--text-file", "/nonexistent/text.txt"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/text.txt"), "{err}");
}
