//! Trained weights to GGUF (F16, Q8_0, Q4_K, ...) through the engine's
//! writer. GGUF carries the tokenizer as metadata, which a Hugging Face
//! folder does not have in that form, so the vocabulary and chat template
//! come from a GGUF of the same base model (`--vocab`); the two tokenizers
//! are checked to agree before anything is written.

use std::path::Path;

use main_engine::config::Config;
use main_engine::gguf::{Gguf, GgufWriter, Value};
use main_engine::model::Model as EngineModel;
use main_engine::quant::{quantize_row, DType};
use main_engine::safetensors::permute_qk;

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};

/// llama.cpp's `general.file_type` for a weight type.
fn file_type(ty: DType) -> u32 {
    match ty {
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        DType::Q4_K => 15,
        DType::Q5_K => 17,
        DType::Q6_K => 18,
        DType::BF16 => 32,
        _ => 0,
    }
}

/// Architecture keys of `config`, as llama.cpp names them.
fn arch_metadata(w: &mut GgufWriter, c: &Config) -> Result<()> {
    let a = c.architecture.clone();
    let k = |s: &str| format!("{a}.{s}");
    w.add("general.architecture", Value::String(a.clone()))?;
    w.add(k("context_length"), Value::U32(c.context_length as u32))?;
    w.add(k("embedding_length"), Value::U32(c.d_model as u32))?;
    w.add(k("block_count"), Value::U32(c.n_layers as u32))?;
    w.add(k("feed_forward_length"), Value::U32(c.d_ff as u32))?;
    w.add(k("attention.head_count"), Value::U32(c.n_heads as u32))?;
    w.add(
        k("attention.head_count_kv"),
        Value::U32(c.n_kv_heads as u32),
    )?;
    w.add(k("attention.key_length"), Value::U32(c.head_dim as u32))?;
    w.add(k("attention.value_length"), Value::U32(c.head_dim as u32))?;
    w.add(k("rope.dimension_count"), Value::U32(c.head_dim as u32))?;
    w.add(k("attention.layer_norm_rms_epsilon"), Value::F32(c.rms_eps))?;
    w.add(k("rope.freq_base"), Value::F32(c.rope_theta))?;
    w.add(k("vocab_size"), Value::U32(c.vocab_size as u32))?;
    if let Some(win) = c.sliding_window {
        w.add(k("attention.sliding_window"), Value::U32(win as u32))?;
    }
    Ok(())
}

/// Writes the Hugging Face model folder `model_dir` as GGUF with weight
/// matrices in `ty`, tokenizer metadata from the GGUF `vocab`.
pub fn export_gguf(model_dir: &Path, vocab: &Path, ty: DType, out: &Path) -> Result<usize> {
    if !ty.is_weight_type() {
        return Err(Error::invalid(
            "type",
            format!("{} is not a weight type", ty.name()),
        ));
    }
    let model = EngineModel::load(model_dir)?;
    let vocab_bytes = std::fs::read(vocab).map_err(|e| Error::io(vocab, e))?;
    let g = Gguf::parse(&vocab_bytes)?;
    let vocab_tok = main_engine::tokenizer::Tokenizer::from_gguf(&g)?;
    // The same text must give the same ids, or the export would pair the
    // weights with another vocabulary.
    let probe = "Below is a response.\n\nWrite the instruction: 42 ünïcode <|im_end|>";
    let (a, b) = (
        model.tokenizer.encode(probe, true, true)?,
        vocab_tok.encode(probe, true, true)?,
    );
    if a != b || model.tokenizer.vocab_size() != vocab_tok.vocab_size() {
        return Err(Error::invalid(
            "vocab",
            format!(
                "{} has another tokenizer than {} (ids {b:?} vs {a:?})",
                vocab.display(),
                model_dir.display()
            ),
        ));
    }
    let c = &model.config;
    let mut w = GgufWriter::new();
    arch_metadata(&mut w, c)?;
    w.add("general.file_type", Value::U32(file_type(ty)))?;
    w.add("general.name", Value::String("main-train export".into()))?;
    for (key, v) in &g.metadata {
        if key.starts_with("tokenizer.") {
            w.add(key.clone(), v.clone())?;
        }
    }
    if let Some(t) = &model.chat_template {
        if !g
            .metadata
            .iter()
            .any(|(k, _)| k == "tokenizer.chat_template")
        {
            w.add("tokenizer.chat_template", Value::String(t.clone()))?;
        }
    }
    let mut tensors: Vec<_> = model.tensors().collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut n_bytes = 0;
    for t in tensors {
        let mut values = main_engine::convert::dequantize_tensor(&model, t);
        // GGUF wants llama.cpp's interleaved Q/K rows.
        let n_in = t.dims[0];
        if t.name.ends_with(".attn_q.weight") {
            values = permute_qk(&values, c.n_heads, c.head_dim, n_in);
        } else if t.name.ends_with(".attn_k.weight") {
            values = permute_qk(&values, c.n_kv_heads, c.head_dim, n_in);
        }
        let target = if t.dims.len() >= 2 && ty.row_bytes(n_in).is_some() {
            ty
        } else {
            DType::F32
        };
        let row_bytes = target
            .row_bytes(n_in)
            .ok_or_else(|| Error::invalid("tensor", format!("{}: cannot encode", t.name)))?;
        let mut bytes = vec![0u8; row_bytes * (values.len() / n_in)];
        for (src, dst) in values
            .chunks_exact(n_in)
            .zip(bytes.chunks_exact_mut(row_bytes))
        {
            quantize_row(target, src, dst)?;
        }
        n_bytes += bytes.len();
        w.add_tensor(t.name.clone(), target, &t.dims, bytes)?;
    }
    if let Some(f) = &c.rope_freq_factors {
        let bytes: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor("rope_freqs.weight", DType::F32, &[f.len()], bytes)?;
    }
    write_atomic(out, &w.to_bytes())?;
    Ok(n_bytes)
}
