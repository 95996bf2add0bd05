//! `main-train pipeline` SIGKILLed at 10 seeded random moments of a
//! two-round run on a tiny model, the same command run again after each
//! kill, ends with the uninterrupted run's kept pairs, weights (byte for
//! byte) and losses; a config that differs from the run an output folder
//! holds is refused, naming what differs.
//!
//! The moments: the uninterrupted run is timed stage by stage (polling its
//! `pipeline-state.json`), 10 moments are drawn over its duration, and each
//! is replayed as "that stage's start plus the same offset" in the killed
//! run, so the kills spread over every stage (start-up, training, the
//! checkpoints, synthesis, the filter, the final retraining) however long
//! the resumed launches take.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

const N_KILLS: usize = 10;

/// A run folder: inputs, `main.toml` (relative paths), output in `out/`.
fn setup(dir: &Path, model: &Path, steps: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let pairs = common::alpaca_pairs(14);
    common::write_pairs(&dir.join("seed.jsonl"), &pairs[..8]);
    let mut u = String::new();
    for p in &pairs[8..] {
        u.push_str(&serde_json::json!({ "response": p.response }).to_string());
        u.push('\n');
    }
    std::fs::write(dir.join("unlabeled.jsonl"), u).unwrap();
    let config = dir.join("main.toml");
    std::fs::write(
        &config,
        format!(
            r#"
base_model = "{}"
seed_pairs = "seed.jsonl"
unlabeled = "unlabeled.jsonl"
out_dir = "out"
rounds = 2
threads = 1

[train]
steps = {steps}
batch_size = 3
lr = 1e-2
warmup = 1
max_tokens = 48
eval_fraction = 0.25
checkpoint_every = 1
align_loss = true
align_negatives = 1

[synthesis]
candidates = 2
temperature = 1.0
max_instruction_tokens = 6
max_answer_tokens = 6

[filter]
keep_top = 0.5
min_agreement = -100.0
max_tokens = 48
"#,
            model.display()
        ),
    )
    .unwrap();
    config
}

fn pipeline(config: &Path) -> Command {
    common::pipeline_command(env!("CARGO_BIN_EXE_main-train"), config)
}

/// Stages finished so far, per the state file (0 before it exists).
fn n_done(out: &Path) -> usize {
    std::fs::read(out.join("pipeline-state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map_or(0, |v| v["done"].as_array().map_or(0, |d| d.len()))
}

/// The uninterrupted run, timed: when each stage finished (seconds since
/// the launch) and the total.
fn timed_run(config: &Path, out: &Path) -> (Vec<f64>, f64) {
    let t0 = Instant::now();
    let mut child = pipeline(config).stderr(Stdio::null()).spawn().unwrap();
    let mut ends = Vec::new();
    loop {
        let done = child.try_wait().unwrap();
        let n = n_done(out);
        while ends.len() < n {
            ends.push(t0.elapsed().as_secs_f64());
        }
        if let Some(st) = done {
            assert!(st.success(), "the uninterrupted run failed");
            return (ends, t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn strip_timing(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            // What only timing or the launch changes: wall time, its rate,
            // the tokens this process ran, where it resumed from.
            for k in ["seconds", "tokens_per_s", "tokens", "resumed_from"] {
                m.remove(k);
            }
            m.values_mut().for_each(strip_timing);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_timing),
        _ => {}
    }
}

/// The per-step losses of a training run (step, loss, eval_loss).
fn losses(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {} {}", v["step"], v["loss"], v["eval_loss"])
        })
        .collect()
}

/// Everything the run decided, as (name, bytes or text) to compare.
fn results(out: &Path) -> Vec<(String, Vec<u8>)> {
    let file = |name: &str| {
        let bytes = std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        (name.to_string(), bytes)
    };
    let mut r = vec![file("curated.jsonl")];
    for round in ["round-1", "round-2"] {
        for f in [
            "scored.jsonl",
            "synthetic.jsonl",
            "kept.jsonl",
            "curated.jsonl",
        ] {
            r.push(file(&format!("{round}/{f}")));
        }
    }
    for stage in ["round-1", "round-2", "final"] {
        for d in ["forward", "reverse"] {
            r.push(file(&format!("{stage}/{d}/model/model.safetensors")));
            let run = out.join(stage).join(d);
            r.push((
                format!("{stage}/{d} losses"),
                losses(&run).join("\n").into_bytes(),
            ));
        }
    }
    let mut report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    strip_timing(&mut report);
    r.push(("report.json".into(), report.to_string().into_bytes()));
    r
}

fn kill(child: &mut Child) -> bool {
    let finished = child.try_wait().unwrap().is_some();
    if !finished {
        child.kill().unwrap(); // SIGKILL: no chance to clean up
    }
    child.wait().unwrap();
    finished
}

#[test]
fn ten_kills_and_resumes_give_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), "llama", true, 21);
    let full_cfg = setup(&tmp.path().join("full"), &model, 3);
    let full = tmp.path().join("full/out");
    let (ends, total) = timed_run(&full_cfg, &full);
    eprintln!("uninterrupted: {total:.2} s, stages ending at {ends:.2?}");
    assert_eq!(ends.len(), 2 * 4 + 2, "stages recorded");
    let expected = results(&full);

    let cut_cfg = setup(&tmp.path().join("cut"), &model, 3);
    let cut = tmp.path().join("cut/out");
    let seed: u64 = std::env::var("MAIN_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("kill moments from seed {seed} (MAIN_KILL_SEED)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut moments: Vec<f64> = (0..N_KILLS).map(|_| rng.random_range(0.0..total)).collect();
    moments.sort_by(f64::total_cmp);
    let mut killed_mid_run = 0;
    for (k, &at) in moments.iter().enumerate() {
        // The stage running at `at` in the uninterrupted run, and how far in.
        let stage = ends.iter().filter(|&&e| e <= at).count();
        let offset = at - if stage == 0 { 0.0 } else { ends[stage - 1] };
        let before = n_done(&cut);
        let t0 = Instant::now();
        let mut child = pipeline(&cut_cfg).stderr(Stdio::null()).spawn().unwrap();
        if stage > 0 {
            let give_up = Instant::now() + Duration::from_secs(120);
            while n_done(&cut) < stage
                && child.try_wait().unwrap().is_none()
                && Instant::now() < give_up
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(Duration::from_secs_f64(offset));
        let finished = kill(&mut child);
        let after = n_done(&cut);
        assert!(after >= before, "kill {}: stages lost", k + 1);
        eprintln!(
            "kill {}: at {at:.2} s of the run (stage {} + {offset:.2} s), after {:.2} s of this launch: stages done {before} -> {after}{}",
            k + 1,
            stage + 1,
            t0.elapsed().as_secs_f64(),
            if finished { " (had finished)" } else { "" }
        );
        if !finished {
            killed_mid_run += 1;
        }
    }
    assert!(
        killed_mid_run >= N_KILLS - 2,
        "only {killed_mid_run} of {N_KILLS} kills landed before the end"
    );
    let out = pipeline(&cut_cfg).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = results(&cut);
    for ((name, a), (_, b)) in expected.iter().zip(&got) {
        assert!(
            a == b,
            "after {N_KILLS} kills and resumes {name} differs from the uninterrupted run's"
        );
    }
    assert_eq!(expected.len(), got.len());

    // The same folder with other settings is refused, naming them.
    let other = setup(&tmp.path().join("cut"), &model, 4);
    let out = pipeline(&other).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.train.steps: 3 before, 4 now"), "{err}");
}
