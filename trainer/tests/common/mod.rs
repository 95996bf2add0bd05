//! Fixtures (`scripts/fetch-fixtures`) and tiny random models for the
//! trainer's tests. A missing fixture fails with the command to run.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use main_engine::config::{Config, RopeStyle};
use main_engine::score::Pair;

pub fn fixture(name: &str) -> PathBuf {
    let dir = match std::env::var_os("MAIN_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "fixture {} is missing: run scripts/fetch-fixtures",
        p.display()
    );
    p
}

/// The first `n` Alpaca pairs of the fixture file (real text).
pub fn alpaca_pairs(n: usize) -> Vec<Pair> {
    let text = std::fs::read_to_string(fixture("alpaca_en_demo.jsonl")).unwrap();
    text.lines()
        .take(n)
        .enumerate()
        .map(|(i, l)| {
            main_engine::pairs::parse_line(l, i + 1, &Default::default())
                .unwrap()
                .1
        })
        .collect()
}

/// A tiny LLaMA (or Mistral, with a sliding window) config over the
/// SmolLM2 vocabulary, so the fixture tokenizer serves it.
pub fn tiny_config(arch: &str) -> Config {
    Config {
        architecture: arch.to_string(),
        n_layers: 2,
        d_model: 32,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        d_ff: 64,
        vocab_size: 49152,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        rope_style: RopeStyle::Halves,
        rope_freq_factors: None,
        sliding_window: if arch == "mistral" { Some(8) } else { None },
        context_length: 512,
    }
}

/// Writes a tiny random model folder with the SmolLM2 tokenizer.
pub fn tiny_model(dir: &Path, arch: &str, tied: bool, seed: u64) -> PathBuf {
    let out = dir.join(format!("tiny-{arch}"));
    main_trainer::model::write_random(
        &out,
        &tiny_config(arch),
        tied,
        &fixture("smollm2-f32"),
        0.02,
        seed,
    )
    .unwrap();
    out
}

/// Writes `pairs` as Alpaca JSONL.
pub fn write_pairs(path: &Path, pairs: &[Pair]) {
    let mut s = String::new();
    for p in pairs {
        s.push_str(
            &serde_json::json!({"instruction": p.instruction, "input": "", "output": p.response})
                .to_string(),
        );
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// `main-train pipeline --config CONFIG` on one candle thread (so a run's
/// floating-point sums are the same every time), stdout dropped. `bin` is
/// the test's `env!("CARGO_BIN_EXE_main-train")`.
pub fn pipeline_command(bin: &str, config: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    c.args(["pipeline", "--config"])
        .arg(config)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(std::process::Stdio::null());
    c
}
