//! Kill-and-resume: a run SIGKILLed after a checkpoint and resumed ends with
//! the same weights and loss curve as an uninterrupted run, and every
//! checkpoint on disk is complete.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn sft_cmd(model: &Path, data: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_main-train"));
    c.args(["sft", "--quiet", "--threads", "2", "--direction", "reverse"])
        .args([
            "--steps",
            "24",
            "--batch-size",
            "4",
            "--lr",
            "2e-3",
            "--warmup",
            "3",
        ])
        .args([
            "--max-tokens",
            "128",
            "--eval-fraction",
            "0.2",
            "--checkpoint-every",
            "3",
        ])
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    c
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["step"].as_u64()?, v.get("loss")?.as_f64()?)))
        .collect()
}

fn weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(
        run.join("model/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut v: Vec<_> = t
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Every checkpoint folder holds its three files; `latest` names one.
fn assert_checkpoints_complete(run: &Path) -> usize {
    let root = run.join("checkpoints");
    let latest = std::fs::read_to_string(root.join("latest")).unwrap();
    assert!(root.join(latest.trim()).join("state.json").exists());
    let mut n = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("step-") {
            for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
                assert!(root.join(&name).join(f).exists(), "{name}/{f} missing");
            }
            n += 1;
        }
    }
    n
}

#[test]
fn sigkilled_run_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), "mistral", false, 3);
    let data = tmp.path().join("pairs.jsonl");
    common::write_pairs(&data, &common::alpaca_pairs(30));

    let full = tmp.path().join("full");
    let st = sft_cmd(&model, &data, &full).status().unwrap();
    assert!(st.success());

    let cut = tmp.path().join("cut");
    let mut child = sft_cmd(&model, &data, &cut).spawn().unwrap();
    let latest = cut.join("checkpoints/latest");
    let t0 = Instant::now();
    // Kill once a checkpoint past the first exists, well before the end.
    loop {
        if let Ok(name) = std::fs::read_to_string(&latest) {
            if name.trim() >= "step-000006" {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !cut.join("report.json").exists(),
        "the run finished before it was killed: the test proved nothing"
    );
    assert!(assert_checkpoints_complete(&cut) >= 1);

    let st = sft_cmd(&model, &data, &cut)
        .arg("--resume")
        .status()
        .unwrap();
    assert!(st.success());
    assert_checkpoints_complete(&cut);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cut.join("report.json")).unwrap()).unwrap();
    assert!(report["resumed_from"].as_u64().unwrap() >= 6);
    // The resumed run reports the whole run's losses, those of the steps it
    // did not redo as they were logged.
    let full_report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(full.join("report.json")).unwrap()).unwrap();
    for key in ["eval_loss_before", "eval_loss_after", "final_train_loss"] {
        let (x, y) = (
            full_report[key].as_f64().unwrap(),
            report[key].as_f64().unwrap_or(f64::NAN),
        );
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
            "{key}: {x} vs {y} after the resume"
        );
    }

    // The same loss curve...
    let (a, b) = (losses(&full), losses(&cut));
    assert_eq!(a.len(), 24);
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    for ((s, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
            "step {s}: loss {x} vs {y}"
        );
    }
    // ...and the same weights.
    let (wa, wb) = (weights(&full), weights(&cut));
    assert_eq!(wa.len(), wb.len());
    let mut max = 0f32;
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            max = max.max((x - y).abs());
        }
    }
    eprintln!("max |Δ weight| after kill + resume: {max:e}");
    assert!(max <= 1e-5, "weights differ by {max}");
}

#[test]
fn resume_with_other_settings_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), "llama", true, 4);
    let data = tmp.path().join("pairs.jsonl");
    common::write_pairs(&data, &common::alpaca_pairs(10));
    let run = tmp.path().join("run");
    let mut c = sft_cmd(&model, &data, &run);
    c.args(["--steps", "3"]);
    assert!(c.status().unwrap().success());
    let out = sft_cmd(&model, &data, &run)
        .args(["--steps", "6", "--lr", "1e-3", "--resume"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("other settings"), "{err}");
}
