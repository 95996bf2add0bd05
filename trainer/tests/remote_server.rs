//! The external generator against a real third-party server: llama.cpp's
//! HTTP server (PyPI's `xllamacpp`, installed by
//! `scripts/setup-generator-server`) serving the fixture GGUF on localhost,
//! started and stopped by the test. Without that venv the tests say so and
//! pass, except under CI (`CI` set), where a missing server is a failure.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use main_trainer::remote::{CompletionRequest, RemoteGenerator, RemoteParams};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("MAIN_GENERATOR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("cache/generator-server/bin/python"));
    if p.exists() {
        return Some(p);
    }
    let why = format!(
        "no server venv at {} (run scripts/setup-generator-server)",
        p.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}

fn model() -> PathBuf {
    common::fixture("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The server process; killed when dropped.
struct Server(Child);

impl Server {
    fn start(python: &Path, port: u16) -> Server {
        let mut child = Command::new(python)
            .arg(repo().join("scripts/generator-server.py"))
            .arg(model())
            .arg(port.to_string())
            .args(["--parallel", "2", "--threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if line.starts_with("listening") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(120))
            .expect("the server did not start listening within 120 s");
        Server(child)
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// "Counting: n, n+1, n+2," continues with n+3 under greedy decoding, on
/// this model: a completion that can be checked, so that answers coming back
/// in another order than the requests would be seen.
fn counting(n: usize) -> CompletionRequest {
    CompletionRequest {
        prompt: format!("Counting: {n}, {}, {},", n + 1, n + 2),
        max_tokens: 6,
        temperature: 0.0,
        top_p: 1.0,
        seed: 7,
        stop: vec!["\n".into()],
    }
}

fn params(port: u16) -> RemoteParams {
    RemoteParams {
        url: format!("http://127.0.0.1:{port}/v1"),
        concurrency: 4,
        tries: 2,
        backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(60),
        ..RemoteParams::default()
    }
}

#[test]
fn completions_come_back_in_request_order_with_stops_applied() {
    let Some(py) = python() else { return };
    let port = free_port();
    let _server = Server::start(&py, port);
    let g = RemoteGenerator::new(params(port)).unwrap();
    let starts = [3, 10, 41, 77, 120, 5, 18, 250, 63, 9, 31, 400];
    let requests: Vec<_> = starts.iter().map(|&n| counting(n)).collect();
    let progress = std::sync::Mutex::new(Vec::new());
    let texts = g
        .complete(&requests, &|done| progress.lock().unwrap().push(done))
        .unwrap();
    assert_eq!(texts.len(), starts.len());
    let mut right = 0;
    for (n, text) in starts.iter().zip(&texts) {
        assert!(!text.contains('\n'), "the stop string is cut: {text:?}");
        if text.trim_start().starts_with(&format!("{},", n + 3)) {
            right += 1;
        }
    }
    eprintln!(
        "{right}/{} completions continue their own count: {texts:?}",
        starts.len()
    );
    // Each answer continues its own prompt: answers out of order would
    // continue another count.
    assert!(right >= starts.len() - 1, "{texts:?}");
    let mut seen = progress.into_inner().unwrap();
    seen.sort();
    assert_eq!(seen, (1..=starts.len()).collect::<Vec<_>>());
}

/// The server killed in the middle of a run: the run ends with an error
/// naming the server and its tries (no hang), and once the server is back
/// on the same address the same requests complete.
#[test]
fn a_server_stopped_mid_run_is_a_clear_error_and_the_run_can_go_on() {
    let Some(py) = python() else { return };
    let port = free_port();
    let mut server = Server::start(&py, port);
    let g = RemoteGenerator::new(RemoteParams {
        concurrency: 2,
        ..params(port)
    })
    .unwrap();
    let requests: Vec<_> = (0..16)
        .map(|i| CompletionRequest {
            max_tokens: 12,
            ..counting(i * 7)
        })
        .collect();
    let first_done = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    let t = Instant::now();
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                if first_done.load(Ordering::Relaxed) {
                    server.stop();
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let r = g.complete(&requests, &|_| first_done.store(true, Ordering::Relaxed));
        finished.store(true, Ordering::Relaxed);
        r
    });
    let e = result.expect_err("the server was stopped").to_string();
    eprintln!("error after {:?}: {e}", t.elapsed());
    assert!(
        e.contains(&format!("127.0.0.1:{port}/v1/completions")),
        "{e}"
    );
    assert!(e.contains("after 2 tries"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());

    let _again = Server::start(&py, port);
    let texts = g.complete(&requests, &|_| {}).unwrap();
    assert_eq!(texts.len(), requests.len());
}

/// A one-round pipeline on a tiny model whose guesses and answers come from
/// the server (the fixture GGUF, one slot, one request at a time, so that
/// the server sees the same requests in the same order every run).
fn pipeline_config(dir: &Path, port: u16) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let model = common::tiny_model(dir, "llama", true, 5);
    let pairs = common::alpaca_pairs(14);
    common::write_pairs(&dir.join("seed.jsonl"), &pairs[..8]);
    let mut u = String::new();
    for p in &pairs[8..] {
        u.push_str(&serde_json::json!({ "response": p.response }).to_string());
        u.push('\n');
    }
    std::fs::write(dir.join("unlabeled.jsonl"), u).unwrap();
    let config = dir.join("main.toml");
    let toml = format!(
        r#"
base_model = "{}"
seed_pairs = "seed.jsonl"
unlabeled = "unlabeled.jsonl"
out_dir = "out"
rounds = 1
threads = 1

[train]
steps = 2
batch_size = 3
max_tokens = 48
checkpoint_every = 1

[synthesis]
candidates = 2
temperature = 0.8
max_instruction_tokens = 12
max_answer_tokens = 8

[synthesis.generator]
url = "http://127.0.0.1:{port}"
concurrency = 1
tries = 2
timeout_s = 60

[filter]
keep_top = 0.5
min_agreement = -100.0
max_tokens = 64
"#,
        model.display()
    );
    std::fs::write(&config, toml).unwrap();
    config
}

fn pipeline(config: &Path) -> Command {
    common::pipeline_command(env!("CARGO_BIN_EXE_main-train"), config)
}

/// The kept pairs of a finished run (instruction, response, weight).
fn curated(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("out/curated.jsonl")).unwrap()
}

/// The pipeline's synthesis through the server, the server killed while the
/// guesses are coming in: the run stops with an error naming the server,
/// and the same command, once the server is back, continues (training is
/// not redone) and ends with the kept pairs of a run that was never
/// interrupted.
#[test]
fn the_pipeline_synthesises_through_the_server_and_resumes_after_it_stops() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();

    let port = free_port();
    let whole = pipeline_config(&tmp.path().join("whole"), port);
    let server = Server::start(&py, port);
    let st = pipeline(&whole).stderr(Stdio::null()).status().unwrap();
    assert!(st.success(), "the uninterrupted run failed");
    drop(server);
    let expected = curated(&tmp.path().join("whole"));
    assert!(!expected.is_empty());

    let port = free_port();
    let cut = pipeline_config(&tmp.path().join("cut"), port);
    let mut server = Server::start(&py, port);
    let mut child = pipeline(&cut).stderr(Stdio::piped()).spawn().unwrap();
    let mut said = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("guesses from") {
            server.stop();
        }
        said.push_str(&line);
        said.push('\n');
    }
    let st = child.wait().unwrap();
    assert!(!st.success(), "the run went on without its server: {said}");
    let endpoint = format!("generator http://127.0.0.1:{port}/v1/completions");
    assert!(said.contains(&endpoint), "{said}");

    let _again = Server::start(&py, port);
    let out = pipeline(&cut).stderr(Stdio::piped()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("round-1/forward") && !said.contains("round-1/reverse"),
        "round 1's training ran again: {said}"
    );
    assert_eq!(curated(&tmp.path().join("cut")), expected);
}
