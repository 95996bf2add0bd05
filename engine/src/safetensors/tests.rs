//! Round trips through `config.json` and `model.safetensors`, and the errors
//! malformed checkpoints get. (The Q/K permutation is tested in `permute.rs`.)

use std::borrow::Cow;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

use super::config::config_to_hf_json;
use super::names::{expected_tensors, hf_name};
use super::writer::{serialize, HfTensor, Values};
use super::*;
use crate::config::{Config, Llama3Scaling, RopeStyle};
use crate::error::Result;
use crate::quant::DType;

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
fn random_tensors(config: &Config, tied: bool, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
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
            data: Values::Given(Cow::Borrowed(v)),
        })
        .collect();
    hf.sort_by(|a, b| a.name.cmp(&b.name));
    hf
}

fn encode(hf: &[HfTensor]) -> Vec<u8> {
    serialize(hf).unwrap()
}

fn err_string<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
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
    // The file and the in-memory form are the same serializer's bytes.
    assert_eq!(
        std::fs::read(dir.0.join("model.safetensors")).unwrap(),
        write_bytes(config, &tensors).unwrap().1
    );

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

/// bf16 shards: several files and an index that `load_dir` reads back,
/// every value the nearest bf16 of what was written; a later single-file
/// write removes the shards and index so the folder is not ambiguous.
#[cfg(feature = "std-fs")]
#[test]
fn sharded_bf16_write_loads_back() {
    use super::writer::{write_dir_sharded, ShardOptions};
    let config = small_config("llama", None);
    let dir = TempDir::new("shards");
    let tensors = random_tensors(&config, false, 5);
    let total: usize = tensors.iter().map(|t| 2 * t.2.len()).sum();
    let options = ShardOptions {
        bf16: true,
        max_shard_bytes: total as u64 / 3,
    };
    write_dir_sharded(&dir.0, &config, &tensors, None, options).unwrap();
    assert!(dir.0.join("model.safetensors.index.json").is_file());
    assert!(!dir.0.join("model.safetensors").exists());
    let n_shards = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter(|e| {
            let n = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            n.starts_with("model-") && n.ends_with(".safetensors")
        })
        .count();
    assert!(n_shards >= 3, "{n_shards} shards");
    let (_, store) = load_dir(&dir.0).unwrap();
    for (name, dims, data) in &tensors {
        let t = store.expect(name, dims).unwrap();
        assert_eq!(t.dtype, DType::BF16, "{name}");
        let got: Vec<f32> = store
            .data(t)
            .chunks_exact(2)
            .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect();
        let want: Vec<f32> = data
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect();
        assert_eq!(got, want, "{name}");
    }
    // One shard (f32): a plain model.safetensors, the old shards gone.
    let one = ShardOptions {
        bf16: false,
        max_shard_bytes: u64::MAX,
    };
    write_dir_sharded(&dir.0, &config, &tensors, None, one).unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("model"))
        .collect();
    assert_eq!(names, ["model.safetensors"]);
    let (_, store) = load_dir(&dir.0).unwrap();
    let (name, dims, data) = &tensors[0];
    assert_eq!(&f32s(store.data(store.expect(name, dims).unwrap())), data);
}

/// A [`TensorSource`] over given tensors that counts its reads and fails
/// on the tensor named `fail`.
#[cfg(feature = "std-fs")]
struct Counted<'a> {
    tensors: &'a [(String, Vec<usize>, Vec<f32>)],
    reads: std::cell::Cell<usize>,
    fail: Option<&'a str>,
}

#[cfg(feature = "std-fs")]
impl TensorSource for Counted<'_> {
    fn specs(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors
            .iter()
            .map(|t| (t.0.clone(), t.1.clone()))
            .collect()
    }
    fn values(&self, i: usize) -> Result<Vec<f32>> {
        self.reads.set(self.reads.get() + 1);
        let (name, _, v) = &self.tensors[i];
        if self.fail == Some(name.as_str()) {
            return Err(crate::Error::tensor(name.clone(), "device lost"));
        }
        Ok(v.clone())
    }
}

/// Writing from a source (tensor by tensor) gives the same files as
/// writing given tensors, GGUF Q/K rows reordered the same way, each
/// tensor read once; a read that fails is the error, naming the tensor,
/// and the shard it belonged to is not written.
#[cfg(feature = "std-fs")]
#[test]
fn a_source_is_written_tensor_by_tensor_like_given_tensors() {
    use super::writer::{write_dir_sharded, write_dir_sharded_from, ShardOptions};
    let mut config = small_config("llama", None);
    config.rope_style = RopeStyle::Interleaved;
    let tensors = random_tensors(&config, false, 11);
    let options = ShardOptions {
        bf16: false,
        max_shard_bytes: 2_000,
    };
    let (given, from) = (TempDir::new("given"), TempDir::new("from"));
    write_dir_sharded(&given.0, &config, &tensors, None, options).unwrap();
    let source = Counted {
        tensors: &tensors,
        reads: std::cell::Cell::new(0),
        fail: None,
    };
    write_dir_sharded_from(&from.0, &config, &source, None, options).unwrap();
    assert_eq!(source.reads.get(), tensors.len());
    let mut names: Vec<String> = std::fs::read_dir(&given.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() > 3, "{names:?}");
    for n in &names {
        let a = std::fs::read(given.0.join(n)).unwrap();
        let b = std::fs::read(from.0.join(n)).unwrap();
        assert!(a == b, "{n} differs");
    }

    let bad = TempDir::new("bad");
    let failing = Counted {
        tensors: &tensors,
        reads: std::cell::Cell::new(0),
        fail: Some("blk.1.ffn_up.weight"),
    };
    let e = err_string(write_dir_sharded_from(
        &bad.0, &config, &failing, None, options,
    ));
    assert!(
        e.contains("blk.1.ffn_up.weight") && e.contains("device lost"),
        "{e}"
    );
    let (_, store) = load_dir(&bad.0).map_or((None, None), |(c, s)| (Some(c), Some(s)));
    assert!(
        store.is_none(),
        "a folder with a failed tensor must not load"
    );
}
