//! `main-score score` on conversations (DESIGN.md §2 "Conversations", §3):
//! each conversation record gets its weakest turn's fields and `"turns"`,
//! every turn's numbers those of the library; pairs keep the plain object;
//! a malformed conversation stops the run naming its line, message and
//! turn, or with `--skip-invalid` is reported and skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use common::*;
use main_engine::conversation::weakest;
use main_engine::job::{splice_alignment, RecordScore};
use main_engine::model::Model;
use main_engine::pairs::{parse_sample_line, Format, Sample};
use main_engine::score::{Pair, PairScore};
use main_engine::scorer::{Scorer, ScorerParams};
use serde_json::Value;

const MAX_TOKENS: &str = "512";

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("score_conversations_cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn main_score(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_main-score"));
    c.args(["score", "--model"])
        .arg(default_model())
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--threads", "2", "--max-tokens", MAX_TOKENS])
        .args(extra);
    c.output().unwrap()
}

const PAIR: &str = r#"{"instruction": "Name a primary colour.", "input": "", "output": "Red."}"#;
const OPENAI: &str = r#"{"id": "o1", "messages": [{"role": "system", "content": "You answer in one sentence."}, {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}, {"role": "assistant", "content": "The capital of France is Paris."}, {"role": "user", "content": "And of Spain?"}, {"role": "assistant", "content": "The capital of Spain is Madrid."}]}"#;

/// The tool-call demo's shortest conversation with a tool call and two
/// answers (real data).
fn sharegpt_line() -> String {
    let text = std::fs::read_to_string(fixture("glaive_toolcall_en_demo.jsonl")).unwrap();
    text.lines()
        .filter(|l| l.contains("\"observation\"") && l.matches("\"from\": \"gpt\"").count() >= 2)
        .min_by_key(|l| l.len())
        .unwrap()
        .to_string()
}

fn library_scores(lines: &[&str]) -> Vec<Vec<PairScore>> {
    let model = Arc::new(Model::load(&default_model()).unwrap());
    let params = ScorerParams {
        max_tokens: MAX_TOKENS.parse().unwrap(),
        ..Default::default()
    };
    let mut scorer = Scorer::new(model, None, params).unwrap();
    lines
        .iter()
        .map(
            |l| match parse_sample_line(l, 1, &Format::Auto).unwrap().1 {
                Sample::Pair(p) => scorer.score_batch(&[p]).unwrap(),
                Sample::Conversation(c) => scorer.score_conversation(&c).unwrap(),
            },
        )
        .collect()
}

#[test]
fn conversations_get_every_turn_and_their_weakest() {
    let dir = scratch("turns");
    let sharegpt = sharegpt_line();
    let lines = [PAIR, OPENAI, sharegpt.as_str()];
    let input = dir.join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = dir.join("out.jsonl");
    let out = main_score(&input, &output, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(written.len(), 3);
    let want = library_scores(&lines);
    let text = std::fs::read_to_string(&output).unwrap();
    for (i, ((line, written_line), (w, scores))) in lines
        .iter()
        .zip(text.lines())
        .zip(written.iter().zip(&want))
        .enumerate()
    {
        // Every byte as the library's scores make it: the record's own text,
        // then its scores (compared as text, bit for bit; serde_json's
        // parser may round a float's last bit).
        let record = if i == 0 {
            RecordScore::Pair(scores[0].clone())
        } else {
            RecordScore::Conversation(scores.clone())
        };
        let mut expected = Vec::new();
        splice_alignment(&mut expected, line, i + 1, &record).unwrap();
        assert_eq!(
            format!("{written_line}\n"),
            String::from_utf8(expected).unwrap()
        );
        let a = w["alignment"].as_object().unwrap();
        assert_eq!(a["line"], i + 1);
        if i == 0 {
            // The pair: the plain object, no "turns".
            assert!(!a.contains_key("turns"));
            continue;
        }
        // A conversation: its weakest turn's fields, then every turn.
        let turns = a["turns"].as_array().expect("a conversation has turns");
        assert!(scores.len() >= 2, "line {}: {} turns", i + 1, scores.len());
        assert_eq!(turns.len(), scores.len());
        for (k, t) in turns.iter().enumerate() {
            assert_eq!(t["turn"], k + 1);
        }
        let weakest = weakest(scores).unwrap();
        assert!((a["alignment"].as_f64().unwrap() - weakest.alignment).abs() < 1e-12);
        assert!(scores.iter().all(|s| s.alignment >= weakest.alignment));
    }
}

#[test]
fn a_malformed_conversation_stops_the_run_or_is_skipped() {
    let dir = scratch("malformed");
    let bad = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "A"}, {"role": "user", "content": "B"}, {"role": "assistant", "content": "C"}]}"#;
    let input = dir.join("in.jsonl");
    std::fs::write(&input, format!("{PAIR}\n{bad}\n{PAIR}\n")).unwrap();
    let want =
        "line 2: messages[3] (turn 2): a user message where an assistant message is expected: \
                message 2 is not answered (roles out of order)";

    let output = dir.join("stop.jsonl");
    let out = main_score(&input, &output, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(want), "{err}");
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 1);

    let output = dir.join("skip.jsonl");
    let out = main_score(&input, &output, &["--skip-invalid"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(want), "{err}");
    let written = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let numbers: Vec<&Value> = lines.iter().map(|v| &v["alignment"]["line"]).collect();
    assert_eq!(numbers, [1, 3]);
    // Unchanged pairs: the same scores as the library's pair.
    let pair = Pair::new("Name a primary colour.", "Red.");
    let model = Arc::new(Model::load(&default_model()).unwrap());
    let params = ScorerParams {
        max_tokens: MAX_TOKENS.parse().unwrap(),
        ..Default::default()
    };
    let s = Scorer::new(model, None, params)
        .unwrap()
        .score_pair(&pair)
        .unwrap();
    assert_eq!(
        lines[0]["alignment"]["alignment"].as_f64(),
        Some(s.alignment)
    );
}

#[test]
fn a_turn_that_cannot_be_scored_is_named_by_line_and_turn() {
    let dir = scratch("unscorable");
    // A system message is never dropped: one this long leaves no room for
    // the turn in 512 tokens.
    let system = "Answer briefly. ".repeat(300);
    let long = format!(
        r#"{{"messages": [{{"role": "system", "content": "{system}"}}, {{"role": "user", "content": "Hi"}}, {{"role": "assistant", "content": "Hello."}}]}}"#
    );
    let input = dir.join("in.jsonl");
    std::fs::write(&input, format!("{PAIR}\n{long}\n")).unwrap();
    let out = main_score(&input, &dir.join("out.jsonl"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("line 2 (turn 1): invalid argument 'max_tokens'"),
        "{err}"
    );
}
