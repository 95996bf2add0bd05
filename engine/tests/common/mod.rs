//! Locating the fixtures that `scripts/fetch-fixtures` prepares. A missing
//! fixture fails the test with the command to run: never a silent skip.

#![allow(dead_code)]

use std::path::PathBuf;

pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("MAIN_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
    }
}

pub fn fixture(name: &str) -> PathBuf {
    let p = fixtures_dir().join(name);
    assert!(
        p.exists(),
        "fixture {} is missing: run scripts/fetch-fixtures",
        p.display()
    );
    p
}

pub fn default_model() -> PathBuf {
    fixture("SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

pub fn read_json(rel: &str) -> serde_json::Value {
    let p = repo_file(rel);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ids array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// `[null, lp1, lp2, ...]` -> `[lp1, lp2, ...]`
pub fn logprobs_of(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("logprobs array")
        .iter()
        .skip(1)
        .map(|x| x.as_f64().expect("logprob"))
        .collect()
}

/// Mean and max of |a - b|.
pub fn abs_diff(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len(), "compared sequences differ in length");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    (
        d.iter().sum::<f64>() / d.len() as f64,
        d.iter().cloned().fold(0.0, f64::max),
    )
}

pub fn pooled_ppl(lps: &[f64]) -> f64 {
    (-lps.iter().sum::<f64>() / lps.len() as f64).exp()
}
