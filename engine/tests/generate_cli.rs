//! `main-score generate` end to end on the fixture model: records written
//! back with their completion, the same bytes whatever the batch, stop
//! strings, resume after an interrupted run, and errors that name the file
//! and line. Few records and few tokens: each run takes about a second.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("generate_cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const INPUT: &str = r#"{"prompt":"What is the capital of France?","id":1}
{"messages":[{"role":"system","content":"Answer briefly."},{"role":"user","content":"What colour is the sky?"}],"id":2}

{"id":3, "prompt" : "Name a fruit." }
"#;

/// `main-score generate IN -o OUT` on the fixture model, 8 new tokens.
fn generate(input: &Path, output: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_main-score"))
        .arg("generate")
        .arg(input)
        .arg("-o")
        .arg(output)
        .arg("--model")
        .arg(common::default_model())
        .args(["--threads", "1", "--max-new-tokens", "8"])
        .args(extra)
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "main-score failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn completions_resume_and_errors() {
    let dir = scratch("all");
    let input = dir.join("in.jsonl");
    std::fs::write(&input, INPUT).unwrap();

    // All three records together, then one at a time: the same bytes.
    let together = dir.join("together.jsonl");
    ok(generate(&input, &together, &["--batch", "3"]));
    let text = std::fs::read_to_string(&together).unwrap();
    let alone = dir.join("alone.jsonl");
    ok(generate(&input, &alone, &["--batch", "1"]));
    assert_eq!(std::fs::read_to_string(&alone).unwrap(), text);

    // Each record is its input line, unchanged, plus "completion" last.
    let inputs: Vec<&str> = INPUT.lines().filter(|l| !l.trim().is_empty()).collect();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    let completion = |line: &str| -> String {
        serde_json::from_str::<Value>(line).unwrap()["completion"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (line, input) in lines.iter().zip(&inputs) {
        let body = input.trim_end().strip_suffix('}').unwrap().trim_end();
        let c = serde_json::to_string(&completion(line)).unwrap();
        assert_eq!(*line, format!("{body},\"completion\":{c}}}"));
    }
    assert!(completion(lines[0]).contains("Paris"), "{}", lines[0]);
    assert!(completion(lines[1]).contains("sky"), "{}", lines[1]);

    // A stop string cuts the completion before it.
    let stopped = dir.join("stopped.jsonl");
    ok(generate(&input, &stopped, &["--stop", "Paris"]));
    let first = std::fs::read_to_string(&stopped).unwrap();
    let first = completion(first.lines().next().unwrap());
    assert_eq!(first, completion(lines[0]).split("Paris").next().unwrap());

    // Resume: the first record and half of the second are there (a killed
    // run); the rerun completes the rest and the file is what one run writes.
    let resumed = dir.join("resumed.jsonl");
    std::fs::write(&resumed, format!("{}\n{}", lines[0], &lines[1][..20])).unwrap();
    let out = ok(generate(&input, &resumed, &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resuming after 1 records"), "{err}");
    assert!(err.contains("partial last line"), "{err}");
    assert_eq!(std::fs::read_to_string(&resumed).unwrap(), text);

    // An output of another input is refused, never mixed.
    let other = dir.join("other.jsonl");
    std::fs::write(&other, format!("{}\n", lines[1])).unwrap();
    let out = generate(&input, &other, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1") && err.contains("another input"),
        "{err}"
    );

    // A bad record: the error names the file and line; what came before it
    // is written, so the fixed input resumes after it.
    let bad_input = dir.join("bad.jsonl");
    std::fs::write(
        &bad_input,
        format!("{}\n{{\"instruction\":\"x\"}}\n", inputs[0]),
    )
    .unwrap();
    let bad_out = dir.join("bad_out.jsonl");
    let out = generate(&bad_input, &bad_out, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.jsonl") && err.contains("line 2") && err.contains("nothing to complete"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&bad_out).unwrap(),
        format!("{}\n", lines[0])
    );
}
