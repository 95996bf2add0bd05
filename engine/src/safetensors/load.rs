//! Loading a checkpoint: `config.json` and the shards, indexed and checked
//! against each other, into a GGUF-named [`TensorStore`] that points into the
//! shards' bytes (zero-copy).

use std::collections::HashMap;
use std::sync::Arc;

use safetensors::tensor::Dtype;
#[cfg(feature = "std-fs")]
use serde_json::Value;

use super::config::{parse_hf_config, HfConfig};
use super::container::{index_shard, Entry};
use super::names::{check_shape, expected_tensors};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::quant::DType;
use crate::tensor::{Storage, TensorRef, TensorStore};

/// Builds the GGUF-named store from the shards' index, checking every tensor
/// the config requires and that no tensor contradicts it.
fn build_store(
    hf: &HfConfig,
    index: &HashMap<String, Entry>,
    shards: Vec<Storage>,
) -> Result<TensorStore> {
    let config = &hf.config;
    // Extra layers mean the config describes a different model than the weights.
    for name in index.keys() {
        let layer = name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(i, _)| i.parse::<usize>().ok());
        if let Some(i) = layer {
            if i >= config.n_layers {
                return Err(Error::tensor(
                    name,
                    format!(
                        "belongs to layer {i}, contradicting config.json num_hidden_layers = {}",
                        config.n_layers
                    ),
                ));
            }
        }
    }

    let mut tensors = HashMap::new();
    for exp in expected_tensors(config, hf.tie_word_embeddings) {
        let entry = index.get(&exp.hf).ok_or_else(|| {
            let why = if exp.hf == "lm_head.weight" {
                "config.json tie_word_embeddings is false".to_string()
            } else if exp.hf.starts_with("model.layers.") {
                format!("config.json num_hidden_layers = {}", config.n_layers)
            } else {
                "every LLaMA/Mistral model has it".to_string()
            };
            Error::tensor(
                &exp.hf,
                format!("({}) is missing from the checkpoint ({why})", exp.gguf),
            )
        })?;
        let dtype = match entry.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::unsupported(
                    format!("safetensors dtype of tensor '{}'", exp.hf),
                    format!("{other:?}"),
                ))
            }
        };
        check_shape(&exp.hf, &exp.gguf, &entry.shape, &exp.shape)?;
        let dims: Vec<usize> = entry.shape.iter().rev().copied().collect();
        let t = TensorRef {
            name: exp.gguf.clone(),
            dtype,
            dims,
            shard: entry.shard,
            offset: entry.offset,
            n_bytes: entry.n_bytes,
        };
        tensors.insert(exp.gguf, t);
    }
    Ok(TensorStore { shards, tensors })
}

/// Shared by every entry point: `shards` are `(label, storage)`, the label
/// being the file name where there is one; `weight_map` (sharded folders)
/// says which labelled shard must hold each tensor.
fn load(
    config_json: &[u8],
    shards: Vec<(String, Storage)>,
    weight_map: Option<&HashMap<String, String>>,
) -> Result<(Config, TensorStore)> {
    let hf = parse_hf_config(config_json)?;
    let mut index = HashMap::new();
    for (i, (label, storage)) in shards.iter().enumerate() {
        index_shard(label, i, storage.bytes(), &mut index)?;
    }
    for (name, file) in weight_map.into_iter().flatten() {
        if index.get(name).map(|e| &shards[e.shard].0) != Some(file) {
            return Err(Error::tensor(
                name,
                format!("model.safetensors.index.json places it in {file}, which does not hold it"),
            ));
        }
    }
    let store = build_store(&hf, &index, shards.into_iter().map(|(_, s)| s).collect())?;
    Ok((hf.config, store))
}

/// Loads a checkpoint from memory (wasm, tests): the bytes of `config.json`
/// and of each `.safetensors` file, in any order. Zero-copy: tensors point
/// into `shards`.
pub fn load_bytes(config_json: &[u8], shards: Vec<Arc<[u8]>>) -> Result<(Config, TensorStore)> {
    let shards = shards
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("safetensors shard {i}"), Storage::Bytes(b)))
        .collect();
    load(config_json, shards, None)
}

/// Loads a Hugging Face model folder: `config.json` and `model.safetensors`,
/// or `model.safetensors.index.json` and the shards it names, each
/// memory-mapped.
#[cfg(feature = "std-fs")]
pub fn load_dir(dir: &std::path::Path) -> Result<(Config, TensorStore)> {
    let config_path = dir.join("config.json");
    let config_json = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;

    let single = dir.join("model.safetensors");
    if single.is_file() {
        let shards = vec![("model.safetensors".to_string(), Storage::map(&single)?)];
        return load(&config_json, shards, None);
    }

    let index_path = dir.join("model.safetensors.index.json");
    let index_json = std::fs::read(&index_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::io(
            dir,
            std::io::Error::new(
                e.kind(),
                "neither model.safetensors nor model.safetensors.index.json exists",
            ),
        ),
        _ => Error::io(&index_path, e),
    })?;
    let weight_map = parse_weight_map(&index_json)?;

    // Shards in a stable order, each mapped once.
    let mut files: Vec<&str> = weight_map.values().map(String::as_str).collect();
    files.sort_unstable();
    files.dedup();
    let mut shards = Vec::with_capacity(files.len());
    for file in &files {
        let path = dir.join(file);
        let storage = Storage::map(&path).map_err(|e| match e {
            Error::Io { path, source } => Error::io(
                path,
                std::io::Error::new(
                    source.kind(),
                    format!("shard named by model.safetensors.index.json: {source}"),
                ),
            ),
            other => other,
        })?;
        shards.push((file.to_string(), storage));
    }

    load(&config_json, shards, Some(&weight_map))
}

/// `weight_map` of a sharded index: tensor name -> shard file name.
#[cfg(feature = "std-fs")]
fn parse_weight_map(index_json: &[u8]) -> Result<HashMap<String, String>> {
    const WHAT: &str = "model.safetensors.index.json";
    let value: Value = serde_json::from_slice(index_json)
        .map_err(|e| Error::format(WHAT, 0, format!("not valid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::format(WHAT, 0, "has no 'weight_map' object"))?;
    map.iter()
        .map(|(name, file)| {
            let file = file.as_str().ok_or_else(|| {
                Error::format(WHAT, 0, format!("weight_map['{name}'] is not a string"))
            })?;
            // A shard must sit beside the index: never follow a name out of the folder.
            if file.contains(['/', '\\']) || file == ".." || file.is_empty() {
                return Err(Error::format(
                    WHAT,
                    0,
                    format!("weight_map['{name}'] = '{file}' is not a file name in the folder"),
                ));
            }
            Ok((name.clone(), file.to_string()))
        })
        .collect()
}
