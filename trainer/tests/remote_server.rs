//! The external generator against a real third-party server: llama.cpp's
//! HTTP server (PyPI's `xllamacpp`, installed by
//! `scripts/setup-generator-server`) serving the fixture GGUF on localhost,
//! started and stopped by the test. Without that venv the tests say so and
//! pass, except under CI (`CI` set), where a missing server is a failure.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
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
    let dir = std::env::var_os("MAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("fixtures"));
    dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The server process; killed when dropped.
struct Server(Child);

impl Server {
    fn start(python: &PathBuf, port: u16) -> Server {
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
