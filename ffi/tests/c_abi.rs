//! The C ABI driven from C: `tests/c/test_main.c` is compiled with the
//! system C compiler (env `CC`, else `cc`) against the libmain.so this test
//! build produced, run on real pairs with the fixture model, and its printed
//! bits compared with the Rust API's. Also: `include/main.h` compiles as
//! C11 and as C++17 with `-Wall -Wextra -Werror`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use main_engine::logprob::sequence_logprobs;
use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};
use main_engine::score::{Pair, PairScore};
use main_engine::scorer::{Scorer, ScorerParams};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    let dir = std::env::var_os("MAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("fixtures"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "fixture {} is missing: run scripts/fetch-fixtures",
        p.display()
    );
    p
}

fn model_path() -> PathBuf {
    fixture("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_abi");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn compiler(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// The directory holding the libmain.so of this build. `cargo test` builds
/// every crate type of the library beside the test binary, in
/// `target/<profile>/deps/`, from the same sources as the Rust side of this
/// test (`target/<profile>/libmain.so` is only refreshed by `cargo build`).
/// It is linked from a scratch folder under its SONAME too, as an installed
/// library would be.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let so = exe.parent().unwrap().join("libmain.so");
    assert!(so.exists(), "{} was not built", so.display());
    let dir = scratch().join("lib");
    std::fs::create_dir_all(&dir).unwrap();
    let soname = format!("libmain.so.0.{}", env!("CARGO_PKG_VERSION_MINOR"));
    for name in ["libmain.so", soname.as_str()] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link).unwrap();
    }
    dir
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {cmd:?}: {e} (the C tests need cc and c++; \
                 scripts/test-ffi installs them)"
        )
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compiles tests/c/test_main.c once per test process.
fn c_test() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let lib = lib_dir();
        let bin = scratch().join("test_main");
        run_ok(
            Command::new(compiler("CC", "cc"))
                .args(["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"])
                .arg("-I")
                .arg(repo().join("include"))
                .arg(repo().join("tests/c/test_main.c"))
                .arg("-o")
                .arg(&bin)
                .arg(format!("-L{}", lib.display()))
                .arg(format!("-Wl,-rpath,{}", lib.display()))
                .args(["-lmain", "-lpthread", "-lm"]),
        );
        bin
    })
}

/// The first `n` Alpaca pairs of the fixture file.
fn alpaca_pairs(n: usize) -> Vec<Pair> {
    let text = std::fs::read_to_string(fixture("alpaca_en_demo.jsonl")).unwrap();
    text.lines()
        .take(n)
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
            Pair::from_alpaca(&field("instruction"), &field("input"), &field("output"))
        })
        .collect()
}

/// The pairs as the C test reads them: NUL-separated strings.
fn write_pairs(name: &str, pairs: &[Pair]) -> PathBuf {
    let mut bytes = Vec::new();
    for p in pairs {
        for s in [&p.instruction, &p.response] {
            assert!(!s.contains('\0'));
            bytes.extend_from_slice(s.as_bytes());
            bytes.push(0);
        }
    }
    let path = scratch().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// One pair's line as test_main.c prints it: index, 13 doubles as hex bits,
/// instruction_tokens, response_tokens, truncated.
fn expected_line(i: usize, s: &PairScore) -> String {
    let doubles = [
        s.alignment,
        s.fwd_pmi,
        s.rev_pmi,
        s.fwd_cond,
        s.fwd_uncond,
        s.rev_cond,
        s.rev_uncond,
        s.ifd,
        s.rifd,
        s.semantic,
        s.structural,
        s.intentional,
        s.contrastive.unwrap_or(f64::NAN),
        s.fwd_pmi_total,
        s.rev_pmi_total,
    ];
    let hex: Vec<String> = doubles
        .iter()
        .map(|d| format!("{:016x}", d.to_bits()))
        .collect();
    format!(
        "{i} {} {} {} {}",
        hex.join(" "),
        s.instruction_tokens,
        s.response_tokens,
        s.truncated as u32
    )
}

fn rust_scores(pairs: &[Pair], params: ScorerParams) -> Vec<PairScore> {
    let model = Arc::new(Model::load(&model_path()).unwrap());
    let mut scorer = Scorer::new(model, None, params).unwrap();
    scorer.score_batch(pairs).unwrap()
}

#[test]
fn error_paths_return_their_status_and_message() {
    let tmp = scratch().join("errors");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = run_ok(
        Command::new(c_test())
            .arg("errors")
            .arg(model_path())
            .arg(&tmp),
    );
    assert!(out.contains("errors: 0 failures"), "{out}");
}

#[test]
fn scores_from_c_equal_the_rust_api_bit_for_bit() {
    // Short views keep it fast; max_tokens 96 also truncates the long pairs.
    let pairs = alpaca_pairs(5);
    let file = write_pairs("scores.bin", &pairs);
    let (max_tokens, negatives, n_threads) = (96, 2, 2);
    let out = run_ok(
        Command::new(c_test())
            .arg("scores")
            .arg(model_path())
            .arg(&file)
            .args([max_tokens, negatives, n_threads].map(|v| v.to_string())),
    );
    let want = rust_scores(
        &pairs,
        ScorerParams {
            max_tokens,
            negatives,
            n_threads,
            ..Default::default()
        },
    );
    assert!(
        want.iter().any(|s| s.truncated) && want.iter().any(|s| !s.truncated && s.fwd_pmi != 0.0),
        "the pairs should cover whole and truncated pairs: {want:?}"
    );
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), pairs.len(), "{out}");
    for (i, (line, s)) in got.iter().zip(&want).enumerate() {
        assert_eq!(*line, expected_line(i, s), "pair {i}: C vs Rust ({s:?})");
    }
}

#[test]
fn eight_threads_sharing_one_model_match_one_thread() {
    // Pairs 1..4 are short enough to be scored whole in 64 tokens.
    let pairs = alpaca_pairs(4)[1..].to_vec();
    let file = write_pairs("threads.bin", &pairs);
    let max_tokens = 64;
    let out = run_ok(
        Command::new(c_test())
            .arg("threads")
            .arg(model_path())
            .arg(&file)
            .args([max_tokens, 8].map(|v| v.to_string())),
    );
    assert!(
        out.contains("threads: 8 threads x 3 pairs, 0 failures"),
        "{out}"
    );
    // And the one-thread C reference is the Rust API's result, pair by pair.
    let want: Vec<String> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = rust_scores(
                std::slice::from_ref(p),
                ScorerParams {
                    max_tokens,
                    n_threads: 1,
                    ..Default::default()
                },
            );
            assert!(s[0].fwd_pmi != 0.0 && s[0].rev_pmi != 0.0, "{:?}", s[0]);
            expected_line(i, &s[0])
        })
        .collect();
    let got: Vec<&str> = out.lines().take(pairs.len()).collect();
    assert_eq!(got, want);
}

#[test]
fn per_token_detail_and_text_logprobs() {
    let pairs = alpaca_pairs(2);
    let file = write_pairs("detail.bin", &pairs);
    let text = "The quick brown fox jumps over the lazy dog. Überraschung: 42!";
    let text_file = scratch().join("text.txt");
    std::fs::write(&text_file, text).unwrap();
    let out = run_ok(
        Command::new(c_test())
            .arg("detail")
            .arg(model_path())
            .arg(&file)
            .arg(&text_file),
    );
    assert!(out.contains("detail: 0 failures"), "{out}");

    // The text log-probs are the engine's, bit for bit.
    let model = Model::load(&model_path()).unwrap();
    let rt = Runtime::new(1, Precision::Fast);
    let tok = &model.tokenizer;
    let ids = tok.encode(text, tok.add_bos_default(), false).unwrap();
    let lps = sequence_logprobs(&model, &rt, &ids).unwrap();
    let want: Vec<String> = ids
        .iter()
        .zip(&lps)
        .enumerate()
        .map(|(i, (id, lp))| format!("token {i} {id} {:016x}", lp.unwrap_or(f64::NAN).to_bits()))
        .collect();
    let got: Vec<&str> = out.lines().filter(|l| l.starts_with("token ")).collect();
    assert_eq!(got, want);
    let ppl = main_engine::logprob::perplexity(&lps);
    assert!(
        out.contains(&format!("perplexity {:016x}", ppl.to_bits())),
        "{out}"
    );
}

/// A file that is both C and C++ and uses every type of the header.
#[test]
fn header_compiles_as_c11_and_cpp17() {
    let src = repo().join("tests/c/header_compile.c");
    let include = repo().join("include");
    for (cc, lang, std) in [
        (compiler("CC", "cc"), "c", "-std=c11"),
        (compiler("CXX", "c++"), "c++", "-std=c++17"),
    ] {
        let obj = scratch().join(format!("header_{lang}.o"));
        run_ok(
            Command::new(&cc)
                .args(["-x", lang, std, "-Wall", "-Wextra", "-Werror", "-pedantic"])
                .arg("-I")
                .arg(&include)
                .arg("-c")
                .arg(&src)
                .arg("-o")
                .arg(&obj),
        );
    }
}
