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

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{CandleExt, Error, Result};
use crate::model::TrainModel;
use crate::optim::{AdamW, MomentBuf, MomentsKind};
use crate::tensor_file::{self, Blob, TensorFile};

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

    let weights: Vec<(String, Blob)> = model
        .params
        .iter()
        .map(|p| (p.name.clone(), Blob::Tensor(p.var.as_tensor())))
        .collect();
    let step = Tensor::new(&[opt.step as u32], &Device::Cpu).op("adam step")?;
    let mut moments = vec![("adam.step".to_string(), Blob::Tensor(&step))];
    for (p, st) in model.params.iter().zip(&opt.state) {
        let shape = p.var.dims().to_vec();
        if let Some(d) = &st.device {
            // On the GPU: the same names, dtypes and shapes, each tensor
            // copied to the host only as it is written.
            for (key, t, absmax) in [("m", &d.m, &d.m_absmax), ("v", &d.v, &d.v_absmax)] {
                let name = format!("{key}.{}", p.name);
                match absmax {
                    None => moments.push((name, Blob::Tensor(t))),
                    Some(a) => {
                        moments.push((format!("{name}.q"), Blob::Tensor(t)));
                        moments.push((format!("{name}.absmax"), Blob::Tensor(a)));
                    }
                }
            }
            if let Some(m) = &d.master {
                moments.push((format!("master.{}", p.name), Blob::Tensor(m)));
            }
            continue;
        }
        for (key, buf) in [("m", &st.m), ("v", &st.v)] {
            let name = format!("{key}.{}", p.name);
            match buf {
                MomentBuf::F32(x) => moments.push((name, Blob::F32(x, shape.clone()))),
                MomentBuf::Bf16(x) => moments.push((name, Blob::Bf16(x, shape.clone()))),
                MomentBuf::Bit8(q) => {
                    let n_blocks = q.absmax.len();
                    moments.push((format!("{name}.q"), Blob::U8(&q.codes, vec![q.len()])));
                    moments.push((
                        format!("{name}.absmax"),
                        Blob::F32(&q.absmax, vec![n_blocks]),
                    ));
                }
            }
        }
        if let Some(m) = &st.master {
            moments.push((format!("master.{}", p.name), Blob::F32(m, shape.clone())));
        }
    }
    // Tensor by tensor: each is converted to bytes only as it is written.
    for (file, tensors) in [
        ("model.safetensors", &weights),
        ("optimizer.safetensors", &moments),
    ] {
        let path = tmp.join(file);
        tensor_file::write(&path, tensors)?;
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

/// Loads a checkpoint into `model` and `opt`; returns its state. Every
/// tensor is read on its own straight into the buffer that already holds
/// it (the weight's storage, the moment's buffer), so a resume never holds
/// the zeroed state and the whole checkpoint at once: the extra memory is
/// one tensor's bytes.
pub fn load(dir: &Path, model: &TrainModel, opt: &mut AdamW) -> Result<TrainState> {
    let state_path = dir.join("state.json");
    let bytes = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: TrainState = serde_json::from_slice(&bytes)
        .map_err(|e| Error::checkpoint(&state_path, format!("state.json: {e}")))?;
    let mut weights = TensorFile::open(&dir.join("model.safetensors"))?;
    let mut moments = TensorFile::open(&dir.join("optimizer.safetensors"))?;
    if opt.state.len() != model.params.len() {
        return Err(Error::checkpoint(
            dir,
            format!(
                "the optimizer has {} tensors, the model {}",
                opt.state.len(),
                model.params.len()
            ),
        ));
    }
    // Say which moment format the checkpoint has before any tensor error.
    if let Some(p) = model.params.first() {
        let found = match moments.entries.get(&format!("m.{}", p.name)) {
            Some(e) if e.dtype == "F32" => Some(MomentsKind::F32),
            Some(e) if e.dtype == "BF16" => Some(MomentsKind::Bf16),
            Some(_) => None,
            None if moments.entries.contains_key(&format!("m.{}.q", p.name)) => {
                Some(MomentsKind::Bit8)
            }
            None => None,
        };
        let want = opt.params.moments;
        if found.is_some_and(|f| f != want) {
            return Err(Error::checkpoint(
                dir,
                format!(
                    "holds {} moments, this run keeps them as {} (--moments)",
                    found.map_or("?", |f| f.name()),
                    want.name()
                ),
            ));
        }
    }
    let mut buf = Vec::new();
    for (p, st) in model.params.iter().zip(opt.state.iter_mut()) {
        let like = p.var.as_tensor();
        let shape = like.dims().to_vec();
        let t = weights.tensor(&p.name, like.dtype(), &shape, &mut buf)?;
        let t = t.to_device(like.device()).op("restore weight")?;
        p.var.set(&t).op("restore weight")?;
        if let Some(d) = st.device.as_mut() {
            load_device_state(&mut moments, dir, &p.name, d, &mut buf)?;
            continue;
        }
        for (key, m) in [("m", &mut st.m), ("v", &mut st.v)] {
            let name = format!("{key}.{}", p.name);
            match m {
                MomentBuf::F32(x) => {
                    moments.read_into(&name, "F32", &shape, &mut buf)?;
                    tensor_file::f32s_into(&buf, x);
                }
                MomentBuf::Bf16(x) => {
                    moments.read_into(&name, "BF16", &shape, &mut buf)?;
                    tensor_file::bf16s_into(&buf, x);
                }
                MomentBuf::Bit8(q) => {
                    let n = q.len();
                    moments.read_into(&format!("{name}.q"), "U8", &[n], &mut buf)?;
                    q.codes.copy_from_slice(&buf);
                    let nb = q.absmax.len();
                    moments.read_into(&format!("{name}.absmax"), "F32", &[nb], &mut buf)?;
                    tensor_file::f32s_into(&buf, &mut q.absmax);
                }
            }
        }
        let master_name = format!("master.{}", p.name);
        match &mut st.master {
            Some(m) => {
                moments.read_into(&master_name, "F32", &shape, &mut buf)?;
                tensor_file::f32s_into(&buf, m);
            }
            None if moments.entries.contains_key(&master_name) => {
                return Err(Error::checkpoint(
                    dir,
                    format!("holds an f32 master copy ('{master_name}'), this run keeps none (--master)"),
                ));
            }
            None => {}
        }
    }
    moments.read_into("adam.step", "U32", &[1], &mut buf)?;
    opt.step = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    Ok(state)
}

/// One tensor's AdamW state on the GPU from the checkpoint: each tensor is
/// read to the host on its own (checked for name, dtype and shape as the
/// host state is) and replaces the device tensor it restores.
fn load_device_state(
    moments: &mut TensorFile,
    dir: &Path,
    param: &str,
    d: &mut crate::optim::device::DeviceState,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let mut restore = |name: &str, t: &mut Tensor| -> Result<()> {
        let host = moments.tensor(name, t.dtype(), t.dims(), buf)?;
        *t = host.to_device(t.device()).op("restore optimizer state")?;
        Ok(())
    };
    for (key, t, absmax) in [
        ("m", &mut d.m, &mut d.m_absmax),
        ("v", &mut d.v, &mut d.v_absmax),
    ] {
        let name = format!("{key}.{param}");
        match absmax {
            None => restore(&name, t)?,
            Some(a) => {
                restore(&format!("{name}.q"), t)?;
                restore(&format!("{name}.absmax"), a)?;
            }
        }
    }
    let master_name = format!("master.{param}");
    match &mut d.master {
        Some(m) => restore(&master_name, m)?,
        None if moments.entries.contains_key(&master_name) => {
            return Err(Error::checkpoint(
                dir,
                format!(
                    "holds an f32 master copy ('{master_name}'), this run keeps none (--master)"
                ),
            ));
        }
        None => {}
    }
    Ok(())
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
