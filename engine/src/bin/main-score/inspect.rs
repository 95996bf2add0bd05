//! `main-score inspect`: a model's metadata, or the GPU and the CUDA libraries.

use std::io::Write;
use std::path::Path;

use main_engine::model::Model;
use main_engine::{Device, Error, Result};

/// `inspect --device cuda:N`: the CUDA libraries as cudarc finds them,
/// printed before the GPU is opened (so a failing open still shows them),
/// then the GPU and the files the process holds once the kernels compiled.
pub fn inspect_device(device: Device) -> Result<()> {
    let Device::Cuda(ordinal) = device else {
        return Err(Error::invalid_argument(
            "--device",
            "inspect describes a GPU: give cuda or cuda:N",
        ));
    };
    let mut out = std::io::stdout().lock();
    let mut w = |k: &str, v: &str| {
        writeln!(out, "{:<32}{v}", format!("{k}:")).map_err(|e| Error::io("stdout", e))
    };
    for (what, file) in main_engine::cuda::libraries(ordinal)? {
        w(&what, &file)?;
    }
    for (what, value) in main_engine::cuda::device_report(ordinal)? {
        w(&what, &value)?;
    }
    Ok(())
}

pub fn inspect(path: &Path, list_tensors: bool) -> Result<()> {
    let model = Model::load(path)?;
    let c = &model.config;
    let mut out = std::io::stdout().lock();
    let w = |out: &mut std::io::StdoutLock, s: String| {
        writeln!(out, "{s}").map_err(|e| Error::io("stdout", e))
    };
    w(&mut out, format!("model:          {}", path.display()))?;
    w(&mut out, format!("architecture:   {}", c.architecture))?;
    w(&mut out, format!("layers:         {}", c.n_layers))?;
    w(&mut out, format!("d_model:        {}", c.d_model))?;
    w(
        &mut out,
        format!(
            "heads:          {} (kv {}), head_dim {}",
            c.n_heads, c.n_kv_heads, c.head_dim
        ),
    )?;
    w(&mut out, format!("d_ff:           {}", c.d_ff))?;
    w(&mut out, format!("vocab:          {}", c.vocab_size))?;
    w(&mut out, format!("context:        {}", c.context_length))?;
    w(
        &mut out,
        format!(
            "rope:           theta {} ({:?}{})",
            c.rope_theta,
            c.rope_style,
            if c.rope_freq_factors.is_some() {
                ", scaled"
            } else {
                ""
            }
        ),
    )?;
    w(
        &mut out,
        format!(
            "sliding window: {}",
            c.sliding_window.map_or("none".into(), |s| s.to_string())
        ),
    )?;
    w(&mut out, format!("rms eps:        {}", c.rms_eps))?;
    let mut tensors: Vec<_> = model.tensors().collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let params: usize = tensors.iter().map(|t| t.n_elements()).sum();
    let mut by_type = std::collections::BTreeMap::<&str, (usize, usize)>::new();
    for t in &tensors {
        let e = by_type.entry(t.dtype.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
    }
    w(
        &mut out,
        format!(
            "parameters:     {params} ({:.1} MB of weights)",
            model.weight_bytes() as f64 / 1e6
        ),
    )?;
    for (ty, (n, bytes)) in by_type {
        w(
            &mut out,
            format!("  {ty:<6} {n:>4} tensors, {:.1} MB", bytes as f64 / 1e6),
        )?;
    }
    let tok = &model.tokenizer;
    w(
        &mut out,
        format!(
            "tokenizer:      {} tokens, bos {:?}, eos {:?}, eot {:?}, adds BOS: {}",
            tok.vocab_size(),
            tok.bos_id(),
            tok.eos_id(),
            tok.eot_id(),
            tok.add_bos_default()
        ),
    )?;
    match &model.chat_template {
        Some(t) => w(&mut out, format!("chat template:\n{t}"))?,
        None => w(
            &mut out,
            "chat template:  none (the Alpaca template is used)".into(),
        )?,
    }
    if list_tensors {
        for t in tensors {
            w(
                &mut out,
                format!("{:<32} {:<5} {:?}", t.name, t.dtype.name(), t.dims),
            )?;
        }
    }
    Ok(())
}
