//! `main-score report` on 100,000 records in bounded memory (issue 23):
//! real scored pairs (target/report/scored-1000.jsonl of
//! scripts/scored-demo, their per-token detail left out) repeated with
//! varied ids and instructions; the child's own peak resident memory (VmHWM
//! of its /proc/self/status, which it prints with the hidden
//! `--report-peak-memory`; not ru_maxrss, which Linux carries across exec)
//! is under 500 MB, and with caps below the record count it does not grow
//! from 20,000 to 100,000 records. Timings live in BENCHMARKS.md
//! (benches/report_scale.sh), never here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main_score() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_main-score"))
}

fn scored_demo() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/report/scored-1000.jsonl");
    p.is_file().then_some(p)
}

/// Writes `n` records cycling through `base`'s, each with its own id,
/// instruction suffix and line.
fn write_records(base: &[serde_json::Value], n: usize, path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for k in 0..n {
        let mut r = base[k % base.len()].clone();
        r["id"] = serde_json::json!(k);
        if let Some(i) = r.get_mut("instruction") {
            *i = serde_json::json!(format!("{} #{k}", i.as_str().unwrap_or("")));
        }
        r["alignment"]["line"] = serde_json::json!(k + 1);
        serde_json::to_writer(&mut out, &r).unwrap();
        out.write_all(b"\n").unwrap();
    }
}

/// Runs the report; returns the child's peak resident bytes.
fn peak_of(input: &Path, extra: &[&str]) -> u64 {
    let out = Command::new(main_score())
        .arg("report")
        .arg(input)
        .arg("-o")
        .arg(input.with_extension("html"))
        .args(["--report-peak-memory", "--keep-top", "0.5"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("{\"peak_bytes\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["peak_bytes"].as_u64().unwrap()
}

#[test]
fn a_hundred_thousand_records_in_bounded_memory() {
    let Some(demo) = scored_demo() else {
        // scripts/test's report stage runs this test again after scoring
        // the set, and requires it there.
        assert!(
            std::env::var_os("MAIN_REPORT_DEMO_REQUIRED").is_none(),
            "target/report/scored-1000.jsonl is missing: run scripts/scored-demo"
        );
        eprintln!(
            "skipped: target/report/scored-1000.jsonl is missing (run scripts/scored-demo first)"
        );
        return;
    };
    let base: Vec<serde_json::Value> = std::fs::read_to_string(demo)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut r: serde_json::Value = serde_json::from_str(l).unwrap();
            let a = r["alignment"].as_object_mut().unwrap();
            a.remove("response_detail");
            a.remove("instruction_detail");
            if let Some(turns) = a.get_mut("turns").and_then(|t| t.as_array_mut()) {
                for t in turns {
                    let t = t.as_object_mut().unwrap();
                    t.remove("response_detail");
                    t.remove("instruction_detail");
                }
            }
            r
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("main-report-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (small, large) = (dir.join("20k.jsonl"), dir.join("100k.jsonl"));
    write_records(&base, 20_000, &small);
    write_records(&base, 100_000, &large);

    // The defaults: 100,000 records (all exact) under 500 MB.
    let peak = peak_of(&large, &[]);
    eprintln!("100k records, default caps: peak {} MB", peak >> 20);
    assert!(peak < 500 << 20, "peak {peak} bytes");

    // Caps below both counts: the peak does not grow with the records.
    let caps = ["--exact-cap", "10000", "--max-distinct", "10000"];
    let (p20, p100) = (peak_of(&small, &caps), peak_of(&large, &caps));
    eprintln!(
        "capped at 10,000: 20k records {} MB, 100k records {} MB",
        p20 >> 20,
        p100 >> 20
    );
    assert!(
        p100 <= p20 + (8 << 20),
        "20k: {p20} bytes, 100k: {p100} bytes"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_an_error_naming_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("main-report-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str, text: &str, extra: &[&str]| -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(main_score())
            .arg("report")
            .arg(&path)
            .arg("-o")
            .arg(dir.join("r.html"))
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let good = r#"{"instruction":"a","output":"b","alignment":{"alignment":0.1,"fwd_pmi":0.1,"rev_pmi":0.2,"line":1}}"#;
    let e = run(
        "plain.jsonl",
        "{\"instruction\":\"a\",\"output\":\"b\"}\n",
        &[],
    );
    assert!(
        e.contains("plain.jsonl, line 1") && e.contains("no \"alignment\" object"),
        "{e}"
    );
    let e = run("cut.jsonl", &format!("{good}\n{}", &good[..40]), &[]);
    assert!(
        e.contains("cut.jsonl, line 2") && e.contains("cut short"),
        "{e}"
    );
    let e = run(
        "long.jsonl",
        &format!("{good}\n{good}\n{}\n", "x".repeat(4096)),
        &["--max-line-bytes", "1024"],
    );
    assert!(
        e.contains("long.jsonl, line 3") && e.contains("limit of 1024 bytes"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
