//! `main-score score` end to end on the real fixture model: output records,
//! invalid lines, shards, resume after a kill, filters, and flat memory.
//!
//! The model scores a few pairs per second on two cores, so inputs are small
//! and short, and the uninterrupted run every other test compares with is
//! computed once.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every field of DESIGN §3 (and the counts) that a record's "alignment" holds.
const FIELDS: [&str; 17] = [
    "alignment",
    "fwd_pmi",
    "rev_pmi",
    "fwd_cond",
    "fwd_uncond",
    "rev_cond",
    "rev_uncond",
    "ifd",
    "rifd",
    "semantic",
    "structural",
    "intentional",
    "fwd_pmi_total",
    "rev_pmi_total",
    "response_tokens",
    "instruction_tokens",
    "truncated",
];

/// A fresh folder under the target dir for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("score_cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `main-score score` on the fixture model, one thread (tests run side by side).
fn main_score(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_main-score"));
    c.arg("score")
        .arg("--model")
        .arg(common::default_model())
        .args(["--threads", "1", "--max-tokens", "256"])
        .args(args);
    c
}

fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("main-score runs")
}

fn run_ok(c: Command) -> Output {
    let out = run(c);
    assert!(
        out.status.success(),
        "main-score failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Short pairs in all three formats, with extra keys whose spelling
/// (`1.50`, spaces, `\u00e9`, nested key order) a re-serialization would change.
fn pair_line(i: usize) -> String {
    let (a, b) = (i * 7 % 31 + 2, i * 5 % 17 + 3);
    let x = format!("What is {a} plus {b}?");
    // Every fifth response answers another question: a poorly aligned pair.
    let y = if i % 5 == 4 {
        "Bananas are yellow.".to_string()
    } else {
        format!("{a} plus {b} is {}.", a + b)
    };
    match i % 3 {
        0 => format!(
            r#"{{"id": {i}, "z": 1.50, "instruction": "{x}", "input": "", "output": "{y}", "meta": {{"b": 1, "a": "caf\u00e9"}}}}"#
        ),
        1 => format!(r#"{{"prompt":"{x}","response":"{y}","id":{i}}}"#),
        _ => format!(
            r#"{{"messages": [{{"role": "system", "content": "Be brief."}}, {{"role": "user", "content": "{x}"}}, {{"role": "assistant", "content": "{y}"}}], "id": {i}}}"#
        ),
    }
}

const N_PAIRS: usize = 24;

fn write_input(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("input.jsonl");
    let text: String = (0..n).map(|i| pair_line(i) + "\n").collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The uninterrupted, unsharded run over `N_PAIRS` pairs: (input lines, output lines).
fn baseline() -> &'static (Vec<String>, Vec<String>) {
    static BASELINE: OnceLock<(Vec<String>, Vec<String>)> = OnceLock::new();
    BASELINE.get_or_init(|| {
        let dir = scratch("baseline");
        let input = write_input(&dir, N_PAIRS);
        let output = dir.join("out.jsonl");
        run_ok(main_score(&["--input", p(&input), "--output", p(&output)]));
        (lines(&input), lines(&output))
    })
}

/// The provenance file beside the baseline's output.
fn baseline_provenance() -> PathBuf {
    baseline();
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("score_cli/baseline/out.jsonl.provenance.json")
}

/// Writes `records` to `output` with the provenance of the run that made
/// them, as an interrupted run of that kind leaves it.
fn seed(output: &Path, records: &str, provenance: &Path) {
    std::fs::write(output, records).unwrap();
    let mut beside = output.as_os_str().to_owned();
    beside.push(".provenance.json");
    std::fs::copy(provenance, PathBuf::from(beside)).unwrap();
}

fn alignment(line: &str) -> f64 {
    let v: Value = serde_json::from_str(line).unwrap();
    v["alignment"]["alignment"]
        .as_f64()
        .expect("alignment is a number")
}

#[test]
fn output_is_the_input_record_plus_alignment() {
    let (input, output) = baseline();
    assert_eq!(output.len(), input.len());
    for (i, (inp, out)) in input.iter().zip(output).enumerate() {
        // The record's own bytes come first, unchanged; "alignment" is appended last.
        let body = inp.strip_suffix('}').unwrap();
        assert!(
            out.starts_with(&format!("{body},\"alignment\":{{")),
            "line {i}: {out}"
        );
        let v: Value = serde_json::from_str(out).unwrap();
        let a = v["alignment"].as_object().unwrap();
        for f in FIELDS {
            assert!(a.contains_key(f), "line {i}: no '{f}' in {out}");
        }
        assert!(
            !a.contains_key("contrastive"),
            "contrastive only with --negatives"
        );
        for f in ["alignment", "fwd_pmi", "rev_pmi", "ifd"] {
            assert!(a[f].as_f64().unwrap().is_finite(), "line {i}: {f}");
        }
        assert_eq!(
            a["alignment"].as_f64(),
            Some(
                a["fwd_pmi"]
                    .as_f64()
                    .unwrap()
                    .min(a["rev_pmi"].as_f64().unwrap())
            )
        );
        assert_eq!(v["id"], i, "records stay in input order");
        assert_eq!(a["line"], i + 1, "each record names its input line");
    }
    // The mismatched responses (every fifth) should score below the matched ones on the whole.
    let mean = |pick: fn(usize) -> bool| {
        let v: Vec<f64> = (0..N_PAIRS)
            .filter(|&i| pick(i))
            .map(|i| alignment(&output[i]))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(
        mean(|i| i % 5 == 4) < mean(|i| i % 5 != 4),
        "mismatched pairs should align worse"
    );
}

#[test]
fn stdin_to_stdout_with_the_default_model() {
    let dir = scratch("stdio");
    let input = write_input(&dir, 2);
    // No --model: the fixture model of this checkout (or of $MAIN_FIXTURES, as for the tests).
    let mut c = Command::new(env!("CARGO_BIN_EXE_main-score"));
    c.args([
        "score",
        "--threads",
        "1",
        "--max-tokens",
        "256",
        "--batch",
        "1",
    ]);
    c.stdin(std::fs::File::open(&input).unwrap());
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(
        got,
        baseline().1[..2]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    let err = stderr(&out);
    assert!(err.contains("2 records in stdout"), "summary: {err}");
    assert!(
        err.contains("p10") && err.contains("alignment") && err.contains("ifd"),
        "{err}"
    );
}

#[test]
fn a_missing_default_model_says_how_to_fetch_it() {
    let dir = scratch("no-model");
    let mut c = Command::new(env!("CARGO_BIN_EXE_main-score"));
    c.args(["score", "--input", "-"]).env("MAIN_FIXTURES", &dir);
    let out = run(c);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("scripts/fetch-fixtures"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_malformed_line_stops_after_writing_what_came_before_and_skip_invalid_goes_on() {
    let dir = scratch("malformed");
    let input = dir.join("input.jsonl");
    let mut text: Vec<String> = (0..3).map(pair_line).collect();
    text.push(r#"{"instruction": "No output here."}"#.into());
    text.push(String::new()); // blank lines are no records
    text.push("not json".into());
    text.push(pair_line(3));
    std::fs::write(&input, text.join("\n") + "\n").unwrap();
    let output = dir.join("out.jsonl");

    let out = run(main_score(&[
        "--input",
        p(&input),
        "--output",
        p(&output),
        "--batch",
        "2",
    ]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("line 4: missing field 'output'"), "{err}");
    // The three records before it were scored and written: nothing is lost.
    assert_eq!(lines(&output), baseline().1[..3]);

    // The same output resumes after them; the bad lines are reported and skipped.
    let out = run_ok(main_score(&[
        "--input",
        p(&input),
        "--output",
        p(&output),
        "--batch",
        "2",
        "--skip-invalid",
    ]));
    let err = stderr(&out);
    assert!(err.contains("line 4: missing field 'output'"), "{err}");
    assert!(err.contains("line 6: invalid JSON"), "{err}");
    assert!(err.contains("1 scored now, 3 from before"), "{err}");
    assert!(err.contains("2 invalid skipped"), "{err}");
    let got = lines(&output);
    assert_eq!(got[..3], baseline().1[..3]);
    assert_eq!(got.len(), 4);
    // The fourth pair sits on line 7 of this input.
    assert_eq!(
        got[3],
        baseline().1[3].replace("\"line\":4}", "\"line\":7}")
    );
}

#[test]
fn shards_cover_the_data_set_exactly_once() {
    let (input, full) = baseline();
    let dir = scratch("shard");
    let path = dir.join("input.jsonl");
    std::fs::write(&path, input.join("\n") + "\n").unwrap();
    let n = 4;
    let mut merged: BTreeMap<usize, String> = BTreeMap::new();
    for i in 0..n {
        let output = dir.join(format!("out-{i}.jsonl"));
        let shard = format!("{i}/{n}");
        run_ok(main_score(&[
            "--input",
            p(&path),
            "--output",
            p(&output),
            "--shard",
            &shard,
        ]));
        for line in lines(&output) {
            let id = serde_json::from_str::<Value>(&line).unwrap()["id"]
                .as_u64()
                .unwrap() as usize;
            assert_eq!(id % n, i, "record {id} belongs to shard {}", id % n);
            assert!(
                merged.insert(id, line).is_none(),
                "record {id} in two shards"
            );
        }
    }
    let mut as_multiset: Vec<&String> = merged.values().collect();
    let mut expected: Vec<&String> = full.iter().collect();
    as_multiset.sort();
    expected.sort();
    assert_eq!(as_multiset, expected, "the shards hold the same lines");
    // Merged by line index, they are the unsharded output.
    assert_eq!(merged.into_values().collect::<Vec<_>>(), *full);
}

#[test]
fn resume_after_a_kill_loses_and_duplicates_nothing() {
    let (input, full) = baseline();
    let dir = scratch("resume-kill");
    let path = dir.join("input.jsonl");
    std::fs::write(&path, input.join("\n") + "\n").unwrap();
    let output = dir.join("out.jsonl");
    let args = ["--input", p(&path), "--output", p(&output), "--batch", "4"];

    let mut child = main_score(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let written = std::fs::read(&output)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        if written >= 4 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "main-score ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no output after 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let before = lines(&output).len();
    assert!(
        before < full.len(),
        "killed before the end ({before} records)"
    );

    let out = run_ok(main_score(&args));
    assert!(
        stderr(&out).contains(&format!("resuming after {before} records")),
        "{}",
        stderr(&out)
    );
    assert_eq!(lines(&output), *full);
}

#[test]
fn resume_drops_a_partial_last_line() {
    let (input, full) = baseline();
    let dir = scratch("resume-partial");
    let path = dir.join("input.jsonl");
    std::fs::write(&path, input.join("\n") + "\n").unwrap();
    let output = dir.join("out.jsonl");
    // As a kill in the middle of a write leaves it: 18 complete records and half of the 19th.
    let done = 18;
    let mut text = full[..done].join("\n") + "\n";
    text.push_str(&full[done][..full[done].len() / 2]);
    seed(&output, &text, &baseline_provenance());

    let out = run_ok(main_score(&["--input", p(&path), "--output", p(&output)]));
    let err = stderr(&out);
    assert!(err.contains("dropping a partial last line"), "{err}");
    assert!(
        err.contains(&format!(
            "{} scored now, {done} from before",
            N_PAIRS - done
        )),
        "{err}"
    );
    assert_eq!(lines(&output), *full);

    // A finished output resumes to itself: nothing scored, nothing added.
    let out = run_ok(main_score(&["--input", p(&path), "--output", p(&output)]));
    assert!(stderr(&out).contains(&format!("0 scored now, {N_PAIRS} from before")));
    assert_eq!(lines(&output), *full);
}

#[test]
fn an_output_that_does_not_fit_the_input_is_refused() {
    let (input, full) = baseline();
    let dir = scratch("resume-mismatch");
    let path = dir.join("input.jsonl");
    std::fs::write(&path, input.join("\n") + "\n").unwrap();
    let output = dir.join("out.jsonl");
    let refused = |records: &[&String], says: &str| {
        let text: String = records.iter().map(|l| format!("{l}\n")).collect();
        seed(&output, &text, &baseline_provenance());
        let out = run(main_score(&["--input", p(&path), "--output", p(&output)]));
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(says), "{err}");
        assert!(err.contains("to start afresh, remove"), "{err}");
        assert_eq!(std::fs::read_to_string(&output).unwrap(), text, "untouched");
    };
    // More records than the input has.
    let mut longer: Vec<&String> = full.iter().collect();
    longer.push(&full[0]);
    refused(&longer, "holds 25 records but");
    // A record on the wrong line (one lost in between).
    refused(&[&full[0], &full[2]], "record 2 of");
    // Records without their line, as older versions wrote them.
    let old = full[0].replace(",\"line\":1}", "}");
    refused(&[&old], "has no input line");

    // Records without a provenance file: unknown origin.
    std::fs::write(&output, full[0].clone() + "\n").unwrap();
    std::fs::remove_file(dir.join("out.jsonl.provenance.json")).unwrap();
    let out = run(main_score(&["--input", p(&path), "--output", p(&output)]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has no") && stderr(&out).contains("provenance.json"),
        "{}",
        stderr(&out)
    );

    // And a file that main-score did not write is never appended to.
    std::fs::write(&output, "{\"a\": 1}\n").unwrap();
    let out = run(main_score(&["--input", p(&path), "--output", p(&output)]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 1: not a record written by main-score"),
        "{}",
        stderr(&out)
    );
}

/// The issue's report: a.jsonl (3 records) scored, then b.jsonl (5 records)
/// with another `--precision` into the same output "resumed after 3 records"
/// and mixed the two runs. Any change of input, model, reverse model or
/// score-changing option is now refused, naming what differs.
#[test]
fn resume_refuses_another_input_model_or_option() {
    let dir = scratch("resume-other-run");
    let a = dir.join("a.jsonl");
    let b = dir.join("b.jsonl");
    std::fs::write(&a, (0..3).map(|i| pair_line(i) + "\n").collect::<String>()).unwrap();
    std::fs::write(&b, (3..8).map(|i| pair_line(i) + "\n").collect::<String>()).unwrap();
    let output = dir.join("o.jsonl");
    run_ok(main_score(&["--input", p(&a), "--output", p(&output)]));
    let made = std::fs::read(&output).unwrap();
    assert_eq!(lines(&output).len(), 3);

    let refused = |args: &[&str], says: &[&str]| {
        let mut c = main_score(&["--output", p(&output)]);
        c.args(args);
        let out = run(c);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} resumed: {err}");
        for s in says {
            assert!(err.contains(s), "{args:?}: no {s:?} in {err}");
        }
        assert!(err.contains("to start afresh, remove"), "{err}");
        assert!(!err.contains("resuming after"), "{err}");
        assert_eq!(
            std::fs::read(&output).unwrap(),
            made,
            "{args:?}: output changed"
        );
    };
    // A precision other than this CPU's default (fast with AVX-512 VNNI or AVX-VNNI,
    // exact elsewhere, or what MAIN_ISA makes it): the same one would change
    // nothing and the refusal could not name it.
    let default = main_engine::matmul::Precision::default();
    let other = match default {
        main_engine::matmul::Precision::Exact => "fast",
        _ => "exact",
    };
    eprintln!(
        "default precision here: {}; asking for {other}",
        default.name()
    );
    refused(
        &["--input", p(&b), "--precision", other],
        &["its input was", "b.jsonl", "--precision was"],
    );
    // The same name with other content is another input.
    let edited = dir.join("edited.jsonl");
    std::fs::write(
        &edited,
        std::fs::read_to_string(&a).unwrap().replace("plus", "and"),
    )
    .unwrap();
    refused(&["--input", p(&edited)], &["its input was"]);
    let tiny = common::fixture("mistral-tiny/model.gguf");
    refused(
        &["--input", p(&a), "--reverse-model", p(&tiny)],
        &["its reverse model was none"],
    );
    refused(
        &["--input", p(&a), "--negatives", "1"],
        &["--negatives was 0, now 1"],
    );
    refused(
        &["--input", p(&a), "--combine", "mean"],
        &["--combine was min, now mean"],
    );
    refused(
        &["--input", p(&a), "--tokens"],
        &["--tokens was false, now true"],
    );
    refused(
        &["--input", p(&a), "--shard", "0/2"],
        &["--shard was 0/1, now 0/2"],
    );

    // Another forward model (the CLI takes --model once, so a fresh command).
    let mut c = Command::new(env!("CARGO_BIN_EXE_main-score"));
    c.args([
        "score",
        "--threads",
        "1",
        "--max-tokens",
        "256",
        "--model",
        p(&tiny),
    ])
    .args(["--input", p(&a), "--output", p(&output)]);
    let out = run(c);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("its model was"), "{}", stderr(&out));

    // The same input moved elsewhere is the same input: it resumes.
    let moved = dir.join("moved.jsonl");
    std::fs::copy(&a, &moved).unwrap();
    let out = run_ok(main_score(&["--input", p(&moved), "--output", p(&output)]));
    assert!(
        stderr(&out).contains("resuming after 3 records"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&output).unwrap(), made);
}

/// The filters read the staged scores; seeding the stage with the finished
/// baseline (a complete run to resume) makes them cost no scoring.
fn filtered(name: &str, filters: &[&str]) -> (Vec<String>, Vec<String>) {
    let (input, full) = baseline();
    let dir = scratch(name);
    let path = dir.join("input.jsonl");
    std::fs::write(&path, input.join("\n") + "\n").unwrap();
    let output = dir.join("kept.jsonl");
    seed(
        &dir.join("kept.jsonl.scored.jsonl"),
        &(full.join("\n") + "\n"),
        &baseline_provenance(),
    );
    let mut args = vec!["--input", p(&path), "--output", p(&output)];
    args.extend_from_slice(filters);
    let out = run_ok(main_score(&args));
    assert_eq!(
        lines(&dir.join("kept.jsonl.scored.jsonl")),
        *full,
        "the stage keeps every record"
    );
    // atomic_write's temporary files are ".NAME.tmp-PID-N" beside NAME.
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    (
        lines(&output),
        stderr(&out).lines().map(str::to_string).collect(),
    )
}

fn field(line: &str, name: &str) -> f64 {
    let v: Value = serde_json::from_str(line).unwrap();
    v["alignment"][name].as_f64().expect("a number")
}

/// The `"filter"` of a filtered output's provenance.
fn filter_provenance(name: &str) -> Value {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("score_cli")
        .join(name)
        .join("kept.jsonl.provenance.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["filter"].clone()
}

/// The records `--keep-top fraction` keeps when ranking by `key` (higher
/// is better), ties in input order, in input order.
fn best(full: &[String], fraction: f64, key: impl Fn(&str) -> f64) -> Vec<&String> {
    let k = (fraction * full.len() as f64).round() as usize;
    let mut order: Vec<usize> = (0..full.len()).collect();
    order.sort_by(|&a, &b| key(&full[b]).total_cmp(&key(&full[a])));
    let mut kept: Vec<usize> = order[..k].to_vec();
    kept.sort();
    kept.into_iter().map(|i| &full[i]).collect()
}

#[test]
fn keep_top_keeps_the_best_fraction_in_input_order() {
    let (_, full) = baseline();
    let (kept, err) = filtered(
        "keep-top",
        &["--keep-top", "0.25", "--rank-by", "alignment"],
    );
    assert_eq!(kept.len(), 6, "round(0.25 x 24)");
    assert_eq!(kept.iter().collect::<Vec<_>>(), best(full, 0.25, alignment));
    assert!(err.iter().any(|l| l.contains("kept 6 of 24")), "{err:?}");
    let f = filter_provenance("keep-top");
    assert_eq!(f["rank_by"], "alignment");
    assert_eq!((f["kept"].as_u64(), f["of"].as_u64()), (Some(6), Some(24)));
}

#[test]
fn keep_top_ranks_by_the_default_field_or_another_in_either_direction() {
    let (_, full) = baseline();
    // The default: the ranking the quality benchmark supports, named in
    // the filtered output's provenance.
    let (kept, _) = filtered("keep-top-default", &["--keep-top", "0.5"]);
    let default = main_engine::rank::DEFAULT_RANK_BY;
    assert_eq!(filter_provenance("keep-top-default")["rank_by"], default);
    let by: main_engine::rank::RankBy = default.parse().unwrap();
    let key = |l: &str| by.key(Some(field(l, by.field)));
    assert_eq!(kept.iter().collect::<Vec<_>>(), best(full, 0.5, key));
    // A keep-low ranking: the lowest IFD first (fwd_pmi's order; Cherry-LLM
    // keeps the highest).
    let (kept, _) = filtered("keep-top-ifd", &["--keep-top", "0.5", "--rank-by", "-ifd"]);
    assert_eq!(filter_provenance("keep-top-ifd")["rank_by"], "-ifd");
    assert_eq!(
        kept.iter().collect::<Vec<_>>(),
        best(full, 0.5, |l| -field(l, "ifd"))
    );
    // A field that is not a score is refused, naming the fields.
    let dir = scratch("keep-top-bad-field");
    let out = run(main_score(&[
        "--input",
        "-",
        "--output",
        p(&dir.join("o.jsonl")),
        "--keep-top",
        "0.5",
        "--rank-by",
        "fwd_pmi_sum",
    ]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("\"fwd_pmi_sum\" is not a score field"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_filtered_output_is_not_resumed_as_a_scored_one() {
    filtered("filtered-then-plain", &["--keep-top", "0.5"]);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("score_cli/filtered-then-plain");
    let out = run(main_score(&[
        "--input",
        p(&dir.join("input.jsonl")),
        "--output",
        p(&dir.join("kept.jsonl")),
    ]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a filtered output cannot be resumed"),
        "{}",
        stderr(&out)
    );
}

/// Spearman's rho written out here (average ranks by counting, then
/// Pearson), apart from the engine's.
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let rank = |x: &[f64]| -> Vec<f64> {
        x.iter()
            .map(|v| {
                let below = x.iter().filter(|w| *w < v).count() as f64;
                let same = x.iter().filter(|w| *w == v).count() as f64;
                below + (same + 1.0) / 2.0
            })
            .collect()
    };
    let (ra, rb) = (rank(a), rank(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma) * (x - ma)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb) * (y - mb)).sum();
    cov / (va * vb).sqrt()
}

#[test]
fn the_summary_shows_each_score_against_length() {
    let (_, err) = filtered("summary", &["--min-alignment", "-1000"]);
    let (_, full) = baseline();
    let header = err
        .iter()
        .position(|l| l.contains("rho_length"))
        .expect("a table");
    for name in main_engine::summary::SUMMARY_FIELDS {
        let row = err[header + 1..]
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {err:?}"));
        let printed: f64 = row.split_whitespace().last().unwrap().parse().unwrap();
        // Computed here from the records: Spearman's rho of the field and
        // the response's target tokens.
        let a: Vec<f64> = full.iter().map(|l| field(l, name)).collect();
        let b: Vec<f64> = full.iter().map(|l| field(l, "response_tokens")).collect();
        let rho = spearman(&a, &b);
        assert!((printed - rho).abs() < 5e-4, "{name}: {printed} vs {rho}");
        let warned = err
            .iter()
            .any(|l| l.contains("warning") && l.contains(&format!("{name}'s rank correlation")));
        assert_eq!(
            warned,
            rho.abs() > 0.5,
            "{name}: rho {rho}, warned {warned}"
        );
    }
}

#[test]
fn min_alignment_keeps_records_at_or_above_it() {
    let (_, full) = baseline();
    let mut scores: Vec<f64> = full.iter().map(|l| alignment(l)).collect();
    scores.sort_by(f64::total_cmp);
    let x = scores[N_PAIRS / 2];
    let (kept, _) = filtered("min-alignment", &["--min-alignment", &x.to_string()]);
    let expected: Vec<&String> = full.iter().filter(|l| alignment(l) >= x).collect();
    assert_eq!(kept.iter().collect::<Vec<_>>(), expected);
    assert_eq!(kept.len(), N_PAIRS - N_PAIRS / 2);

    // Both filters must hold: the best three quarters, of which those at or above x.
    let (kept, _) = filtered(
        "both-filters",
        &[
            "--keep-top",
            "0.75",
            "--rank-by",
            "alignment",
            "--min-alignment",
            &x.to_string(),
        ],
    );
    assert_eq!(kept.iter().collect::<Vec<_>>(), expected);
    let low = scores[0] - 1.0;
    let (kept, _) = filtered(
        "both-filters-low",
        &[
            "--keep-top",
            "0.75",
            "--rank-by",
            "alignment",
            "--min-alignment",
            &low.to_string(),
        ],
    );
    assert_eq!(
        kept.len(),
        18,
        "round(0.75 x 24), the minimum holding for all"
    );
}

/// Peak resident memory of `main-score`, polled from /proc while it runs.
fn peak_rss_kib(mut c: Command) -> u64 {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        // VmHWM only grows, so the last reading before exit is the peak so far.
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(kib) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak = peak.max(
                    kib.trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap(),
                );
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "main-score failed");
            return peak;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn memory_stays_flat_as_the_input_grows() {
    let dir = scratch("flat-memory");
    // Every record carries 2 KB of extra text: 20,000 of them are 40 MB,
    // which would show in the peak if the input were held.
    let padding = "x".repeat(2048);
    let write = |name: &str, n: usize| {
        let path = dir.join(name);
        let text: String = (0..n)
            .map(|i| {
                let line = pair_line(i % 97);
                format!(
                    "{},\"notes\":\"{padding}\"}}\n",
                    line.strip_suffix('}').unwrap()
                )
            })
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    // Both runs score 20 pairs: the shard picks them out.
    let small = write("small.jsonl", 200);
    let large = write("large.jsonl", 20_000);
    let small_out = dir.join("small.out.jsonl");
    let large_out = dir.join("large.out.jsonl");
    let small_peak = peak_rss_kib(main_score(&[
        "--input",
        p(&small),
        "--output",
        p(&small_out),
        "--shard",
        "0/10",
    ]));
    let large_peak = peak_rss_kib(main_score(&[
        "--input",
        p(&large),
        "--output",
        p(&large_out),
        "--shard",
        "0/1000",
        "--progress",
    ]));
    assert_eq!(lines(&small_out).len(), 20);
    assert_eq!(lines(&large_out).len(), 20);
    assert!(
        (large_peak as f64) < 1.10 * small_peak as f64,
        "peak RSS {large_peak} KiB on 20,000 records vs {small_peak} KiB on 200"
    );
}

#[test]
fn negatives_come_from_the_batch_and_resume_mid_batch_keeps_them() {
    let dir = scratch("negatives");
    let input = write_input(&dir, 10);
    let args = |out: &Path| -> Vec<String> {
        [
            "--input",
            p(&input),
            "--output",
            p(out),
            "--negatives",
            "2",
            "--batch",
            "4",
        ]
        .map(String::from)
        .to_vec()
    };
    // Batches of 4, 4 and 2: the last one borrows pairs of the one before.
    let full_path = dir.join("full.jsonl");
    let a = args(&full_path);
    run_ok(main_score(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let full = lines(&full_path);
    assert_eq!(full.len(), 10);
    for (i, line) in full.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        let c = v["alignment"]["contrastive"]
            .as_f64()
            .expect("contrastive with --negatives");
        assert!(
            c.is_finite() && c <= 3f64.ln() + 1e-9,
            "line {i}: InfoNCE is at most ln(K+1): {c}"
        );
    }
    // Killed in the middle of the second batch: the records already written
    // join their batch again, so the rest see the same negatives.
    let resumed_path = dir.join("resumed.jsonl");
    seed(
        &resumed_path,
        &(full[..5].join("\n") + "\n"),
        &dir.join("full.jsonl.provenance.json"),
    );
    let a = args(&resumed_path);
    run_ok(main_score(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_eq!(lines(&resumed_path), full);

    let out = run(main_score(&[
        "--input",
        p(&input),
        "--negatives",
        "4",
        "--batch",
        "4",
    ]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--batch must be above it"),
        "{}",
        stderr(&out)
    );
}
