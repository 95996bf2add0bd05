//! Writing a Hugging Face folder (or its bytes) from GGUF-named tensors,
//! through the `safetensors` crate's serializer.

use std::borrow::Cow;
use std::cell::RefCell;
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
    pub(super) data: Values<'a>,
}

/// Tensors read one at a time by [`write_dir_sharded_from`], so a model is
/// written with one tensor's values in memory, not all of them (a trainer
/// saving a 7-8B model would otherwise hold an f32 copy of every weight:
/// 32 GB).
pub trait TensorSource {
    /// `(GGUF name, ggml dims)` of each tensor, in any order.
    fn specs(&self) -> Vec<(String, Vec<usize>)>;
    /// The values of tensor `i` of [`TensorSource::specs`], in ggml order.
    fn values(&self, i: usize) -> Result<Vec<f32>>;
}

/// Where a tensor's values come from.
pub(super) enum Values<'a> {
    /// Given, in HF row order.
    Given(Cow<'a, [f32]>),
    /// Read from a [`TensorSource`] when the serializer reaches the tensor
    /// (`qk`: GGUF's interleaved Q/K rows to put in HF order, as
    /// `(heads, head_dim, inputs)`). The serializer cannot return an
    /// error from a tensor's bytes, so a failed read writes zeros and
    /// leaves the error in `failed`, which the writer then returns
    /// instead of publishing the file.
    Read {
        source: &'a dyn TensorSource,
        index: usize,
        len: usize,
        qk: Option<(usize, usize, usize)>,
        failed: &'a RefCell<Option<Error>>,
    },
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::Given(x) => x.len(),
            Values::Read { len, .. } => *len,
        }
    }

    /// The values in HF row order (a read tensor is read now).
    fn f32s(&self) -> Cow<'_, [f32]> {
        match self {
            Values::Given(x) => Cow::Borrowed(x),
            Values::Read {
                source,
                index,
                len,
                qk,
                failed,
            } => {
                let read = source.values(*index).and_then(|v| {
                    if v.len() == *len {
                        Ok(v)
                    } else {
                        Err(Error::tensor(
                            source.specs()[*index].0.clone(),
                            format!("{} values read, {len} expected", v.len()),
                        ))
                    }
                });
                match read {
                    Ok(v) => match qk {
                        Some((heads, head_dim, n_in)) => {
                            Cow::Owned(unpermute_qk(&v, *heads, *head_dim, *n_in))
                        }
                        None => Cow::Owned(v),
                    },
                    Err(e) => {
                        failed.borrow_mut().get_or_insert(e);
                        Cow::Owned(vec![0.0; *len])
                    }
                }
            }
        }
    }
}

/// The tensors to write: all values given, or a source read one at a time.
enum Input<'a> {
    Given(&'a [(String, Vec<usize>, Vec<f32>)]),
    // Only the file writer reads from a source (no file system on wasm).
    #[cfg_attr(not(feature = "std-fs"), allow(dead_code))]
    Source(&'a dyn TensorSource, &'a RefCell<Option<Error>>),
}

/// Converts GGUF-named tensors to HF names, shapes and (for GGUF's
/// interleaved Q/K rows) HF row order, and checks them against the config.
fn to_hf_tensors<'a>(config: &Config, input: Input<'a>) -> Result<(Vec<HfTensor<'a>>, bool)> {
    type Spec<'v> = (String, Vec<usize>, Option<&'v [f32]>);
    let specs: Vec<Spec<'a>> = match &input {
        Input::Given(t) => t
            .iter()
            .map(|(n, d, v)| (n.clone(), d.clone(), Some(v.as_slice())))
            .collect(),
        Input::Source(src, _) => src.specs().into_iter().map(|(n, d)| (n, d, None)).collect(),
    };
    let mut out = Vec::with_capacity(specs.len());
    for (index, (gguf, dims, given)) in specs.into_iter().enumerate() {
        // The divisors are written to config.json as rope_scaling instead.
        if gguf == "rope_freqs.weight" {
            continue;
        }
        let name = hf_name(&gguf).ok_or_else(|| {
            Error::invalid_argument("tensors", format!("'{gguf}' has no Hugging Face name"))
        })?;
        let n: Option<usize> = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let len = match (n, given) {
            (Some(n), Some(data)) if n == data.len() => n,
            (Some(n), None) => n,
            (_, given) => {
                return Err(Error::invalid_argument(
                    "tensors",
                    match given {
                        Some(data) => {
                            format!("'{gguf}' has dims {dims:?} but {} values", data.len())
                        }
                        None => format!("'{gguf}' has dims {dims:?}: too many values"),
                    },
                ))
            }
        };
        let heads = if gguf.ends_with(".attn_q.weight") {
            Some(config.n_heads)
        } else if gguf.ends_with(".attn_k.weight") {
            Some(config.n_kv_heads)
        } else {
            None
        };
        let qk = match heads {
            Some(n_heads)
                if config.rope_style == RopeStyle::Interleaved
                    && dims.len() == 2
                    && dims[1] == n_heads * config.head_dim =>
            {
                Some((n_heads, config.head_dim, dims[0]))
            }
            _ => None,
        };
        let data = match (&input, given) {
            (_, Some(data)) => Values::Given(match qk {
                Some((h, d, n_in)) => Cow::Owned(unpermute_qk(data, h, d, n_in)),
                None => Cow::Borrowed(data),
            }),
            (Input::Source(source, failed), None) => Values::Read {
                source: *source,
                index,
                len,
                qk,
                failed,
            },
            (Input::Given(_), None) => unreachable!("given tensors have values"),
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
        Cow::Owned(
            self.data
                .f32s()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        )
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
    let (hf_tensors, tied) = to_hf_tensors(config, Input::Given(tensors))?;
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
    let (hf_tensors, tied) = to_hf_tensors(config, Input::Given(tensors))?;
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
                .f32s()
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
    write_sharded(dir, config, Input::Given(tensors), tokenizer_json, options)
}

/// [`write_dir_sharded`] reading each tensor from `source` only when its
/// turn to be written comes, so one tensor's values are in memory at a
/// time (with its bytes as written, and for GGUF-ordered Q/K rows one
/// reordered copy). A failed read is returned as the error, and the shard
/// it belonged to is not published.
#[cfg(feature = "std-fs")]
pub fn write_dir_sharded_from(
    dir: &std::path::Path,
    config: &Config,
    source: &dyn TensorSource,
    tokenizer_json: Option<&str>,
    options: ShardOptions,
) -> Result<()> {
    let failed = RefCell::new(None);
    write_sharded(
        dir,
        config,
        Input::Source(source, &failed),
        tokenizer_json,
        options,
    )
}

#[cfg(feature = "std-fs")]
fn write_sharded(
    dir: &std::path::Path,
    config: &Config,
    input: Input,
    tokenizer_json: Option<&str>,
    options: ShardOptions,
) -> Result<()> {
    use crate::atomic_write::{write_atomic, write_atomic_by_path};
    config.validate()?;
    let failed = match &input {
        Input::Source(_, failed) => Some(*failed),
        Input::Given(_) => None,
    };
    let (hf_tensors, tied) = to_hf_tensors(config, input)?;
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
                safetensors::serialize_to_file(named, metadata(), tmp).map_err(io)?;
            } else {
                let named = shard.iter().map(|t| (t.name.as_str(), *t));
                safetensors::serialize_to_file(named, metadata(), tmp).map_err(io)?;
            }
            // A tensor that could not be read was written as zeros: the
            // shard is not published.
            match failed.and_then(|f| f.borrow_mut().take()) {
                Some(e) => Err(e),
                None => Ok(()),
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
