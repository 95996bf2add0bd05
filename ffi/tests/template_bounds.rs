//! A chat template is bounded in memory from C too (issue 21): GGUFs whose
//! templates double a string, nest `~` in macros, repeat a list, make a
//! namespace hold itself or recurse are refused by `main_model_load` with
//! `MAIN_ERR_FORMAT` and the engine's message, each within a second and
//! the whole C process under 200 MB peak (tests/c/template_bounds.c reads
//! its own VmHWM); then the same under valgrind memcheck, which must report
//! no error and no leak (valgrind is needed: scripts/test-ffi installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use main_engine::gguf::{Gguf, GgufWriter, Value};

const TEMPLATES: &[(&str, &str)] = &[
    (
        "doubling",
        "{% set ns = namespace(s=\"xxxxxxxx\") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    ),
    (
        "macro-concat",
        "{% macro twice(s) %}{{ s ~ s }}{% endmacro %}{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = twice(ns.s) %}{% endfor %}{{ ns.s }}",
    ),
    (
        "list-times",
        "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l * 2 %}{% endfor %}{{ ns.l | join }}",
    ),
    (
        "namespace-self",
        "{% set ns = namespace(a=0) %}{% set ns.a = ns %}{{ ns ~ '' }}{{ ns | string }}{{ ns | pprint }}{{ ns == ns }}",
    ),
    (
        "macro-recursion",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    ),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("template_bounds");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The small fixture model with `template` as its chat template, written
/// under `name`.gguf.
fn write_gguf(name: &str, template: &str) -> PathBuf {
    let dir = std::env::var_os("MAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("fixtures"));
    let src = dir.join("mistral-tiny/model.gguf");
    assert!(
        src.exists(),
        "fixture {} is missing: run scripts/fetch-fixtures",
        src.display()
    );
    let bytes = std::fs::read(&src).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in &g.metadata {
        if key != "tokenizer.chat_template" {
            w.add(key.clone(), value.clone()).unwrap();
        }
    }
    w.add("tokenizer.chat_template", Value::from(template))
        .unwrap();
    for t in &g.tensors {
        w.add_tensor(
            t.name.clone(),
            t.dtype,
            &t.dims,
            &bytes[t.offset..t.offset + t.n_bytes],
        )
        .unwrap();
    }
    let path = scratch().join(format!("{name}.gguf"));
    std::fs::write(&path, w.to_bytes()).unwrap();
    path
}

/// tests/c/template_bounds.c against the libmain.so of this build (linked
/// from a scratch folder under its SONAME too, as an installed library
/// would be, as ffi/tests/c_abi.rs does).
fn c_program() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let so = exe.parent().unwrap().join("libmain.so");
    assert!(so.exists(), "{} was not built", so.display());
    let lib = scratch().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let soname = format!("libmain.so.0.{}", env!("CARGO_PKG_VERSION_MINOR"));
    for name in ["libmain.so", soname.as_str()] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link).unwrap();
    }
    let bin = scratch().join("template_bounds");
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(repo().join("include"))
        .arg(repo().join("tests/c/template_bounds.c"))
        .arg("-o")
        .arg(&bin)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lmain")
        .output()
        .expect("cc (scripts/test-ffi installs it)");
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// (status, milliseconds, message) per model, and the peak in bytes.
fn parse(stdout: &str) -> (Vec<(String, f64, String)>, u64) {
    let mut results = Vec::new();
    let mut peak = 0;
    for line in stdout.lines() {
        if let Some(r) = line.strip_prefix("RESULT ") {
            let mut parts = r.splitn(3, ' ');
            let status = parts.next().unwrap().to_string();
            let ms = parts.next().unwrap().parse().unwrap();
            results.push((status, ms, parts.next().unwrap_or("").to_string()));
        } else if let Some(p) = line.strip_prefix("PEAK ") {
            peak = p.parse().unwrap();
        }
    }
    (results, peak)
}

#[test]
fn main_model_load_refuses_runaway_templates_fast_small_and_clean() {
    let models: Vec<PathBuf> = TEMPLATES.iter().map(|(n, t)| write_gguf(n, t)).collect();
    let bin = c_program();

    let out = Command::new(&bin).args(&models).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (results, peak) = parse(&stdout);
    assert_eq!(results.len(), TEMPLATES.len(), "{stdout}");
    for ((name, _), (status, ms, msg)) in TEMPLATES.iter().zip(&results) {
        eprintln!("{name}: {status} in {ms} ms: {msg}");
        assert_eq!(status, "MAIN_ERR_FORMAT", "{name}: {msg}");
        assert!(
            msg.starts_with("chat template: chat_template") && msg.contains("limit"),
            "{name}: {msg}"
        );
        assert!(*ms < 1000.0, "{name}: {ms} ms");
    }
    eprintln!("peak of the C process: {} MB", peak >> 20);
    assert!(peak > 0 && peak < 200 << 20, "peak {peak} bytes");

    // valgrind: every error path, no invalid access, nothing leaked.
    let vg = Command::new("valgrind")
        .args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--quiet",
        ])
        .arg(&bin)
        .args(&models)
        .output()
        .expect("valgrind (scripts/test-ffi installs it)");
    let stderr = String::from_utf8_lossy(&vg.stderr);
    assert!(vg.status.success(), "valgrind: {:?}\n{stderr}", vg.status);
    let (results, _) = parse(&String::from_utf8_lossy(&vg.stdout));
    assert_eq!(results.len(), TEMPLATES.len());
    assert!(results.iter().all(|(s, _, _)| s == "MAIN_ERR_FORMAT"));
}
