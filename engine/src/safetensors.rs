//! Hugging Face checkpoints: `config.json` + `model.safetensors` (or a sharded
//! `model.safetensors.index.json`), F32/F16/BF16, LLaMA and Mistral tensor
//! names mapped to GGUF's canonical names, zero-copy into the file bytes.
//!
//! The safetensors container is read by the `safetensors` crate (fuzzed
//! upstream); where its errors do not say which tensor or byte is wrong,
//! ours do:
//!
//! ```text
//! [u64 LE: header length N][N bytes: JSON header][data section]
//! header: { "__metadata__": {..}, "<name>": { "dtype": "F32", "shape": [out, in],
//!           "data_offsets": [begin, end] }, .. }   offsets relative to the data section
//! ```
//!
//! HF weights keep their rows as HF stores them, so RoPE pairs dimensions
//! `(i, i + head_dim/2)` ([`RopeStyle::Halves`]); GGUF files had their Q/K
//! rows permuted by llama.cpp's converter so that pairs are adjacent. Loading
//! never copies: the forward pass applies the matching RoPE style. Exporting a
//! GGUF model to HF ([`write_dir`]) undoes the permutation ([`unpermute_qk`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use safetensors::tensor::{Dtype, SafeTensorError};
use safetensors::SafeTensors;
use serde_json::{Map, Value};

use crate::config::{Config, Llama3Scaling, RopeStyle};
use crate::error::{Error, Result};
use crate::quant::DType;
use crate::tensor::{Storage, TensorRef, TensorStore};

/// A header larger than this is a corrupt or hostile file, not a model: real
/// checkpoints need a few hundred bytes per tensor. (The `safetensors`
/// crate's own limit, named in our messages.)
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

// ---------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------

/// What `config.json` says beyond [`Config`]: whether the LM head reuses the
/// token embedding (then `lm_head.weight` is absent or ignored).
struct HfConfig {
    config: Config,
    tie_word_embeddings: bool,
}

impl Config {
    /// Parses a Hugging Face `config.json` of a `llama` or `mistral` model.
    pub fn from_hf_json(bytes: &[u8]) -> Result<Config> {
        parse_hf_config(bytes).map(|c| c.config)
    }
}

/// The JSON object of `config.json`, with errors naming the key.
struct JsonObject<'a> {
    /// Prefix for nested objects, e.g. "rope_scaling.".
    prefix: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> JsonObject<'a> {
    /// A key whose value is `null` counts as absent, as in `transformers`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn err(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::metadata(format!("{}{key}", self.prefix), reason)
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.err(key, format!("expected a non-negative integer, found {v}"))
                }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "missing from config.json"))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
        }
    }

    fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?
            .ok_or_else(|| self.err(key, "missing from config.json"))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a string, found {v}"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected true or false, found {v}"))),
        }
    }

    fn opt_object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_object()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected an object, found {v}"))),
        }
    }
}

fn parse_hf_config(bytes: &[u8]) -> Result<HfConfig> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Error::format(
            "config.json",
            0,
            format!(
                "not valid JSON (line {}, column {}): {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let map = value
        .as_object()
        .ok_or_else(|| Error::format("config.json", 0, "the top level is not a JSON object"))?;
    let obj = JsonObject { prefix: "", map };

    let architecture = match obj.opt_str("model_type")? {
        Some(t @ ("llama" | "mistral")) => t.to_string(),
        Some(other) => return Err(Error::unsupported("config.json model_type", other)),
        None => return Err(obj.err("model_type", "missing from config.json")),
    };
    // Weights we would silently drop must not load: the model would compute
    // something other than what was trained.
    for key in ["attention_bias", "mlp_bias"] {
        if obj.opt_bool(key)? == Some(true) {
            return Err(Error::unsupported(format!("config.json {key}"), "true"));
        }
    }
    if let Some(act) = obj.opt_str("hidden_act")? {
        if act != "silu" {
            return Err(Error::unsupported("config.json hidden_act", act));
        }
    }

    let d_model = obj.usize("hidden_size")?;
    let n_heads = obj.usize("num_attention_heads")?;
    let head_dim = match obj.opt_usize("head_dim")? {
        Some(h) => h,
        None if n_heads > 0 && d_model % n_heads == 0 => d_model / n_heads,
        None => {
            return Err(obj.err(
                "head_dim",
                format!(
                    "absent, and hidden_size {d_model} is not a multiple of \
                     num_attention_heads {n_heads}"
                ),
            ))
        }
    };

    // transformers >= 5 moves rope_theta and the scaling into `rope_parameters`.
    let rope_parameters = obj.opt_object("rope_parameters")?;
    let (rope_obj, scaling_obj) = match rope_parameters {
        Some(p) => (
            JsonObject {
                prefix: "rope_parameters.",
                map: p,
            },
            Some(p),
        ),
        None => (
            JsonObject { prefix: "", map },
            obj.opt_object("rope_scaling")?,
        ),
    };
    let rope_theta = rope_obj.opt_f64("rope_theta")?.unwrap_or(10000.0) as f32;
    let scaling_prefix = if rope_parameters.is_some() {
        "rope_parameters."
    } else {
        "rope_scaling."
    };
    let llama3 = match scaling_obj {
        None => None,
        Some(s) => {
            let s = JsonObject {
                prefix: scaling_prefix,
                map: s,
            };
            let kind = match s.opt_str("rope_type")? {
                Some(t) => Some(t),
                None => s.opt_str("type")?,
            };
            match kind {
                None | Some("default") => None,
                Some("llama3") => {
                    let scaling = Llama3Scaling {
                        factor: s.f64("factor")? as f32,
                        low_freq_factor: s.f64("low_freq_factor")? as f32,
                        high_freq_factor: s.f64("high_freq_factor")? as f32,
                        original_max_position: s.usize("original_max_position_embeddings")?,
                    };
                    if !(scaling.factor > 0.0
                        && scaling.high_freq_factor > scaling.low_freq_factor
                        && scaling.low_freq_factor > 0.0
                        && scaling.original_max_position > 0)
                    {
                        return Err(s.err(
                            "rope_type",
                            format!(
                                "llama3 scaling needs factor > 0 and \
                                 high_freq_factor > low_freq_factor > 0, found {scaling:?}"
                            ),
                        ));
                    }
                    Some(scaling)
                }
                Some(other) => {
                    return Err(Error::unsupported(
                        format!("config.json {scaling_prefix}rope_type"),
                        other,
                    ))
                }
            }
        }
    };

    // Only Mistral's attention honours the window; transformers' Llama ignores the key.
    let sliding_window = if architecture == "mistral" {
        obj.opt_usize("sliding_window")?
    } else {
        None
    };

    let mut config = Config {
        architecture,
        n_layers: obj.usize("num_hidden_layers")?,
        d_model,
        n_heads,
        n_kv_heads: obj.opt_usize("num_key_value_heads")?.unwrap_or(n_heads),
        head_dim,
        d_ff: obj.usize("intermediate_size")?,
        vocab_size: obj.usize("vocab_size")?,
        rms_eps: obj.f64("rms_norm_eps")? as f32,
        rope_theta,
        rope_style: RopeStyle::Halves,
        rope_freq_factors: None,
        sliding_window,
        context_length: obj.usize("max_position_embeddings")?,
    };
    let validate = |c: &Config| {
        c.validate().map_err(|e| match e {
            Error::Metadata { key, reason } => Error::metadata(hf_key(&key), reason),
            other => other,
        })
    };
    // head_dim must be known sane before it sizes the factor table.
    validate(&config)?;
    if let Some(scaling) = llama3 {
        config.rope_freq_factors = Some(scaling.freq_factors(head_dim, rope_theta));
        validate(&config)?;
    }
    Ok(HfConfig {
        config,
        tie_word_embeddings: obj.opt_bool("tie_word_embeddings")?.unwrap_or(false),
    })
}

/// `Config::validate` names GGUF keys; a user editing `config.json` needs the HF one.
fn hf_key(gguf_key: &str) -> &str {
    match gguf_key {
        "block_count" => "num_hidden_layers",
        "embedding_length" => "hidden_size",
        "feed_forward_length" => "intermediate_size",
        "attention.head_count" => "num_attention_heads",
        "attention.head_count_kv" => "num_key_value_heads",
        "attention.layer_norm_rms_epsilon" => "rms_norm_eps",
        "rope.freq_base" => "rope_theta",
        "rope_freqs" => "rope_scaling",
        other => other,
    }
}

/// `f32` values as their shortest decimal (1e-5, not 9.999999747378752e-6),
/// which still parses back to the same `f32`.
fn json_f32(x: f32) -> Value {
    let shortest: f64 = x.to_string().parse().unwrap_or(x as f64);
    serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

/// GGUF keeps only the computed RoPE divisors, not the LLaMA-3 parameters that
/// produced them. `config.json` needs the parameters, so look for the ones
/// that reproduce the divisors among the values Meta's models use; anything
/// else is refused rather than exported as a model that computes differently.
fn llama3_scaling_for(factors: &[f32], head_dim: usize, theta: f32) -> Option<Llama3Scaling> {
    let factor = factors.iter().copied().fold(1.0f32, f32::max);
    let close = |a: &[f32]| {
        a.len() == factors.len()
            && a.iter()
                .zip(factors)
                .all(|(x, y)| (x - y).abs() <= 1e-5 * y.abs().max(1.0))
    };
    for low in [1.0f32, 0.5, 2.0, 4.0] {
        for high in [4.0f32, 1.0, 2.0, 8.0, 16.0] {
            if high <= low {
                continue;
            }
            for k in 0..10 {
                let scaling = Llama3Scaling {
                    factor,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position: 1024 << k,
                };
                if close(&scaling.freq_factors(head_dim, theta)) {
                    return Some(scaling);
                }
            }
        }
    }
    None
}

fn config_to_hf_json(config: &Config, tied: bool) -> Result<String> {
    // llama.cpp stores Mistral models as architecture "llama" with a sliding
    // window; transformers needs "mistral" for the window to apply.
    let architecture = match (config.architecture.as_str(), config.sliding_window) {
        ("llama", Some(_)) | ("mistral", _) => "mistral",
        ("llama", None) => "llama",
        (other, _) => return Err(Error::unsupported("architecture for config.json", other)),
    };
    let class = match architecture {
        "llama" => "LlamaForCausalLM",
        _ => "MistralForCausalLM",
    };
    let rope_scaling = match &config.rope_freq_factors {
        None => Value::Null,
        Some(f) => {
            let s = llama3_scaling_for(f, config.head_dim, config.rope_theta).ok_or_else(|| {
                Error::unsupported(
                    "RoPE frequency factors in config.json",
                    format!("{f:?} match no LLaMA-3 rope_scaling"),
                )
            })?;
            serde_json::json!({
                "rope_type": "llama3",
                "factor": json_f32(s.factor),
                "low_freq_factor": json_f32(s.low_freq_factor),
                "high_freq_factor": json_f32(s.high_freq_factor),
                "original_max_position_embeddings": s.original_max_position,
            })
        }
    };
    let mut json = serde_json::json!({
        "architectures": [class],
        "model_type": architecture,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "rms_norm_eps": json_f32(config.rms_eps),
        "rope_theta": json_f32(config.rope_theta),
        "rope_scaling": rope_scaling,
        "max_position_embeddings": config.context_length,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": "float32",
    });
    if architecture == "mistral" {
        json["sliding_window"] = config.sliding_window.map_or(Value::Null, Value::from);
    }
    serde_json::to_string_pretty(&json)
        .map_err(|e| Error::invalid_argument("config", format!("cannot serialize: {e}")))
}

// ---------------------------------------------------------------------------
// Tensor names and the shapes the config implies
// ---------------------------------------------------------------------------

/// One expected weight: its HF name, GGUF name, and HF shape `[out, in]`
/// with the `config.json` key (or product of keys) behind each dimension.
struct Expected {
    hf: String,
    gguf: String,
    shape: Vec<(usize, &'static str)>,
}

/// Every tensor the config requires, in file order.
fn expected_tensors(config: &Config, tied: bool) -> Vec<Expected> {
    let hidden = (config.d_model, "hidden_size");
    let vocab = (config.vocab_size, "vocab_size");
    let ff = (config.d_ff, "intermediate_size");
    let q = (
        config.n_heads * config.head_dim,
        "num_attention_heads * head_dim",
    );
    let kv = (
        config.n_kv_heads * config.head_dim,
        "num_key_value_heads * head_dim",
    );
    let e =
        |hf: String, gguf: String, shape: Vec<(usize, &'static str)>| Expected { hf, gguf, shape };
    let mut out = vec![e(
        "model.embed_tokens.weight".into(),
        "token_embd.weight".into(),
        vec![vocab, hidden],
    )];
    for i in 0..config.n_layers {
        let hf = |s: &str| format!("model.layers.{i}.{s}.weight");
        let gg = |s: &str| format!("blk.{i}.{s}.weight");
        out.extend([
            e(hf("input_layernorm"), gg("attn_norm"), vec![hidden]),
            e(hf("self_attn.q_proj"), gg("attn_q"), vec![q, hidden]),
            e(hf("self_attn.k_proj"), gg("attn_k"), vec![kv, hidden]),
            e(hf("self_attn.v_proj"), gg("attn_v"), vec![kv, hidden]),
            e(hf("self_attn.o_proj"), gg("attn_output"), vec![hidden, q]),
            e(hf("post_attention_layernorm"), gg("ffn_norm"), vec![hidden]),
            e(hf("mlp.gate_proj"), gg("ffn_gate"), vec![ff, hidden]),
            e(hf("mlp.up_proj"), gg("ffn_up"), vec![ff, hidden]),
            e(hf("mlp.down_proj"), gg("ffn_down"), vec![hidden, ff]),
        ]);
    }
    out.push(e(
        "model.norm.weight".into(),
        "output_norm.weight".into(),
        vec![hidden],
    ));
    if !tied {
        out.push(e(
            "lm_head.weight".into(),
            "output.weight".into(),
            vec![vocab, hidden],
        ));
    }
    out
}

/// The HF name of a GGUF weight name, or `None` for names HF has no tensor for.
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let module = match rest.strip_suffix(".weight")? {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{module}.weight"))
}

/// Checks a tensor's HF shape against the config, naming both sides.
fn check_shape(hf: &str, gguf: &str, shape: &[usize], expected: &[(usize, &str)]) -> Result<()> {
    let want: Vec<usize> = expected.iter().map(|(n, _)| *n).collect();
    if shape.len() != expected.len() {
        return Err(Error::tensor(
            hf,
            format!(
                "({gguf}) has shape {shape:?}, but config.json implies {want:?} ({})",
                expected
                    .iter()
                    .map(|(n, k)| format!("{k} = {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    for (d, (&got, &(n, key))) in shape.iter().zip(expected).enumerate() {
        if got != n {
            return Err(Error::tensor(
                hf,
                format!(
                    "({gguf}) has shape {shape:?}, contradicting config.json: \
                     dim {d} is {got} but {key} = {n}"
                ),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The safetensors container
// ---------------------------------------------------------------------------

/// One tensor of a shard's header, bounds already checked.
struct Entry {
    dtype: Dtype,
    /// HF order: `shape[0]` is the outermost dimension.
    shape: Vec<usize>,
    shard: usize,
    /// Absolute byte offset within the shard.
    offset: usize,
    n_bytes: usize,
}

/// Parses one shard's header with the `safetensors` crate into `index` (HF
/// name -> entry): the crate checks that the tensors tile the data section
/// exactly and match their shapes and dtypes.
fn index_shard(
    label: &str,
    shard: usize,
    bytes: &[u8],
    index: &mut HashMap<String, Entry>,
) -> Result<()> {
    let (header_len, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| container_error(label, bytes, e))?;
    let data_start = 8 + header_len;
    for (name, info) in metadata.tensors() {
        let (begin, end) = info.data_offsets;
        let entry = Entry {
            dtype: info.dtype,
            shape: info.shape.clone(),
            shard,
            offset: data_start + begin,
            n_bytes: end - begin,
        };
        if index.insert(name.clone(), entry).is_some() {
            return Err(Error::tensor(
                name,
                format!("in {label}: appears in more than one shard"),
            ));
        }
    }
    Ok(())
}

/// The crate's error as ours, naming the file, byte offset or tensor that
/// is wrong: where the crate's message does not say (a tensor's offsets or
/// size, a bad entry of the header), the header is read again to find it.
fn container_error(label: &str, bytes: &[u8], e: SafeTensorError) -> Error {
    let file_len = bytes.len() as u64;
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    match (e, header_len) {
        (SafeTensorError::HeaderTooSmall, _) | (_, None) => Error::format(
            label,
            0,
            format!("file is {file_len} bytes, too short for the 8-byte header length"),
        ),
        (SafeTensorError::HeaderTooLarge, Some(n)) => Error::format(
            label,
            0,
            format!("header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"),
        ),
        (SafeTensorError::InvalidHeaderLength, Some(n)) => Error::format(
            label,
            0,
            format!(
                "header length {n} runs past the end of the file ({file_len} bytes): \
                 the file is truncated or not safetensors"
            ),
        ),
        (SafeTensorError::InvalidHeader(utf8), _) => Error::format(
            label,
            8 + utf8.valid_up_to() as u64,
            "header is not UTF-8 (not a valid JSON header)",
        ),
        (e, Some(n)) => {
            let header = &bytes[8..8 + n as usize];
            let data_len = file_len - 8 - n;
            find_bad_entry(label, header, n, data_len).unwrap_or_else(|| match e {
                SafeTensorError::InvalidHeaderDeserialization(e) => Error::format(
                    label,
                    8,
                    format!("header is not a valid JSON safetensors header: {e}"),
                ),
                SafeTensorError::InvalidOffset(name) => Error::tensor(
                    name,
                    format!(
                        "in {label}: data_offsets leave a gap or overlap another tensor \
                         (tensors must tile the data section from byte 0)"
                    ),
                ),
                SafeTensorError::MetadataIncompleteBuffer => Error::format(
                    label,
                    8 + n,
                    format!(
                        "the tensors do not end where the {data_len}-byte data section does \
                         (a truncated or padded file)"
                    ),
                ),
                other => Error::format(label, 8, other.to_string()),
            })
        }
    }
}

/// The first header entry that is malformed, lies outside the data section
/// or disagrees with its shape, as an error naming it; `None` when every
/// entry is sound (the fault is elsewhere).
fn find_bad_entry(label: &str, header: &[u8], header_len: u64, data_len: u64) -> Option<Error> {
    let header: Map<String, Value> = match serde_json::from_slice(header) {
        Ok(h) => h,
        Err(e) => {
            return Some(Error::format(
                label,
                8,
                format!("header is not a valid JSON object: {e}"),
            ))
        }
    };
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |reason: String| Some(Error::tensor(name, format!("in {label}: {reason}")));
        let Some(info) = info.as_object() else {
            return bad(format!("header entry is not an object: {info}"));
        };
        let Some(dtype) = info.get("dtype").and_then(Value::as_str) else {
            return bad("header entry has no string 'dtype'".into());
        };
        let Ok(parsed) = serde_json::from_value::<Dtype>(Value::from(dtype)) else {
            return bad(format!("dtype '{dtype}' is not a safetensors dtype"));
        };
        let shape = info
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<usize>>>()
            });
        let Some(shape) = shape else {
            return bad("header entry has no integer array 'shape'".into());
        };
        let (begin, end) = match info.get("data_offsets").and_then(Value::as_array) {
            Some(o) if o.len() == 2 => match (o[0].as_u64(), o[1].as_u64()) {
                (Some(b), Some(e)) => (b, e),
                _ => return bad(format!("data_offsets {o:?} are not integers")),
            },
            _ => return bad("header entry has no 2-element 'data_offsets'".into()),
        };
        if begin > end || end > data_len {
            return bad(format!(
                "data_offsets [{begin}, {end}] lie outside the data section \
                 ({data_len} bytes after the {header_len}-byte header)"
            ));
        }
        let n_bits = shape
            .iter()
            .try_fold(parsed.bitsize(), |acc, &d| acc.checked_mul(d));
        let Some(n_bits) = n_bits else {
            return bad(format!("shape {shape:?} overflows"));
        };
        let n_bytes = end - begin;
        if n_bits % 8 != 0 || (n_bits / 8) as u64 != n_bytes {
            return bad(format!(
                "data_offsets [{begin}, {end}] hold {n_bytes} bytes, \
                 but shape {shape:?} of {dtype} needs {}",
                n_bits.div_ceil(8)
            ));
        }
    }
    None
}

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

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// A tensor ready to write: HF name, HF shape, values.
struct HfTensor<'a> {
    name: String,
    shape: Vec<usize>,
    data: Cow<'a, [f32]>,
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

/// The safetensors header for `tensors` (F32, packed in order), padded with
/// spaces so the data section starts 8-byte aligned, as the reference writer does.
fn safetensors_header(tensors: &[HfTensor]) -> Vec<u8> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0usize;
    for t in tensors {
        let end = offset + 4 * t.data.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).expect("JSON of plain values");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

#[cfg(feature = "std-fs")]
fn write_safetensors(w: &mut impl std::io::Write, tensors: &[HfTensor]) -> std::io::Result<()> {
    w.write_all(&safetensors_header(tensors))?;
    let mut buf = Vec::with_capacity(1 << 16);
    for t in tensors {
        for chunk in t.data.chunks(1 << 14) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
            w.write_all(&buf)?;
        }
    }
    Ok(())
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
    let mut file = safetensors_header(&hf_tensors);
    for t in &hf_tensors {
        file.extend(t.data.iter().flat_map(|x| x.to_le_bytes()));
    }
    Ok((config_json, file))
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
    use crate::atomic_write::{write_atomic, write_atomic_with};
    config.validate()?;
    let (hf_tensors, tied) = to_hf_tensors(config, tensors)?;
    let config_json = config_to_hf_json(config, tied)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let st_path = dir.join("model.safetensors");
    write_atomic_with(&st_path, |w| {
        write_safetensors(w, &hf_tensors).map_err(|e| Error::io(&st_path, e))
    })?;
    if let Some(tok) = tokenizer_json {
        write_atomic(&dir.join("tokenizer.json"), tok.as_bytes())?;
    }
    write_atomic(&dir.join("config.json"), config_json.as_bytes())
}

// ---------------------------------------------------------------------------
// Q/K row permutation between HF and GGUF
// ---------------------------------------------------------------------------

/// The row of the HF matrix that GGUF row `r` holds.
///
/// llama.cpp's converter reshapes each head's `head_dim` rows as
/// `[2, head_dim/2]` and swaps the axes, so GGUF row `2i + j` of a head is HF
/// row `j * head_dim/2 + i`: the HF rotate-half pair `(i, i + head_dim/2)`
/// becomes the adjacent pair `(2i, 2i + 1)`.
fn hf_row_of_gguf_row(r: usize, head_dim: usize) -> usize {
    let (head, within) = (r / head_dim, r % head_dim);
    let (i, j) = (within / 2, within % 2);
    head * head_dim + j * (head_dim / 2) + i
}

// `usize::is_multiple_of` needs Rust 1.87; the workspace's rust-version is 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn check_qk_args(rows: &[f32], n_heads: usize, head_dim: usize, n_in: usize) {
    assert!(
        head_dim % 2 == 0,
        "Q/K permutation: head_dim {head_dim} is odd"
    );
    assert_eq!(
        rows.len(),
        n_heads * head_dim * n_in,
        "Q/K permutation: {} values for {n_heads} heads x {head_dim} rows x {n_in} columns",
        rows.len()
    );
}

/// GGUF -> HF: undoes llama.cpp's `permute(w, n_head, n_head_kv)` on a Q or K
/// weight of `n_heads * head_dim` rows of `n_in` values (pass the KV head
/// count for K). Panics if the lengths disagree or `head_dim` is odd.
pub fn unpermute_qk(rows: &[f32], n_heads: usize, head_dim: usize, n_in: usize) -> Vec<f32> {
    check_qk_args(rows, n_heads, head_dim, n_in);
    let mut out = vec![0.0; rows.len()];
    for (r, src) in rows.chunks_exact(n_in).enumerate() {
        let dst = hf_row_of_gguf_row(r, head_dim);
        out[dst * n_in..(dst + 1) * n_in].copy_from_slice(src);
    }
    out
}

/// HF -> GGUF: llama.cpp's `permute(w, n_head, n_head_kv)`, the inverse of
/// [`unpermute_qk`]. Panics if the lengths disagree or `head_dim` is odd.
pub fn permute_qk(rows: &[f32], n_heads: usize, head_dim: usize, n_in: usize) -> Vec<f32> {
    check_qk_args(rows, n_heads, head_dim, n_in);
    let mut out = vec![0.0; rows.len()];
    for (r, dst) in out.chunks_exact_mut(n_in).enumerate() {
        let src = hf_row_of_gguf_row(r, head_dim);
        dst.copy_from_slice(&rows[src * n_in..(src + 1) * n_in]);
    }
    out
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn small_config(arch: &str, sliding_window: Option<usize>) -> Config {
        Config {
            architecture: arch.into(),
            n_layers: 2,
            d_model: 16,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 4,
            d_ff: 24,
            vocab_size: 32,
            rms_eps: 1e-5,
            rope_theta: 10000.0,
            rope_style: RopeStyle::Halves,
            rope_freq_factors: None,
            sliding_window,
            context_length: 128,
        }
    }

    /// GGUF-named random tensors for `config`, ggml dims.
    fn random_tensors(
        config: &Config,
        tied: bool,
        seed: u64,
    ) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        expected_tensors(config, tied)
            .into_iter()
            .map(|e| {
                let dims: Vec<usize> = e.shape.iter().rev().map(|(n, _)| *n).collect();
                let n = dims.iter().product();
                let data = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                (e.gguf, dims, data)
            })
            .collect()
    }

    fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(std::path::PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "main-safetensors-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config_json(config: &Config, tied: bool) -> Vec<u8> {
        config_to_hf_json(config, tied).unwrap().into_bytes()
    }

    /// A safetensors file from a raw header and data section.
    fn st_file(header: &str, data: &[u8]) -> Arc<[u8]> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v.into()
    }

    /// The bytes `write_dir` would write for `tensors`, in memory.
    fn st_bytes(config: &Config, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Arc<[u8]> {
        write_bytes(config, tensors).unwrap().1.into()
    }

    /// HF tensors without the completeness check, to build incomplete files.
    fn hf_unchecked(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<HfTensor<'_>> {
        let mut hf: Vec<HfTensor> = tensors
            .iter()
            .map(|(n, d, v)| HfTensor {
                name: hf_name(n).unwrap(),
                shape: d.iter().rev().copied().collect(),
                data: Cow::Borrowed(v),
            })
            .collect();
        hf.sort_by(|a, b| a.name.cmp(&b.name));
        hf
    }

    fn encode(hf: &[HfTensor]) -> Vec<u8> {
        let mut v = safetensors_header(hf);
        for t in hf {
            v.extend(t.data.iter().flat_map(|x| x.to_le_bytes()));
        }
        v
    }

    fn err_string<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    // -- Q/K permutation ----------------------------------------------------

    /// The python definition, row by row: with head_dim 4 a head's HF rows
    /// [a0, a1, b0, b1] (rotate-half pairs (a0, b0), (a1, b1)) are reshaped to
    /// [[a0, a1], [b0, b1]], swapped to [[a0, b0], [a1, b1]] and flattened.
    #[test]
    fn permute_qk_matches_llama_cpp() {
        let (n_heads, head_dim, n_in) = (2, 4, 3);
        let hf: Vec<f32> = (0..n_heads * head_dim * n_in).map(|x| x as f32).collect();
        let gguf = permute_qk(&hf, n_heads, head_dim, n_in);
        // GGUF row r holds HF row expected[r].
        let expected = [0, 2, 1, 3, 4, 6, 5, 7];
        for (r, &src) in expected.iter().enumerate() {
            assert_eq!(
                gguf[r * n_in..(r + 1) * n_in],
                hf[src * n_in..(src + 1) * n_in],
                "row {r}"
            );
        }
        // head_dim 6: [a0 a1 a2 b0 b1 b2] -> [a0 b0 a1 b1 a2 b2].
        let hf: Vec<f32> = (0..6).map(|x| x as f32).collect();
        assert_eq!(permute_qk(&hf, 1, 6, 1), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(unpermute_qk(&[0.0, 3.0, 1.0, 4.0, 2.0, 5.0], 1, 6, 1), hf);
    }

    #[test]
    fn permute_qk_and_unpermute_qk_invert_each_other() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (n_heads, head_dim, n_in) in [(1, 2, 1), (3, 8, 5), (2, 64, 3)] {
            let w: Vec<f32> = (0..n_heads * head_dim * n_in)
                .map(|_| rng.random())
                .collect();
            let p = permute_qk(&w, n_heads, head_dim, n_in);
            // With head_dim 2 each head's single pair is already adjacent.
            assert_eq!(p == w, head_dim == 2);
            assert_eq!(unpermute_qk(&p, n_heads, head_dim, n_in), w);
            assert_eq!(
                permute_qk(
                    &unpermute_qk(&w, n_heads, head_dim, n_in),
                    n_heads,
                    head_dim,
                    n_in
                ),
                w
            );
        }
    }

    /// Why the permutation is enough: attention scores with GGUF rows and
    /// interleaved RoPE equal those with HF rows and rotate-half RoPE.
    #[test]
    fn unpermuted_weights_with_halves_rope_match_interleaved() {
        let (n_heads, head_dim, n_in) = (2, 8, 5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut rand_vec =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let wq_gguf = rand_vec(n_heads * head_dim * n_in);
        let wk_gguf = rand_vec(n_heads * head_dim * n_in);
        let (x1, x2) = (rand_vec(n_in), rand_vec(n_in));
        let wq_hf = unpermute_qk(&wq_gguf, n_heads, head_dim, n_in);
        let wk_hf = unpermute_qk(&wk_gguf, n_heads, head_dim, n_in);

        let matvec = |w: &[f32], x: &[f32]| -> Vec<f64> {
            w.chunks_exact(n_in)
                .map(|row| row.iter().zip(x).map(|(a, b)| (a * b) as f64).sum())
                .collect()
        };
        let rope = |v: &mut [f64], pos: f64, interleaved: bool| {
            for head in v.chunks_exact_mut(head_dim) {
                for i in 0..head_dim / 2 {
                    let theta = pos / 10000f64.powf(2.0 * i as f64 / head_dim as f64);
                    let (a, b) = if interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + head_dim / 2)
                    };
                    let (c, s) = (theta.cos(), theta.sin());
                    let (x, y) = (head[a], head[b]);
                    head[a] = x * c - y * s;
                    head[b] = x * s + y * c;
                }
            }
        };
        let scores = |wq: &[f32], wk: &[f32], interleaved: bool| -> Vec<f64> {
            let mut q = matvec(wq, &x1);
            let mut k = matvec(wk, &x2);
            rope(&mut q, 5.0, interleaved);
            rope(&mut k, 2.0, interleaved);
            q.chunks_exact(head_dim)
                .zip(k.chunks_exact(head_dim))
                .map(|(q, k)| q.iter().zip(k).map(|(a, b)| a * b).sum())
                .collect()
        };
        let gguf = scores(&wq_gguf, &wk_gguf, true);
        let hf = scores(&wq_hf, &wk_hf, false);
        for (a, b) in gguf.iter().zip(&hf) {
            assert!((a - b).abs() < 1e-9, "{gguf:?} vs {hf:?}");
        }
    }

    // -- round trips ----------------------------------------------------------

    #[cfg(feature = "std-fs")]
    fn round_trip(config: &Config, tied: bool) {
        let dir = TempDir::new("rt");
        let tensors = random_tensors(config, tied, 11);
        write_dir(&dir.0, config, &tensors, Some("{\"model\": {}}")).unwrap();
        assert!(dir.0.join("tokenizer.json").is_file());
        let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

        let (loaded, store) = load_dir(&dir.0).unwrap();
        assert_eq!(
            loaded,
            Config {
                rope_style: RopeStyle::Halves,
                ..config.clone()
            }
        );
        assert_eq!(store.tensors.len(), tensors.len());
        assert_eq!(store.tensors.contains_key("output.weight"), !tied);
        for (name, dims, data) in &tensors {
            let t = store.expect(name, dims).unwrap();
            assert_eq!(t.dtype, DType::F32);
            let got = f32s(store.data(t));
            let want = match (config.rope_style, name.as_str()) {
                (RopeStyle::Interleaved, n) if n.ends_with("attn_q.weight") => {
                    unpermute_qk(data, config.n_heads, config.head_dim, dims[0])
                }
                (RopeStyle::Interleaved, n) if n.ends_with("attn_k.weight") => {
                    unpermute_qk(data, config.n_kv_heads, config.head_dim, dims[0])
                }
                _ => data.clone(),
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[cfg(feature = "std-fs")]
    #[test]
    fn round_trip_llama_tied_and_untied() {
        round_trip(&small_config("llama", None), true);
        round_trip(&small_config("llama", None), false);
    }

    #[cfg(feature = "std-fs")]
    #[test]
    fn round_trip_mistral_with_sliding_window() {
        round_trip(&small_config("mistral", Some(64)), false);
        round_trip(&small_config("mistral", Some(3)), true);
        round_trip(&small_config("mistral", None), false);
    }

    #[test]
    fn a_llama_gguf_with_a_window_exports_as_mistral() {
        let json: Value =
            serde_json::from_slice(&config_json(&small_config("llama", Some(16)), false)).unwrap();
        assert_eq!(json["model_type"], "mistral");
        assert_eq!(json["architectures"][0], "MistralForCausalLM");
        assert_eq!(json["sliding_window"], 16);
    }

    #[cfg(feature = "std-fs")]
    #[test]
    fn round_trip_gguf_layout_unpermutes_qk() {
        let config = Config {
            rope_style: RopeStyle::Interleaved,
            ..small_config("llama", None)
        };
        round_trip(&config, false);
    }

    #[cfg(feature = "std-fs")]
    #[test]
    fn round_trip_llama3_rope_scaling() {
        let scaling = Llama3Scaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192,
        };
        let mut config = small_config("llama", None);
        config.head_dim = 64;
        config.n_heads = 2;
        config.n_kv_heads = 1;
        config.d_model = 32;
        config.rope_theta = 500000.0;
        config.rope_freq_factors = Some(scaling.freq_factors(64, 500000.0));
        round_trip(&config, true);
        let json: Value = serde_json::from_slice(&config_json(&config, true)).unwrap();
        assert_eq!(json["rope_scaling"]["rope_type"], "llama3");
        assert_eq!(json["rope_scaling"]["factor"], 32.0);
        assert_eq!(
            json["rope_scaling"]["original_max_position_embeddings"],
            8192
        );
    }

    #[test]
    fn load_bytes_is_zero_copy_and_maps_names() {
        let config = small_config("llama", None);
        let tensors = random_tensors(&config, false, 5);
        let file = st_bytes(&config, &tensors);
        let (_, store) = load_bytes(&config_json(&config, false), vec![file.clone()]).unwrap();
        let t = store.get("blk.1.ffn_down.weight").unwrap();
        assert_eq!(t.dims, [24, 16]);
        assert_eq!(store.data(t).as_ptr(), file[t.offset..].as_ptr());
    }

    #[test]
    fn config_from_hf_json_defaults_and_extras() {
        let json = br#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100,
            "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
            "num_key_value_heads": null, "rope_scaling": null, "sliding_window": 4096}"#;
        let c = Config::from_hf_json(json).unwrap();
        assert_eq!((c.n_kv_heads, c.head_dim, c.rope_theta), (8, 8, 10000.0));
        assert_eq!(c.rope_style, RopeStyle::Halves);
        // transformers' Llama has no sliding window, whatever the file says.
        assert_eq!(c.sliding_window, None);
        assert_eq!(c.rope_freq_factors, None);
    }

    #[test]
    fn config_rope_parameters_of_transformers_5() {
        let json = br#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 100,
            "rms_norm_eps": 1e-5, "max_position_embeddings": 2048,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}}"#;
        let c = Config::from_hf_json(json).unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        let f = c.rope_freq_factors.unwrap();
        assert_eq!((f.len(), f[0], f[15]), (16, 1.0, 8.0));
    }

    // -- malformed inputs ------------------------------------------------------

    #[test]
    fn config_errors_name_the_key() {
        let good = String::from_utf8(config_json(&small_config("llama", None), true)).unwrap();
        let mut v: Value = serde_json::from_str(&good).unwrap();
        v.as_object_mut().unwrap().remove("hidden_size");
        let e = err_string(Config::from_hf_json(v.to_string().as_bytes()));
        assert!(e.contains("'hidden_size'") && e.contains("missing"), "{e}");

        let mut v: Value = serde_json::from_str(&good).unwrap();
        v["model_type"] = "gpt2".into();
        let e = err_string(Config::from_hf_json(v.to_string().as_bytes()));
        assert!(e.contains("model_type") && e.contains("gpt2"), "{e}");

        let mut v: Value = serde_json::from_str(&good).unwrap();
        v["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 4.0});
        let e = err_string(Config::from_hf_json(v.to_string().as_bytes()));
        assert!(e.contains("unsupported") && e.contains("yarn"), "{e}");

        let mut v: Value = serde_json::from_str(&good).unwrap();
        v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0});
        let e = err_string(Config::from_hf_json(v.to_string().as_bytes()));
        assert!(e.contains("rope_scaling.low_freq_factor"), "{e}");

        let mut v: Value = serde_json::from_str(&good).unwrap();
        v["num_key_value_heads"] = 3.into();
        let e = err_string(Config::from_hf_json(v.to_string().as_bytes()));
        assert!(e.contains("num_key_value_heads"), "{e}");

        let mut v: Value = serde_json::from_str(&good).unwrap();
        v["vocab_size"] = "many".into();
        let e = err_string(Config::from_hf_json(v.to_string().as_bytes()));
        assert!(e.contains("vocab_size") && e.contains("many"), "{e}");

        let mut v: Value = serde_json::from_str(&good).unwrap();
        v["head_dim"] = 1_000_000_000_000u64.into();
        v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192});
        let e = err_string(Config::from_hf_json(v.to_string().as_bytes()));
        assert!(e.contains("head_dim") && e.contains("out of range"), "{e}");

        let e = err_string(Config::from_hf_json(b"{\"model_type\": "));
        assert!(e.contains("config.json") && e.contains("JSON"), "{e}");
    }

    fn load_one(config: &Config, file: Arc<[u8]>) -> String {
        err_string(load_bytes(&config_json(config, true), vec![file]))
    }

    #[test]
    fn truncated_file_and_header_length_errors() {
        let config = small_config("llama", None);
        let file = st_bytes(&config, &random_tensors(&config, true, 1));

        let e = load_one(&config, file[..5].into());
        assert!(e.contains("too short"), "{e}");

        // Cut inside the data: the last tensor's offsets now run past the end.
        let e = load_one(&config, file[..file.len() - 4].into());
        assert!(e.contains("outside the data section"), "{e}");

        let mut beyond = file.to_vec();
        beyond[..8].copy_from_slice(&(file.len() as u64).to_le_bytes());
        let e = load_one(&config, beyond.into());
        assert!(e.contains("runs past the end"), "{e}");

        let mut huge = file.to_vec();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = load_one(&config, huge.into());
        assert!(e.contains("limit"), "{e}");
    }

    #[test]
    fn bad_header_json() {
        let config = small_config("llama", None);
        let e = load_one(&config, st_file("{\"a\": [1, 2", &[]));
        assert!(e.contains("not a valid JSON"), "{e}");
        let e = load_one(&config, st_file("[1, 2]", &[]));
        assert!(e.contains("not a valid JSON"), "{e}");
    }

    #[test]
    fn unsupported_dtype_names_the_tensor() {
        let config = small_config("llama", None);
        let mut tensors = random_tensors(&config, true, 2);
        tensors.retain(|(n, _, _)| n != "output_norm.weight");
        let good: Arc<[u8]> = encode(&hf_unchecked(&tensors)).into();
        // Append model.norm.weight as I64 (16 values, 128 bytes) in a second shard.
        let norm = st_file(
            r#"{"model.norm.weight": {"dtype": "I64", "shape": [16], "data_offsets": [0, 128]}}"#,
            &[0u8; 128],
        );
        let e = err_string(load_bytes(
            &config_json(&config, true),
            vec![good.clone(), norm],
        ));
        assert!(
            e.contains("unsupported") && e.contains("'model.norm.weight'") && e.contains("I64"),
            "{e}"
        );

        // An ignored tensor may have any dtype.
        let extra = st_file(
            r#"{"model.norm.weight": {"dtype": "F16", "shape": [16], "data_offsets": [0, 32]},
                "model.rotary_emb.inv_freq": {"dtype": "I64", "shape": [2], "data_offsets": [32, 48]}}"#,
            &[0u8; 48],
        );
        let (_, store) = load_bytes(&config_json(&config, true), vec![good, extra]).unwrap();
        assert_eq!(store.get("output_norm.weight").unwrap().dtype, DType::F16);
    }

    #[test]
    fn data_offsets_out_of_range_or_inconsistent() {
        let config = small_config("llama", None);
        let e = load_one(
            &config,
            st_file(
                r#"{"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}"#,
                &[0; 16],
            ),
        );
        assert!(
            e.contains("'x'") && e.contains("outside the data section"),
            "{e}"
        );
        let e = load_one(
            &config,
            st_file(
                r#"{"x": {"dtype": "F32", "shape": [4], "data_offsets": [8, 4]}}"#,
                &[0; 16],
            ),
        );
        assert!(e.contains("outside the data section"), "{e}");
        let e = load_one(
            &config,
            st_file(
                r#"{"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}"#,
                &[0; 16],
            ),
        );
        assert!(
            e.contains("'x'") && e.contains("hold 12 bytes") && e.contains("needs 16"),
            "{e}"
        );
        let e = load_one(
            &config,
            st_file(
                r#"{"x": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}}"#,
                &[0; 16],
            ),
        );
        assert!(e.contains("overflows") || e.contains("needs"), "{e}");
    }

    #[test]
    fn missing_tensor_is_named() {
        let config = small_config("llama", None);
        let mut tensors = random_tensors(&config, true, 3);
        tensors.retain(|(n, _, _)| n != "blk.1.ffn_up.weight");
        let e = load_one(&config, encode(&hf_unchecked(&tensors)).into());
        assert!(
            e.contains("'model.layers.1.mlp.up_proj.weight'") && e.contains("missing"),
            "{e}"
        );

        // Untied config without lm_head.
        let file = st_bytes(&config, &random_tensors(&config, true, 3));
        let e = err_string(load_bytes(&config_json(&config, false), vec![file]));
        assert!(
            e.contains("'lm_head.weight'") && e.contains("tie_word_embeddings"),
            "{e}"
        );
    }

    #[test]
    fn config_contradicting_weights_names_both() {
        let config = small_config("llama", None);
        let file = st_bytes(&config, &random_tensors(&config, true, 4));
        let other = Config {
            d_model: 12,
            ..config.clone()
        };
        let e = load_one(&other, file.clone());
        assert!(
            e.contains("model.embed_tokens.weight")
                && e.contains("16")
                && e.contains("hidden_size = 12"),
            "{e}"
        );
        let fewer_layers = Config {
            n_layers: 1,
            ..config.clone()
        };
        let e = load_one(&fewer_layers, file.clone());
        assert!(
            e.contains("model.layers.1.") && e.contains("num_hidden_layers = 1"),
            "{e}"
        );
        let more_heads = Config {
            n_kv_heads: 4,
            ..config.clone()
        };
        let e = load_one(&more_heads, file);
        assert!(
            e.contains("k_proj") && e.contains("num_key_value_heads * head_dim = 16"),
            "{e}"
        );
    }

    #[cfg(feature = "std-fs")]
    #[test]
    fn sharded_index_loads_and_names_missing_shard() {
        let config = small_config("mistral", Some(8));
        let tensors = random_tensors(&config, false, 9);
        let (a, b) = tensors.split_at(7);
        let dir = TempDir::new("shards");
        let mut weight_map = Map::new();
        for (file, part) in [
            ("model-00001-of-00002.safetensors", a),
            ("model-00002-of-00002.safetensors", b),
        ] {
            let hf = hf_unchecked(part);
            for t in &hf {
                weight_map.insert(t.name.clone(), file.into());
            }
            std::fs::write(dir.0.join(file), encode(&hf)).unwrap();
        }
        let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(
            dir.0.join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        std::fs::write(dir.0.join("config.json"), config_json(&config, false)).unwrap();

        let (loaded, store) = load_dir(&dir.0).unwrap();
        assert_eq!(loaded.sliding_window, Some(8));
        assert_eq!(store.shards.len(), 2);
        for (name, dims, data) in &tensors {
            assert_eq!(f32s(store.data(store.expect(name, dims).unwrap())), *data);
        }

        let mut wrong = index.clone();
        wrong["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors".into();
        std::fs::write(
            dir.0.join("model.safetensors.index.json"),
            wrong.to_string(),
        )
        .unwrap();
        let e = err_string(load_dir(&dir.0));
        assert!(
            e.contains("'model.norm.weight'") && e.contains("does not hold it"),
            "{e}"
        );

        std::fs::remove_file(dir.0.join("model-00002-of-00002.safetensors")).unwrap();
        let e = err_string(load_dir(&dir.0));
        assert!(
            e.contains("model-00002-of-00002.safetensors") && e.contains("index"),
            "{e}"
        );

        std::fs::remove_file(dir.0.join("model.safetensors.index.json")).unwrap();
        let e = err_string(load_dir(&dir.0));
        assert!(e.contains("model.safetensors.index.json"), "{e}");
    }

    #[cfg(feature = "std-fs")]
    #[test]
    fn write_dir_refuses_incomplete_or_unknown_tensors() {
        let config = small_config("llama", None);
        let dir = TempDir::new("refuse");
        let mut tensors = random_tensors(&config, true, 6);
        tensors.retain(|(n, _, _)| n != "blk.0.attn_v.weight");
        let e = err_string(write_dir(&dir.0, &config, &tensors, None));
        assert!(e.contains("blk.0.attn_v.weight"), "{e}");
        let mut tensors = random_tensors(&config, true, 6);
        tensors.push(("mystery.weight".into(), vec![2], vec![0.0; 2]));
        let e = err_string(write_dir(&dir.0, &config, &tensors, None));
        assert!(e.contains("mystery.weight"), "{e}");
        assert!(!dir.0.join("config.json").exists());
    }
}
