//! The pipeline's resume state: `OUT/pipeline-state.json` says what run the
//! output folder belongs to and which stages of which rounds have finished.
//!
//! ```text
//! {"version": 1, "run": {"config": {...}, "inputs": {...}},
//!  "done": [{"round": 1, "stage": "train-forward"}, ...]}
//! ```
//! A stage writes its outputs (each file atomically) and only then is it
//! added to `done`, the file itself rewritten atomically; so a kill at any
//! moment leaves `done` naming only stages whose outputs are complete, and
//! the same command continues with the first stage not in it. The
//! finishing round of the final retraining is `rounds + 1`. The state is
//! written before any stage runs, so an output folder with pipeline
//! outputs and no state was not made by a resumable run and is refused,
//! as is a state whose run differs from this one (the config, less
//! `out_dir`, and the input files by length and BLAKE3 hash).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PipelineConfig;
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};

const VERSION: u32 = 1;
pub const STATE_FILE: &str = "pipeline-state.json";

/// The stages of a round, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    TrainForward,
    TrainReverse,
    /// Synthesis, scoring and the agreement check (one call, redone from
    /// its start when interrupted: its sampling is seeded per candidate).
    Synthesize,
    /// The mutual filter, the accumulation and the weights.
    Filter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageId {
    pub round: usize,
    pub stage: Stage,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    run: Value,
    done: Vec<StageId>,
}

/// The open state of one output folder.
pub struct ResumeState {
    path: PathBuf,
    file: StateFile,
}

/// A file by content: length and BLAKE3 hash (paths are not compared, so a
/// run may move between machines).
fn file_id(path: &Path) -> Result<Value> {
    let io = |e| Error::io(path, e);
    let mut hasher = blake3::Hasher::new();
    let f = std::fs::File::open(path).map_err(io)?;
    hasher.update_reader(f).map_err(io)?;
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    Ok(serde_json::json!({"bytes": bytes, "blake3": hasher.finalize().to_hex().to_string()}))
}

/// What makes a run: every setting but `out_dir` and the input paths, and
/// the inputs by content (the base model's JSON and safetensors files).
pub fn run_identity(cfg: &PipelineConfig) -> Result<Value> {
    let mut config =
        serde_json::to_value(cfg).map_err(|e| Error::invalid("config", e.to_string()))?;
    if let Some(o) = config.as_object_mut() {
        for k in ["out_dir", "base_model", "seed_pairs", "unlabeled"] {
            o.remove(k);
        }
        // Where the external generator listens and how it is reached may
        // change between a kill and the resume (a restarted server); which
        // models it serves is part of the run.
        let generator = o
            .get_mut("synthesis")
            .and_then(|s| s.get_mut("generator"))
            .and_then(Value::as_object_mut);
        if let Some(g) = generator {
            for k in ["url", "concurrency", "tries", "timeout_s"] {
                g.remove(k);
            }
        }
    }
    let mut model = serde_json::Map::new();
    let entries = std::fs::read_dir(&cfg.base_model).map_err(|e| Error::io(&cfg.base_model, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") || n.ends_with(".safetensors"))
        .collect();
    names.sort();
    for n in names {
        model.insert(n.clone(), file_id(&cfg.base_model.join(&n))?);
    }
    Ok(serde_json::json!({
        "config": config,
        "inputs": {
            "base_model": model,
            "seed_pairs": file_id(&cfg.seed_pairs)?,
            "unlabeled": file_id(&cfg.unlabeled)?,
        },
    }))
}

/// `a.b.c -> value` for every leaf, so two runs' differences can be named.
fn leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, x, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.to_string());
        }
    }
}

/// What differs between the run recorded and this one, e.g. `train.steps:
/// 3 before, 4 now`.
fn differences(before: &Value, now: &Value) -> Vec<String> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves("", before, &mut a);
    leaves("", now, &mut b);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let none = "(absent)".to_string();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {} before, {} now",
                a.get(k).unwrap_or(&none),
                b.get(k).unwrap_or(&none)
            )
        })
        .collect()
}

/// Outputs a pipeline writes at the top of its folder.
fn has_outputs(out_dir: &Path) -> Result<bool> {
    let entries = match std::fs::read_dir(out_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(out_dir, e)),
    };
    Ok(entries.filter_map(|e| e.ok()).any(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.starts_with("round-") || n == "final" || n == "curated.jsonl" || n == "report.json"
    }))
}

impl ResumeState {
    /// Opens the state of `out_dir` for the run `run` (see [`run_identity`]):
    /// the recorded one when it is this run's, a new one when the folder
    /// holds no pipeline outputs; anything else is refused.
    pub fn open(out_dir: &Path, run: Value) -> Result<ResumeState> {
        let path = out_dir.join(STATE_FILE);
        let afresh = format!(
            "to start afresh, remove {} (or choose another out_dir)",
            out_dir.display()
        );
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::invalid(
                        path.display().to_string(),
                        format!("not a pipeline state ({e}); {afresh}"),
                    )
                })?;
                if file.version != VERSION {
                    return Err(Error::invalid(
                        path.display().to_string(),
                        format!(
                            "written by another main-train (state version {}, this one reads {VERSION}); {afresh}",
                            file.version
                        ),
                    ));
                }
                let diff = differences(&file.run, &run);
                if !diff.is_empty() {
                    return Err(Error::invalid(
                        path.display().to_string(),
                        format!(
                            "the output folder belongs to another run, and resuming it with this config would mix the two: {}; {afresh}",
                            diff.join("; ")
                        ),
                    ));
                }
                Ok(ResumeState { path, file })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if has_outputs(out_dir)? {
                    return Err(Error::invalid(
                        out_dir.display().to_string(),
                        format!(
                            "holds pipeline outputs but no {STATE_FILE}, so what made them is unknown; {afresh}"
                        ),
                    ));
                }
                let s = ResumeState {
                    path,
                    file: StateFile {
                        version: VERSION,
                        run,
                        done: Vec::new(),
                    },
                };
                s.write()?;
                Ok(s)
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn write(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.file)
            .map_err(|e| Error::invalid("pipeline state", e.to_string()))?;
        write_atomic(&self.path, &bytes)
    }

    pub fn is_done(&self, round: usize, stage: Stage) -> bool {
        self.file.done.contains(&StageId { round, stage })
    }

    /// Records that `stage` of `round` finished (its outputs are on disk).
    pub fn finish(&mut self, round: usize, stage: Stage) -> Result<()> {
        if !self.is_done(round, stage) {
            self.file.done.push(StageId { round, stage });
            self.write()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_changed_setting() {
        let a = serde_json::json!({"config": {"rounds": 2, "train": {"steps": 3, "lr": 0.01}}});
        let b = serde_json::json!({"config": {"rounds": 2, "train": {"steps": 4, "lr": 0.01, "x": true}}});
        assert_eq!(
            differences(&a, &b),
            [
                "config.train.steps: 3 before, 4 now",
                "config.train.x: (absent) before, true now"
            ]
        );
        assert!(differences(&a, &a).is_empty());
    }

    #[test]
    fn a_state_records_stages_and_refuses_another_run() {
        let dir = std::env::temp_dir().join(format!("main-pipeline-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = serde_json::json!({"config": {"rounds": 2}});
        let mut s = ResumeState::open(&dir, run.clone()).unwrap();
        assert!(!s.is_done(1, Stage::TrainForward));
        s.finish(1, Stage::TrainForward).unwrap();
        let s = ResumeState::open(&dir, run).unwrap();
        assert!(s.is_done(1, Stage::TrainForward));
        assert!(!s.is_done(1, Stage::TrainReverse));
        let err = ResumeState::open(&dir, serde_json::json!({"config": {"rounds": 3}}))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("config.rounds: 2 before, 3 now"), "{err}");
        // Outputs without a state: refused, not overwritten.
        std::fs::remove_file(dir.join(STATE_FILE)).unwrap();
        std::fs::create_dir_all(dir.join("round-1")).unwrap();
        let err = ResumeState::open(&dir, serde_json::json!({}))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no pipeline-state.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
