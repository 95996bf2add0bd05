//! Re-encoding a loaded model: to GGUF with another weight type (`quantize`)
//! or to an F32 Hugging Face folder (`export`). Both read the model's own
//! tensors, so any input the loaders accept can be converted.

use crate::config::RopeStyle;
use crate::error::{Error, Result};
use crate::gguf::{GgufWriter, Value};
use crate::model::Model;
use crate::quant::{dequantize_row, quantize_row, DType};
use crate::tensor::TensorRef;

/// What a conversion wrote.
pub struct ConvertReport {
    pub n_tensors: usize,
    pub n_bytes: usize,
}

/// A tensor's values as f32, row-major in ggml order.
pub fn dequantize_tensor(model: &Model, t: &TensorRef) -> Vec<f32> {
    let mut out = vec![0f32; t.n_elements()];
    dequantize_row(t.dtype, model.tensor_data(t), &mut out);
    out
}

/// llama.cpp's `general.file_type` (`enum llama_ftype`) for a weight type.
fn llama_file_type(ty: DType) -> u32 {
    match ty {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        DType::Q4_K => 15, // Q4_K_M
        DType::Q5_K => 17, // Q5_K_M
        DType::Q6_K => 18,
        DType::BF16 => 32,
        DType::Q8_1 | DType::Q8_K => 0,
    }
}

/// Encodes `model` as GGUF with every weight matrix in `ty` (norms and
/// vectors stay F32, as llama.cpp keeps them) into `out`. The metadata of a
/// GGUF input is carried over unchanged except `general.file_type`.
pub fn write_gguf_to(
    model: &Model,
    ty: DType,
    out: &mut impl std::io::Write,
) -> Result<ConvertReport> {
    if !ty.is_weight_type() {
        return Err(Error::invalid_argument(
            "type",
            format!("{} is not a weight type", ty.name()),
        ));
    }
    let metadata =
        match model.gguf_metadata()? {
            Some(m) if model.config.rope_style == RopeStyle::Interleaved => m,
            _ => return Err(Error::unsupported(
                "conversion",
                "safetensors -> GGUF needs the GGUF tokenizer metadata; convert from a GGUF model",
            )),
        };
    let mut w = GgufWriter::new();
    for (k, v) in &metadata {
        let v = match k.as_str() {
            "general.file_type" => Value::U32(llama_file_type(ty)),
            _ => v.clone(),
        };
        w.add(k.clone(), v)?;
    }
    if !metadata.iter().any(|(k, _)| k == "general.file_type") {
        w.add("general.file_type", Value::U32(llama_file_type(ty)))?;
    }
    let mut tensors: Vec<&TensorRef> = model.tensors().collect();
    tensors.sort_by_key(|t| (t.shard, t.offset));
    let mut n_bytes = 0;
    for t in &tensors {
        let values = dequantize_tensor(model, t);
        // Matrices whose rows are whole blocks take the new type; the rest
        // (norms, RoPE factors, odd shapes) stay F32.
        let target = if t.dims.len() >= 2 && ty.row_bytes(t.dims[0]).is_some() {
            ty
        } else {
            DType::F32
        };
        let row_bytes = target.row_bytes(t.dims[0]).ok_or_else(|| {
            Error::tensor(&t.name, format!("cannot be encoded as {}", target.name()))
        })?;
        let mut bytes = vec![0u8; row_bytes * (t.n_elements() / t.dims[0])];
        for (src, dst) in values
            .chunks_exact(t.dims[0])
            .zip(bytes.chunks_exact_mut(row_bytes))
        {
            quantize_row(target, src, dst)?;
        }
        n_bytes += bytes.len();
        w.add_tensor(t.name.clone(), target, &t.dims, bytes)?;
    }
    w.write_to(out).map_err(|e| Error::io("GGUF output", e))?;
    Ok(ConvertReport {
        n_tensors: tensors.len(),
        n_bytes,
    })
}

/// [`write_gguf_to`] a file, atomically ([`crate::atomic_write`]).
#[cfg(feature = "std-fs")]
pub fn write_gguf(model: &Model, ty: DType, path: &std::path::Path) -> Result<ConvertReport> {
    crate::atomic_write::write_atomic_with(path, |out| write_gguf_to(model, ty, out))
}

/// Writes an F32 Hugging Face folder (`config.json`, `model.safetensors`,
/// `tokenizer.json`) holding exactly the model's (dequantized) weights.
#[cfg(feature = "std-fs")]
pub fn write_hf_f32(model: &Model, dir: &std::path::Path) -> Result<()> {
    let mut tensors: Vec<&TensorRef> = model.tensors().collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let values: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .filter(|t| t.name != "rope_freqs.weight") // carried by config.json's rope_scaling
        .map(|t| (t.name.clone(), t.dims.clone(), dequantize_tensor(model, t)))
        .collect();
    let tokenizer_json = model.tokenizer.to_json_string()?;
    crate::safetensors::write_dir(dir, &model.config, &values, Some(&tokenizer_json))?;
    if let Some(template) = &model.chat_template {
        let cfg = serde_json::json!({
            "chat_template": template,
            "add_bos_token": model.tokenizer.add_bos_default(),
            "bos_token": model.tokenizer.bos_id().map(|id| model.tokenizer.piece(id)),
            "eos_token": model.tokenizer.eos_id().map(|id| model.tokenizer.piece(id)),
        });
        let path = dir.join("tokenizer_config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap_or_default())
            .map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}
