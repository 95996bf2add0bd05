//! The job as a library (`main_engine::job`): it writes what `main-score
//! score` writes, byte for byte; a job stopped by its progress callback
//! leaves a checkpoint that the same job resumes into the same bytes; its
//! events and report count what happened; a bad record is an
//! `Error::Record` naming the file and line.

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use main_engine::job::{self, JobEvent, JobParams};
use main_engine::Error;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("job")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// examples/pairs.jsonl: Alpaca, prompt/response and `messages` records.
fn input(dir: &Path) -> PathBuf {
    let path = dir.join("input.jsonl");
    std::fs::copy(repo_file("examples/pairs.jsonl"), &path).unwrap();
    path
}

fn params(input: &Path, output: &Path) -> JobParams {
    JobParams {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        model: default_model(),
        n_threads: 2,
        max_tokens: 512,
        negatives: 2,
        batch: 4,
        ..JobParams::default()
    }
}

#[test]
fn the_library_writes_what_the_cli_writes_and_resumes_a_stopped_job() {
    let dir = scratch("same-bytes");
    let input = input(&dir);
    let n = std::fs::read_to_string(&input).unwrap().lines().count();

    let cli = dir.join("cli.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_main-score"))
        .args([
            "score",
            "--threads",
            "2",
            "--max-tokens",
            "512",
            "--negatives",
            "2",
            "--batch",
            "4",
        ])
        .arg("--model")
        .arg(default_model())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&cli)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = std::fs::read(&cli).unwrap();

    let lib = dir.join("lib.jsonl");
    let mut events = Vec::new();
    let report = job::run(&params(&input, &lib), &mut |e| {
        events.push(format!("{e:?}"));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(
        std::fs::read(&lib).unwrap(),
        want,
        "the library differs from main-score"
    );
    assert_eq!(
        (report.records(), report.scored_now, report.resumed),
        (n, n, 0)
    );
    assert!(!report.stopped && report.kept.is_none());
    assert!(events[0].starts_with("Started"), "{events:?}");
    assert_eq!(events.len(), 1 + n.div_ceil(4), "{events:?}");

    // Stopped after its first batch, then run again.
    let stopped = dir.join("stopped.jsonl");
    let first = job::run(&params(&input, &stopped), &mut |e| match e {
        JobEvent::Scored { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .unwrap();
    assert!(first.stopped && first.records() == 4, "{first:?}");
    let mut resumed_at = None;
    let second = job::run(&params(&input, &stopped), &mut |e| {
        if let JobEvent::Resuming { records, .. } = e {
            resumed_at = Some(*records);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(resumed_at, Some(4));
    assert_eq!((second.resumed, second.scored_now), (4, n - 4));
    assert_eq!(
        std::fs::read(&stopped).unwrap(),
        want,
        "stopped and resumed differs"
    );
}

#[test]
fn a_bad_record_names_its_file_and_line_and_skip_invalid_reports_it() {
    let dir = scratch("bad");
    let input = dir.join("bad.jsonl");
    std::fs::write(
        &input,
        "{\"instruction\": \"Say hi.\", \"output\": \"Hi!\"}\n\n{\"instruction\": \"x\"}\n",
    )
    .unwrap();
    let output = dir.join("out.jsonl");
    let p = JobParams {
        negatives: 0,
        ..params(&input, &output)
    };
    match job::run(&p, &mut job::no_progress) {
        Err(Error::Record { file, line, reason }) => {
            assert_eq!(file, input.display().to_string());
            assert_eq!(line, 3);
            assert!(reason.contains("missing field 'output'"), "{reason}");
        }
        other => panic!("expected a record error, got {other:?}"),
    }
    // The record before it was written; skipping goes on after it.
    let mut skipped = Vec::new();
    let skip = JobParams {
        skip_invalid: true,
        ..p
    };
    let report = job::run(&skip, &mut |e| {
        if let JobEvent::Skipped { error } = e {
            skipped.push(error.to_string());
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(
        (report.resumed, report.invalid, report.records()),
        (1, 1, 1)
    );
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].contains("bad.jsonl, line 3"), "{skipped:?}");

    let no_model = JobParams {
        model: PathBuf::new(),
        ..params(&input, &output)
    };
    let e = job::run(&no_model, &mut job::no_progress).unwrap_err();
    assert_eq!(e.to_string(), "invalid argument '--model': not given");
}
