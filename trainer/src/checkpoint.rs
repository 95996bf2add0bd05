//! Checkpoints that lose nothing: weights, optimizer moments, RNG and data
//! position, written so that no reader ever sees a half-written one.
//!
//! ```text
//! <run>/checkpoints/step-000040/   model.safetensors, optimizer.safetensors, state.json
//! <run>/checkpoints/latest         "step-000040"
//! ```
//! A checkpoint is written into a temporary folder (each file fsynced),
//! renamed into place (the parent fsynced), and only then does `latest`
//! (itself written to a temporary file, fsynced, renamed) point at it. A
//! kill at any moment leaves `latest` naming a complete checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{CandleExt, Error, Result};
use crate::model::TrainModel;
use crate::optim::AdamW;

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// Training examples consumed so far (all epochs).
    pub cursor: usize,
    /// Data-order RNG state at the start of the current epoch.
    pub epoch_rng: u64,
    /// What the run was started with, so a resume with other settings is refused.
    pub fingerprint: String,
}

const LATEST: &str = "latest";

pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

fn fsync_dir(dir: &Path) -> Result<()> {
    Ok(main_engine::atomic_write::fsync_dir(dir)?)
}

fn fsync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` atomically: the engine's one way
/// ([`main_engine::atomic_write`]), with the trainer's error type.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(main_engine::atomic_write::write_atomic(path, bytes)?)
}

/// Saves a checkpoint of `step` and points `latest` at it; keeps the newest
/// `keep` checkpoints.
pub fn save(
    run: &Path,
    model: &TrainModel,
    opt: &AdamW,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run);
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let name = format!("step-{:06}", state.step);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;

    let weights: HashMap<String, Tensor> = model
        .params
        .iter()
        .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
        .collect();
    let mut moments = HashMap::new();
    for (i, p) in model.params.iter().enumerate() {
        moments.insert(format!("m.{}", p.name), opt.m[i].clone());
        moments.insert(format!("v.{}", p.name), opt.v[i].clone());
    }
    moments.insert(
        "adam.step".to_string(),
        Tensor::new(&[opt.step as u32], &Device::Cpu).op("adam step")?,
    );
    for (file, tensors) in [
        ("model.safetensors", &weights),
        ("optimizer.safetensors", &moments),
    ] {
        let path = tmp.join(file);
        candle_core::safetensors::save(tensors, &path).op(&format!("write {file}"))?;
        fsync_file(&path)?;
    }
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::checkpoint(&tmp, format!("state: {e}")))?;
    let state_path = tmp.join("state.json");
    std::fs::write(&state_path, json).map_err(|e| Error::io(&state_path, e))?;
    fsync_file(&state_path)?;
    fsync_dir(&tmp)?;

    let dst = root.join(&name);
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
    }
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    fsync_dir(&root)?;
    write_atomic(&root.join(LATEST), name.as_bytes())?;

    // Older checkpoints go only once `latest` names the new one.
    let mut all: Vec<String> = std::fs::read_dir(&root)
        .map_err(|e| Error::io(&root, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    all.sort();
    let n_old = all.len().saturating_sub(keep.max(1));
    for old in &all[..n_old] {
        let _ = std::fs::remove_dir_all(root.join(old));
    }
    Ok(dst)
}

/// The checkpoint `latest` names, if any.
pub fn latest(run: &Path) -> Result<Option<PathBuf>> {
    let root = checkpoints_dir(run);
    let p = root.join(LATEST);
    match std::fs::read_to_string(&p) {
        Ok(name) => {
            let dir = root.join(name.trim());
            if !dir.join("state.json").exists() {
                return Err(Error::checkpoint(&dir, "named by 'latest' but incomplete"));
            }
            Ok(Some(dir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// Loads a checkpoint into `model` and `opt`; returns its state.
pub fn load(dir: &Path, model: &TrainModel, opt: &mut AdamW) -> Result<TrainState> {
    let state_path = dir.join("state.json");
    let bytes = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: TrainState = serde_json::from_slice(&bytes)
        .map_err(|e| Error::checkpoint(&state_path, format!("state.json: {e}")))?;
    let dev = &model.device;
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), dev)
        .op("read model.safetensors")?;
    let moments = candle_core::safetensors::load(dir.join("optimizer.safetensors"), dev)
        .op("read optimizer.safetensors")?;
    let get = |map: &HashMap<String, Tensor>, key: &str, like: &Tensor| -> Result<Tensor> {
        let t = map
            .get(key)
            .ok_or_else(|| Error::checkpoint(dir, format!("tensor '{key}' is missing")))?;
        if t.dims() != like.dims() {
            return Err(Error::checkpoint(
                dir,
                format!(
                    "tensor '{key}' has shape {:?}, the model needs {:?}",
                    t.dims(),
                    like.dims()
                ),
            ));
        }
        Ok(t.clone())
    };
    for (i, p) in model.params.iter().enumerate() {
        let like = p.var.as_tensor();
        p.var
            .set(&get(&weights, &p.name, like)?)
            .op("restore weight")?;
        opt.m[i] = get(&moments, &format!("m.{}", p.name), like)?;
        opt.v[i] = get(&moments, &format!("v.{}", p.name), like)?;
    }
    let step = moments
        .get("adam.step")
        .ok_or_else(|| Error::checkpoint(dir, "tensor 'adam.step' is missing"))?
        .to_vec1::<u32>()
        .op("adam step")?;
    opt.step = step.first().copied().unwrap_or(0) as usize;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_accepts_a_bare_file_name() {
        let tmp = std::env::temp_dir().join(format!("main-trainer-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let p = tmp.join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
        let cwd = std::env::current_dir().unwrap();
        std::env::set_current_dir(&tmp).unwrap();
        let r = write_atomic(Path::new("b.txt"), b"three");
        std::env::set_current_dir(cwd).unwrap();
        r.unwrap();
        assert_eq!(std::fs::read(tmp.join("b.txt")).unwrap(), b"three");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
