//! `config.json`: reading a Hugging Face config into a [`Config`] (errors name
//! the HF key, not the GGUF one) and writing one back for an exported model.

use serde_json::{Map, Value};

use crate::config::{Config, Llama3Scaling, RopeStyle};
use crate::error::{Error, Result};

/// What `config.json` says beyond [`Config`]: whether the LM head reuses the
/// token embedding (then `lm_head.weight` is absent or ignored).
pub(super) struct HfConfig {
    pub(super) config: Config,
    pub(super) tie_word_embeddings: bool,
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

pub(super) fn parse_hf_config(bytes: &[u8]) -> Result<HfConfig> {
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

pub(super) fn config_to_hf_json(config: &Config, tied: bool) -> Result<String> {
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
