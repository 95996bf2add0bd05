//! Tensor names and the shapes the config implies: LLaMA/Mistral's HF names
//! against GGUF's canonical ones, and the `[out, in]` shape each must have.

use crate::config::Config;
use crate::error::{Error, Result};

/// One expected weight: its HF name, GGUF name, and HF shape `[out, in]`
/// with the `config.json` key (or product of keys) behind each dimension.
pub(super) struct Expected {
    pub(super) hf: String,
    pub(super) gguf: String,
    pub(super) shape: Vec<(usize, &'static str)>,
}

/// Every tensor the config requires, in file order.
pub(super) fn expected_tensors(config: &Config, tied: bool) -> Vec<Expected> {
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
pub(super) fn hf_name(gguf: &str) -> Option<String> {
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
pub(super) fn check_shape(
    hf: &str,
    gguf: &str,
    shape: &[usize],
    expected: &[(usize, &str)],
) -> Result<()> {
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
