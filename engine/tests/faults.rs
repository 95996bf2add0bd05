//! `main-score score` under faults: a full disk while writing scores, and
//! SIGKILL at random moments. Each time the next run resumes with nothing
//! lost or duplicated, and the end result is byte for byte the output of one
//! uninterrupted run. The small random Mistral of the fixtures keeps 500
//! pairs cheap.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

const N_PAIRS: usize = 500;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("faults")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Short varied pairs in the three input formats.
fn pair_line(i: usize) -> String {
    let (a, b) = (i * 7 % 97 + 2, i * 13 % 89 + 3);
    let x = format!("What is {a} times {b}?");
    let y = format!("{a} times {b} is {}.", a * b);
    match i % 3 {
        0 => format!(r#"{{"id": {i}, "instruction": "{x}", "input": "", "output": "{y}"}}"#),
        1 => format!(r#"{{"prompt": "{x}", "response": "{y}", "id": {i}}}"#),
        _ => format!(
            r#"{{"messages": [{{"role": "user", "content": "{x}"}}, {{"role": "assistant", "content": "{y}"}}], "id": {i}}}"#
        ),
    }
}

fn write_input(dir: &Path) -> PathBuf {
    let path = dir.join("pairs.jsonl");
    let text: String = (0..N_PAIRS).map(|i| pair_line(i) + "\n").collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// The command line every run of a test uses: the same input, output and
/// options, as a user re-running it would.
fn score_args(input: &Path, output: &Path) -> Vec<String> {
    let model = common::fixture("mistral-tiny/model.gguf");
    [
        "score",
        "--model",
        p(&model),
        "--input",
        p(input),
        "--output",
        p(output),
        "--threads",
        "1",
        "--batch",
        "8",
        "--max-tokens",
        "64",
    ]
    .map(String::from)
    .to_vec()
}

fn main_score(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_main-score"));
    c.args(args).stdin(Stdio::null());
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "main-score failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The uninterrupted run: its output bytes and how long it took.
fn uninterrupted() -> &'static (Vec<u8>, Duration) {
    static RUN: OnceLock<(Vec<u8>, Duration)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("uninterrupted");
        let input = write_input(&dir);
        let output = dir.join("out.jsonl");
        let start = Instant::now();
        ok(main_score(&score_args(&input, &output)).output().unwrap());
        let took = start.elapsed();
        let bytes = std::fs::read(&output).unwrap();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), N_PAIRS);
        (bytes, took)
    })
}

fn complete_records(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// A file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored as a full disk
/// gives no signal) stops the writes part-way: the run fails with an error
/// naming the output, leaves only complete records, and the next run
/// resumes to the uninterrupted output.
#[test]
fn a_full_disk_is_an_error_and_the_next_run_resumes() {
    let (expected, _) = uninterrupted();
    let dir = scratch("full-disk");
    let input = write_input(&dir);
    let output = dir.join("out.jsonl");
    let args = score_args(&input, &output);

    // bash's `ulimit -f` counts 1024-byte blocks: room for some batches only.
    let limit_kib = 24;
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_main-score"))
        .args(&args)
        .stdin(Stdio::null());
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the write limit was not hit: {err}");
    assert!(
        err.contains("writing scores to") && err.contains(p(&output)),
        "{err}"
    );
    assert!(err.contains("File too large"), "{err}");
    let partial = std::fs::read(&output).unwrap();
    assert!(partial.len() <= limit_kib * 1024);
    let kept = complete_records(&partial);
    assert!(
        kept > 0 && kept < N_PAIRS,
        "{kept} records before the limit"
    );
    assert_eq!(
        partial.last(),
        Some(&b'\n'),
        "the failed batch was cut back to the last complete record"
    );
    assert_eq!(partial[..], expected[..partial.len()]);

    // Space again: the same command finishes the job.
    let out = ok(main_score(&args).output().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("resuming after {kept} records")),
        "{err}"
    );
    assert!(
        std::fs::read(&output).unwrap() == *expected,
        "resumed output differs from the uninterrupted run"
    );
}

/// SIGKILL at 20 random moments of a 500-pair run, each followed by a
/// resume, ends with the uninterrupted run's output, byte for byte. Most
/// moments are drawn over the records (the kill comes when the output
/// reaches a random record, plus up to 5 ms, so some land inside a write);
/// every fifth is drawn over the first 100 ms of a run (loading, hashing,
/// writing the provenance file).
#[test]
fn twenty_kills_and_resumes_give_the_uninterrupted_output() {
    let (expected, _) = uninterrupted();
    // ends[k]: bytes of the first k + 1 records.
    let ends: Vec<usize> = expected
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    let dir = scratch("kills");
    let input = write_input(&dir);
    let output = dir.join("out.jsonl");
    let args = score_args(&input, &output);

    let seed: u64 = rand::rng().random();
    eprintln!("kill moments from seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut targets: Vec<usize> = (0..20).map(|_| rng.random_range(1..N_PAIRS)).collect();
    targets.sort();
    let mut killed_mid_run = 0;
    for (kill, target) in targets.into_iter().enumerate() {
        let before = std::fs::read(&output).map_or(0, |b| complete_records(&b));
        let mut child = main_score(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let during_start_up = kill % 5 == 4;
        if during_start_up {
            std::thread::sleep(Duration::from_micros(rng.random_range(0..100_000)));
        } else {
            let goal = ends[target.max(before + 1).min(N_PAIRS) - 1] as u64;
            let give_up = Instant::now() + Duration::from_secs(120);
            while std::fs::metadata(&output).map_or(0, |m| m.len()) < goal
                && child.try_wait().unwrap().is_none()
                && Instant::now() < give_up
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(Duration::from_micros(rng.random_range(0..5_000)));
        }
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap(); // SIGKILL: no chance to clean up
        }
        child.wait().unwrap();
        let now = std::fs::read(&output).unwrap_or_default();
        let after = complete_records(&now);
        let whole = if after == 0 { 0 } else { ends[after - 1] };
        assert!(after >= before, "kill {}: records lost", kill + 1);
        assert!(
            now[..whole] == expected[..whole],
            "kill {}: the complete records differ from the uninterrupted run's",
            kill + 1
        );
        eprintln!(
            "kill {}: {} {before} -> {after} records{}{}",
            kill + 1,
            if during_start_up {
                "at start-up,"
            } else {
                "at a record,"
            },
            if now.len() > whole {
                " and part of one"
            } else {
                ""
            },
            if finished { " (had finished)" } else { "" }
        );
        if !finished && after < N_PAIRS {
            killed_mid_run += 1;
        }
    }
    assert!(
        killed_mid_run >= 15,
        "only {killed_mid_run} of 20 kills landed before the end"
    );
    ok(main_score(&args).output().unwrap());
    let got = std::fs::read(&output).unwrap();
    assert!(
        got == *expected,
        "after 20 kills and resumes the output differs from the uninterrupted run \
         ({} vs {} bytes)",
        got.len(),
        expected.len()
    );
}
