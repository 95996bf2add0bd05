//! Writing a Hugging Face folder (or its bytes) from GGUF-named tensors,
//! through the `safetensors` crate's serializer.

use std::borrow::Cow;
use std::collections::HashMap;

use safetensors::tensor::Dtype;

use super::config::config_to_hf_json;
use super::names::{check_shape, expected_tensors, hf_name};
use super::permute::unpermute_qk;
use crate::config::{Config, RopeStyle};
use crate::error::{Error, Result};

/// A tensor ready to write: HF name, HF shape, values.
pub(super) struct HfTensor<'a> {
    pub(super) name: String,
    pub(super) shape: Vec<usize>,
    pub(super) data: Cow<'a, [f32]>,
}

/// Converts GGUF-named tensors to HF names, shapes and (for GGUF's
/// interleaved Q/K rows) HF row order, and checks them against the config.
fn to_hf_tensors<'a>(
    config: &Config,
    tensors: &'a [(String, Vec<usize>, Vec<f32>)],
) -> Result<(Vec<HfTensor<'a>>, bool)> {
    let mut out = Vec::with_capacity(tensors.len());
    for (gguf, dims, data) in tensors {
        // The divisors are written to config.json as rope_scaling instead.
        if gguf == "rope_freqs.weight" {
            continue;
        }
        let name = hf_name(gguf).ok_or_else(|| {
            Error::invalid_argument("tensors", format!("'{gguf}' has no Hugging Face name"))
        })?;
        let n: Option<usize> = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(data.len()) {
            return Err(Error::invalid_argument(
                "tensors",
                format!("'{gguf}' has dims {dims:?} but {} values", data.len()),
            ));
        }
        let heads = if gguf.ends_with(".attn_q.weight") {
            Some(config.n_heads)
        } else if gguf.ends_with(".attn_k.weight") {
            Some(config.n_kv_heads)
        } else {
            None
        };
        let data = match heads {
            Some(n_heads)
                if config.rope_style == RopeStyle::Interleaved
                    && dims.len() == 2
                    && dims[1] == n_heads * config.head_dim =>
            {
                Cow::Owned(unpermute_qk(data, n_heads, config.head_dim, dims[0]))
            }
            _ => Cow::Borrowed(data.as_slice()),
        };
        out.push(HfTensor {
            name,
            shape: dims.iter().rev().copied().collect(),
            data,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = out.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(Error::invalid_argument(
            "tensors",
            format!("'{}' is given twice", w[0].name),
        ));
    }

    // Refuse to write a folder that load_dir would reject.
    let tied = !out.iter().any(|t| t.name == "lm_head.weight");
    for exp in expected_tensors(config, tied) {
        let t = out
            .binary_search_by(|t| t.name.as_str().cmp(&exp.hf))
            .map(|i| &out[i])
            .map_err(|_| Error::tensor(&exp.gguf, "missing from the tensors to write"))?;
        check_shape(&exp.hf, &exp.gguf, &t.shape, &exp.shape)?;
    }
    Ok((out, tied))
}

/// An F32 tensor as the `safetensors` crate's serializer sees it.
impl safetensors::View for &HfTensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values as little-endian bytes: a copy of this one tensor, made
    /// when the serializer writes it and dropped before the next one.
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        4 * self.data.len()
    }
}

/// The header's `__metadata__`, as `transformers` writes it for PyTorch weights.
fn metadata() -> Option<HashMap<String, String>> {
    Some(HashMap::from([("format".to_string(), "pt".to_string())]))
}

fn named<'t>(tensors: &'t [HfTensor]) -> impl Iterator<Item = (&'t str, &'t HfTensor<'t>)> {
    tensors.iter().map(|t| (t.name.as_str(), t))
}

fn serialize_error(e: safetensors::SafeTensorError) -> Error {
    Error::invalid_argument("tensors", format!("cannot be written as safetensors: {e}"))
}

/// The bytes of a `model.safetensors` holding `tensors`, by the `safetensors`
/// crate's serializer (tensors in name order, the header padded with spaces
/// so the data section starts 8-byte aligned).
pub(super) fn serialize(tensors: &[HfTensor]) -> Result<Vec<u8>> {
    safetensors::serialize(named(tensors), metadata()).map_err(serialize_error)
}

/// The in-memory form of [`write_dir`] (no file system, e.g. on wasm): the
/// text of `config.json` and the bytes of `model.safetensors`.
pub fn write_bytes(
    config: &Config,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<(String, Vec<u8>)> {
    config.validate()?;
    let (hf_tensors, tied) = to_hf_tensors(config, tensors)?;
    let config_json = config_to_hf_json(config, tied)?;
    Ok((config_json, serialize(&hf_tensors)?))
}

/// Writes a Hugging Face model folder: `config.json`, `model.safetensors`
/// (F32, HF names and shapes) and, when given, `tokenizer.json`.
///
/// `tensors` are `(GGUF name, ggml dims, values)`. A config with
/// [`RopeStyle::Interleaved`] (a GGUF model) has its Q/K rows un-permuted so
/// the HF copy, run with rotate-half RoPE, computes exactly what the GGUF
/// does; with [`RopeStyle::Halves`] rows are written as given. Without
/// `output.weight` the folder says `tie_word_embeddings: true`. Each file is
/// replaced atomically, `config.json` last, so a folder with a new
/// `config.json` has its new weights.
#[cfg(feature = "std-fs")]
pub fn write_dir(
    dir: &std::path::Path,
    config: &Config,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    tokenizer_json: Option<&str>,
) -> Result<()> {
    use crate::atomic_write::{write_atomic, write_atomic_by_path};
    config.validate()?;
    let (hf_tensors, tied) = to_hf_tensors(config, tensors)?;
    let config_json = config_to_hf_json(config, tied)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // The crate's file writer, not `serialize`: it writes one tensor at a
    // time, so a 7B export never holds a second copy of the whole file (only
    // of its largest tensor, as bytes: `View::data`). It writes its own
    // temporary file and renames it without fsync, so it gets a temporary
    // path of ours, which `write_atomic_by_path` then syncs and publishes.
    let st_path = dir.join("model.safetensors");
    write_atomic_by_path(&st_path, |tmp| {
        safetensors::serialize_to_file(named(&hf_tensors), metadata(), tmp).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(e) => Error::io(&st_path, e),
            other => serialize_error(other),
        })
    })?;
    if let Some(tok) = tokenizer_json {
        write_atomic(&dir.join("tokenizer.json"), tok.as_bytes())?;
    }
    write_atomic(&dir.join("config.json"), config_json.as_bytes())
}

/// How [`write_dir_sharded`] writes the weights.
#[derive(Clone, Copy, Debug)]
pub struct ShardOptions {
    /// bf16 (half the bytes of f32; values rounded to nearest even).
    pub bf16: bool,
    /// Largest shard in bytes; tensors are never split, so a tensor larger
    /// than this gets a shard of its own.
    pub max_shard_bytes: u64,
}

impl Default for ShardOptions {
    /// bf16 in shards of at most 5 GB, as `transformers` writes them.
    fn default() -> Self {
        ShardOptions {
            bf16: true,
            max_shard_bytes: 5_000_000_000,
        }
    }
}

/// A tensor written as bf16.
#[cfg(feature = "std-fs")]
struct Bf16Tensor<'a, 'b>(&'a HfTensor<'b>);

#[cfg(feature = "std-fs")]
impl safetensors::View for &Bf16Tensor<'_, '_> {
    fn dtype(&self) -> Dtype {
        Dtype::BF16
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(
            self.0
                .data
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_bits().to_le_bytes())
                .collect(),
        )
    }

    fn data_len(&self) -> usize {
        2 * self.0.data.len()
    }
}

/// [`write_dir`] with the weights in bf16 or f32, split into shards of at
/// most `max_shard_bytes` (in name order) listed by
/// `model.safetensors.index.json`, as Hugging Face writes large models;
/// one shard is written as a plain `model.safetensors`. Files of an
/// earlier write that the new layout does not use (a single file or old
/// shards) are removed once the new ones are in place, since the loader
/// prefers `model.safetensors` when it exists.
#[cfg(feature = "std-fs")]
pub fn write_dir_sharded(
    dir: &std::path::Path,
    config: &Config,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    tokenizer_json: Option<&str>,
    options: ShardOptions,
) -> Result<()> {
    use crate::atomic_write::{write_atomic, write_atomic_by_path};
    config.validate()?;
    let (hf_tensors, tied) = to_hf_tensors(config, tensors)?;
    let config_json = config_to_hf_json(config, tied)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let elem = if options.bf16 { 2 } else { 4 };
    // Consecutive tensors (name order) into shards.
    let mut shards: Vec<Vec<&HfTensor>> = vec![Vec::new()];
    let mut bytes = 0u64;
    for t in &hf_tensors {
        let n = (elem * t.data.len()) as u64;
        if bytes > 0 && bytes + n > options.max_shard_bytes {
            shards.push(Vec::new());
            bytes = 0;
        }
        bytes += n;
        shards.last_mut().expect("one shard at least").push(t);
    }
    let n_shards = shards.len();
    let file_name = |i: usize| {
        if n_shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n_shards:05}.safetensors", i + 1)
        }
    };
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let path = dir.join(file_name(i));
        let write = |tmp: &std::path::Path| -> Result<()> {
            let io = |e: safetensors::SafeTensorError| match e {
                safetensors::SafeTensorError::IoError(e) => Error::io(&path, e),
                other => serialize_error(other),
            };
            if options.bf16 {
                let views: Vec<Bf16Tensor> = shard.iter().map(|t| Bf16Tensor(t)).collect();
                let named = views.iter().map(|v| (v.0.name.as_str(), v));
                safetensors::serialize_to_file(named, metadata(), tmp).map_err(io)
            } else {
                let named = shard.iter().map(|t| (t.name.as_str(), *t));
                safetensors::serialize_to_file(named, metadata(), tmp).map_err(io)
            }
        };
        write_atomic_by_path(&path, write)?;
        for t in shard {
            weight_map.insert(t.name.clone(), serde_json::Value::String(file_name(i)));
        }
    }
    let index_path = dir.join("model.safetensors.index.json");
    let keep: Vec<String> = (0..n_shards).map(file_name).collect();
    if n_shards > 1 {
        let total: usize = hf_tensors.iter().map(|t| elem * t.data.len()).sum();
        let index = serde_json::json!({
            "metadata": { "total_size": total },
            "weight_map": weight_map,
        });
        let text = serde_json::to_string_pretty(&index)
            .map_err(|e| Error::invalid_argument("index", e.to_string()))?;
        write_atomic(&index_path, text.as_bytes())?;
    }
    // Stale weights of an earlier write go only after the new ones exist.
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale_shard =
            name.starts_with("model") && name.ends_with(".safetensors") && !keep.contains(&name);
        let stale_index = n_shards == 1 && name == "model.safetensors.index.json";
        if stale_shard || stale_index {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    if let Some(tok) = tokenizer_json {
        write_atomic(&dir.join("tokenizer.json"), tok.as_bytes())?;
    }
    write_atomic(&dir.join("config.json"), config_json.as_bytes())
}
