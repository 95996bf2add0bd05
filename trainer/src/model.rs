//! The LLaMA family (LLaMA-2/3, Mistral, SmolLM) on candle, with gradients:
//! the same graph as the engine's `model.rs`, written with differentiable
//! tensor operations so every weight trains.
//!
//! Weights are loaded through the engine (`Model::load` of a Hugging Face
//! folder), so the trainer accepts exactly what the engine accepts and names
//! tensors the engine's way (GGUF names: `blk.3.attn_q.weight`). Rows keep the
//! Hugging Face order, so RoPE pairs dimensions `(i, i + head_dim/2)`
//! ("rotate half"), as [`RopeStyle::Halves`] says.
//!
//! Weights are [`Var`]s in f32 (the default) or bf16 ([`TrainModel::cast_params`],
//! `--param-dtype bf16`: half the memory; the optimizer then rounds its
//! updates stochastically or keeps an f32 master, `optim::bf16_rounding`);
//! the forward pass runs in `compute` dtype (f32 on CPU, bf16 on CUDA),
//! casting each weight on the way in so the gradients land on the weights.
//!
//! Shapes: `B` sequences of `T` tokens, `d` = `d_model`, `hd` = `head_dim`,
//! `H` / `Hkv` = query / key-value heads, `V` = vocabulary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use main_engine::config::{Config, RopeStyle};
use main_engine::model::Model as EngineModel;
use main_engine::template::ChatTemplate;
use main_engine::tokenizer::Tokenizer;

use crate::error::{CandleExt, Error, Result};

/// `(GGUF name, ggml dims, f32 values)`: a tensor as the engine's writers take it.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// How the weights are stored (`--param-dtype`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ParamDtype {
    #[default]
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "bf16")]
    Bf16,
}

impl ParamDtype {
    pub fn parse(s: &str) -> Result<ParamDtype> {
        match s {
            "f32" => Ok(ParamDtype::F32),
            "bf16" => Ok(ParamDtype::Bf16),
            other => Err(Error::invalid(
                "param dtype",
                format!("'{other}' (expected f32 or bf16)"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamDtype::F32 => "f32",
            ParamDtype::Bf16 => "bf16",
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            ParamDtype::F32 => DType::F32,
            ParamDtype::Bf16 => DType::BF16,
        }
    }
}

/// One trainable tensor: its GGUF name and f32 master value, shaped as
/// Hugging Face stores it (`[out, in]` for matrices).
pub struct Param {
    pub name: String,
    pub var: Var,
}

/// A trainable model with its tokenizer and chat template.
pub struct TrainModel {
    pub config: Config,
    /// The LM head is the token embedding.
    pub tied: bool,
    pub device: Device,
    /// Dtype of the forward pass (the weights keep theirs).
    pub compute: DType,
    /// Every weight, in a fixed order (checkpoints and the optimizer rely on it).
    pub params: Vec<Param>,
    index: HashMap<String, usize>,
    /// The folder the model was loaded from: tokenizer files are copied from it.
    pub source: PathBuf,
    /// The engine's view of the source folder, kept for its tokenizer.
    base: EngineModel,
    pub template: ChatTemplate,
}

/// A padded batch of token sequences and the positions whose next token is
/// scored.
pub struct Batch {
    /// (B, T) token ids, right-padded: padding comes after every real
    /// token, so the causal mask already hides it.
    pub ids: Tensor,
    pub n_seq: usize,
    pub seq_len: usize,
    /// (N) flat positions `b * T + t` whose output predicts a target.
    pub positions: Tensor,
    /// (N) the target token at each of those positions.
    pub targets: Tensor,
    /// Sequence of each target, for per-sequence sums.
    pub target_seq: Vec<usize>,
}

impl Batch {
    /// `seqs[i] = (ids, n_prompt)`: the targets are `ids[n_prompt..]`.
    pub fn new(seqs: &[(&[u32], usize)], device: &Device) -> Result<Batch> {
        let n_seq = seqs.len();
        let seq_len = seqs.iter().map(|s| s.0.len()).max().unwrap_or(0);
        if n_seq == 0 || seq_len == 0 {
            return Err(Error::invalid("batch", "no tokens"));
        }
        let mut ids = vec![0u32; n_seq * seq_len];
        let (mut positions, mut targets, mut target_seq) = (Vec::new(), Vec::new(), Vec::new());
        for (b, (toks, n_prompt)) in seqs.iter().enumerate() {
            if *n_prompt == 0 || *n_prompt >= toks.len() {
                return Err(Error::invalid(
                    "batch",
                    format!(
                        "sequence {b}: prompt of {n_prompt} tokens in {} leaves no target after a prompt",
                        toks.len()
                    ),
                ));
            }
            ids[b * seq_len..b * seq_len + toks.len()].copy_from_slice(toks);
            for t in *n_prompt..toks.len() {
                positions.push((b * seq_len + t - 1) as u32);
                targets.push(toks[t]);
                target_seq.push(b);
            }
        }
        let n = targets.len();
        Ok(Batch {
            ids: Tensor::from_vec(ids, (n_seq, seq_len), device).op("batch ids")?,
            n_seq,
            seq_len,
            positions: Tensor::from_vec(positions, n, device).op("batch positions")?,
            targets: Tensor::from_vec(targets, n, device).op("batch targets")?,
            target_seq,
        })
    }

    pub fn n_targets(&self) -> usize {
        self.target_seq.len()
    }
}

impl TrainModel {
    /// Loads a Hugging Face folder (`config.json`, safetensors, `tokenizer.json`,
    /// optional `tokenizer_config.json`) as f32 masters on `device`.
    pub fn load(dir: &Path, device: &Device, compute: DType) -> Result<TrainModel> {
        if !dir.is_dir() {
            return Err(Error::invalid(
                "model",
                format!(
                    "{} is not a Hugging Face model folder (config.json + safetensors)",
                    dir.display()
                ),
            ));
        }
        let base = EngineModel::load(dir)?;
        if base.config.rope_style != RopeStyle::Halves {
            return Err(Error::invalid(
                "model",
                "expected Hugging Face rotate-half Q/K rows",
            ));
        }
        let mut refs: Vec<_> = base.tensors().collect();
        refs.sort_by_key(|t| param_order(&t.name));
        let mut params = Vec::with_capacity(refs.len());
        for t in refs {
            let values = main_engine::convert::dequantize_tensor(&base, t);
            // ggml dims are [in, out]; candle's row-major shape is [out, in].
            let shape: Vec<usize> = t.dims.iter().rev().copied().collect();
            let tensor = Tensor::from_vec(values, shape, device).op("load weight")?;
            params.push(Param {
                name: t.name.clone(),
                var: Var::from_tensor(&tensor).op("load weight")?,
            });
        }
        let tied = !params.iter().any(|p| p.name == "output.weight");
        let template = ChatTemplate::for_model(&base)?;
        let index = params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        Ok(TrainModel {
            config: base.config.clone(),
            tied,
            device: device.clone(),
            compute,
            params,
            index,
            source: dir.to_path_buf(),
            base,
            template,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.base.tokenizer
    }

    /// The dtype the weights are stored in (f32 or bf16).
    pub fn param_dtype(&self) -> DType {
        self.params.first().map_or(DType::F32, |p| p.var.dtype())
    }

    /// Stores every weight in `dtype` (f32 or bf16), each converted and
    /// replaced in turn so only one tensor exists twice at a time.
    pub fn cast_params(&mut self, dtype: DType) -> Result<()> {
        if !matches!(dtype, DType::F32 | DType::BF16) {
            return Err(Error::invalid(
                "param dtype",
                format!("{dtype:?} (expected f32 or bf16)"),
            ));
        }
        for p in &mut self.params {
            if p.var.dtype() != dtype {
                let t = p.var.as_tensor().to_dtype(dtype).op("cast weight")?;
                p.var = Var::from_tensor(&t).op("cast weight")?;
            }
        }
        Ok(())
    }

    pub fn n_params(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    pub fn param(&self, name: &str) -> Result<&Var> {
        self.index
            .get(name)
            .map(|&i| &self.params[i].var)
            .ok_or_else(|| Error::invalid("weight", format!("'{name}' is not in the model")))
    }

    /// Index of weight `name` in [`TrainModel::params`].
    pub fn param_index(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| Error::invalid("weight", format!("'{name}' is not in the model")))
    }

    /// The LM head's weight: the token embedding when tied.
    pub fn head_name(&self) -> &'static str {
        if self.tied {
            "token_embd.weight"
        } else {
            "output.weight"
        }
    }

    /// The weight in the compute dtype (a differentiable cast of the master).
    fn w(&self, name: &str) -> Result<Tensor> {
        let v = self.param(name)?.as_tensor();
        if v.dtype() == self.compute {
            Ok(v.clone())
        } else {
            v.to_dtype(self.compute).op("weight cast")
        }
    }

    /// `(B*T, d)` final-normed hidden states of a batch.
    pub fn hidden(&self, batch: &Batch) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = (batch.n_seq, batch.seq_len);
        let (d, hd) = (c.d_model, c.head_dim);
        let (n_h, n_kv) = (c.n_heads, c.n_kv_heads);
        let flat_ids = batch.ids.flatten_all().op("ids")?;
        // (B*T, d) residual stream.
        let mut x = self
            .w("token_embd.weight")?
            .index_select(&flat_ids, 0)
            .op("embedding")?;
        let (cos, sin) = self.rope_tables(t)?;
        let mask = self.mask(t)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let lin = |x: &Tensor, name: &str| -> Result<Tensor> {
            x.matmul(&self.w(name)?.t().op("transpose")?)
                .op(&format!("matmul {name}"))
        };
        for l in 0..c.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let h = rms_norm(&x, &self.w(&n("attn_norm"))?, c.rms_eps)?;
            // (B, heads, T, hd)
            let heads = |y: Tensor, n: usize| -> Result<Tensor> {
                y.reshape((b, t, n, hd))
                    .and_then(|y| y.transpose(1, 2))
                    .and_then(|y| y.contiguous())
                    .op("split heads")
            };
            let q = heads(lin(&h, &n("attn_q"))?, n_h)?;
            let k = heads(lin(&h, &n("attn_k"))?, n_kv)?;
            let v = heads(lin(&h, &n("attn_v"))?, n_kv)?;
            let q = rope(&q, &cos, &sin)?;
            let k = rope(&k, &cos, &sin)?;
            let k = repeat_kv(k, n_h / n_kv)?;
            let v = repeat_kv(v, n_h / n_kv)?;
            let att = (q.matmul(&k.t().op("k^T")?).op("attention scores")? * scale)
                .op("attention scale")?
                .broadcast_add(&mask)
                .op("attention mask")?;
            let att = candle_nn::ops::softmax(&att, D::Minus1).op("attention softmax")?;
            let o = att
                .matmul(&v)
                .and_then(|o| o.transpose(1, 2))
                .and_then(|o| o.reshape((b * t, n_h * hd)))
                .op("attention output")?;
            x = (x + lin(&o, &n("attn_output"))?).op("residual")?;

            let h = rms_norm(&x, &self.w(&n("ffn_norm"))?, c.rms_eps)?;
            let gate = lin(&h, &n("ffn_gate"))?.silu().op("silu")?;
            let up = lin(&h, &n("ffn_up"))?;
            let ff = lin(&(gate * up).op("swiglu")?, &n("ffn_down"))?;
            x = (x + ff).op("residual")?;
        }
        let _ = d;
        rms_norm(&x, &self.w("output_norm.weight")?, c.rms_eps)
    }

    /// `(N)` log-probabilities of the batch's targets (f32; f64 when the
    /// graph runs in f64), differentiable.
    pub fn target_logprobs(&self, batch: &Batch) -> Result<Tensor> {
        let hidden = self.hidden(batch)?;
        // The LM head runs only where a target is predicted.
        let h = hidden
            .index_select(&batch.positions, 0)
            .op("gather hidden")?;
        let head = if self.tied {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        let logits = h
            .matmul(&self.w(head)?.t().op("transpose")?)
            .op("LM head")?;
        // Log-softmax over the vocabulary in f32 at least.
        let logits = if logits.dtype() == DType::F64 {
            logits
        } else {
            logits.to_dtype(DType::F32).op("logits to f32")?
        };
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1).op("log-softmax")?;
        lsm.gather(&batch.targets.unsqueeze(1).op("targets")?, 1)
            .and_then(|g| g.squeeze(1))
            .op("gather targets")
    }

    /// `(T, hd)` cos and sin of RoPE in the rotate-half layout: dimension `i`
    /// and `i + hd/2` share frequency `i`. Angles in f64, as the engine does.
    fn rope_tables(&self, t: usize) -> Result<(Tensor, Tensor)> {
        let inv = self.config.rope_inv_freqs();
        let half = inv.len();
        let hd = 2 * half;
        let (mut cos, mut sin) = (vec![0f32; t * hd], vec![0f32; t * hd]);
        for pos in 0..t {
            for (i, f) in inv.iter().enumerate() {
                let a = pos as f64 * f;
                for j in [i, i + half] {
                    cos[pos * hd + j] = a.cos() as f32;
                    sin[pos * hd + j] = a.sin() as f32;
                }
            }
        }
        let mk = |v: Vec<f32>| {
            Tensor::from_vec(v, (t, hd), &self.device)
                .and_then(|x| x.to_dtype(self.compute))
                .op("rope table")
        };
        Ok((mk(cos)?, mk(sin)?))
    }

    /// `(T, T)` additive causal mask with Mistral's sliding window: query `i`
    /// sees keys `j <= i` with `i - j < window`.
    fn mask(&self, t: usize) -> Result<Tensor> {
        let window = self.config.sliding_window.unwrap_or(usize::MAX);
        let mut m = vec![0f32; t * t];
        for i in 0..t {
            for j in 0..t {
                if j > i || i - j >= window {
                    m[i * t + j] = f32::NEG_INFINITY;
                }
            }
        }
        Tensor::from_vec(m, (t, t), &self.device)
            .and_then(|x| x.to_dtype(self.compute))
            .op("attention mask")
    }

    /// Writes the weights as a Hugging Face folder the engine (and
    /// transformers) loads, with the source's tokenizer files. f32 weights
    /// are written as f32 (exports stay exact), bf16 weights as bf16.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        let tok = std::fs::read_to_string(self.source.join("tokenizer.json"))
            .map_err(|e| Error::io(self.source.join("tokenizer.json"), e))?;
        let tok_config = self.source.join("tokenizer_config.json");
        if tok_config.exists() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            std::fs::copy(&tok_config, dir.join("tokenizer_config.json"))
                .map_err(|e| Error::io(dir.join("tokenizer_config.json"), e))?;
        }
        // Weights in their own dtype (bf16 weights as bf16), in shards of
        // at most 5 GB with an index, as Hugging Face writes large models.
        let options = main_engine::safetensors::ShardOptions {
            bf16: self.param_dtype() == DType::BF16,
            ..Default::default()
        };
        // Read tensor by tensor as the writer reaches each one: one weight
        // in f32 at a time in host memory, never all of them
        // (`main-train plan`'s save estimate counts the same).
        main_engine::safetensors::write_dir_sharded_from(
            dir,
            &self.config,
            self,
            Some(&tok),
            options,
        )?;
        Ok(())
    }

    /// The engine's model of the current weights (via a Hugging Face folder
    /// in `dir`), for scoring and generation.
    pub fn to_engine(&self, dir: &Path) -> Result<EngineModel> {
        self.save_hf(dir)?;
        Ok(EngineModel::load(dir)?)
    }
}

/// The weights as the engine's writer reads them, one tensor at a time
/// (`save_hf`).
impl main_engine::safetensors::TensorSource for TrainModel {
    fn specs(&self) -> Vec<(String, Vec<usize>)> {
        self.params
            .iter()
            .map(|p| {
                let dims = p.var.as_tensor().dims().iter().rev().copied().collect();
                (p.name.clone(), dims)
            })
            .collect()
    }

    fn values(&self, i: usize) -> main_engine::Result<Vec<f32>> {
        let p = self
            .params
            .get(i)
            .ok_or_else(|| main_engine::Error::tensor(format!("#{i}"), "no such parameter"))?;
        p.var
            .as_tensor()
            .flatten_all()
            .and_then(|x| x.to_dtype(DType::F32))
            .and_then(|x| x.to_vec1::<f32>())
            .map_err(|e| main_engine::Error::tensor(p.name.clone(), format!("cannot be read: {e}")))
    }
}

/// Checkpoint and optimizer order: embedding, blocks in order, norm, head.
fn param_order(name: &str) -> (usize, usize, String) {
    if name == "token_embd.weight" {
        return (0, 0, String::new());
    }
    if let Some(rest) = name.strip_prefix("blk.") {
        if let Some((l, r)) = rest.split_once('.') {
            if let Ok(l) = l.parse::<usize>() {
                return (1, l, r.to_string());
            }
        }
    }
    (2, 0, name.to_string())
}

/// RMSNorm over the last dimension, in f32 for the statistics.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let dtype = x.dtype();
    // Statistics in f32 at least (f64 when the graph runs in f64).
    let stat = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let x32 = x.to_dtype(stat).op("rms_norm")?;
    let ms = x32
        .sqr()
        .and_then(|s| s.mean_keepdim(D::Minus1))
        .op("rms_norm")?;
    let r = (ms + eps as f64)
        .and_then(|m| m.sqrt())
        .and_then(|m| m.recip())
        .op("rms_norm")?;
    x32.broadcast_mul(&r)
        .and_then(|y| y.to_dtype(dtype))
        .and_then(|y| y.broadcast_mul(w))
        .op("rms_norm")
}

/// Rotate-half RoPE on `(B, heads, T, hd)` (or any shape whose last
/// dimension is `hd` and that `cos`/`sin` broadcast against).
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1).op("rope")?;
    let half = hd / 2;
    let x1 = x.narrow(D::Minus1, 0, half).op("rope")?;
    let x2 = x.narrow(D::Minus1, half, half).op("rope")?;
    let rotated = Tensor::cat(&[&x2.neg().op("rope")?, &x1], D::Minus1).op("rope")?;
    (x.broadcast_mul(cos).op("rope")? + rotated.broadcast_mul(sin).op("rope")?).op("rope")
}

/// `(B, Hkv, T, hd)` -> `(B, Hkv*rep, T, hd)`: each key-value head serves
/// `rep` consecutive query heads.
fn repeat_kv(x: Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x);
    }
    let (b, h, t, hd) = x.dims4().op("repeat_kv")?;
    x.unsqueeze(2)
        .and_then(|y| y.expand((b, h, rep, t, hd)))
        .and_then(|y| y.reshape((b, h * rep, t, hd)))
        .op("repeat_kv")
}

/// Writes a randomly initialised model folder of `config` (normal(0, `std`)
/// matrices, unit norms) with the tokenizer files of `tokenizer_dir`, for
/// tests and for training from scratch.
pub fn write_random(
    dir: &Path,
    config: &Config,
    tied: bool,
    tokenizer_dir: &Path,
    std: f32,
    seed: u64,
) -> Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let c = config;
    let (d, q, kv) = (c.d_model, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("token_embd.weight".into(), vec![d, c.vocab_size])];
    for l in 0..c.n_layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        shapes.extend([
            (n("attn_norm"), vec![d]),
            (n("attn_q"), vec![d, q]),
            (n("attn_k"), vec![d, kv]),
            (n("attn_v"), vec![d, kv]),
            (n("attn_output"), vec![q, d]),
            (n("ffn_norm"), vec![d]),
            (n("ffn_gate"), vec![d, c.d_ff]),
            (n("ffn_up"), vec![d, c.d_ff]),
            (n("ffn_down"), vec![c.d_ff, d]),
        ]);
    }
    shapes.push(("output_norm.weight".into(), vec![d]));
    if !tied {
        shapes.push(("output.weight".into(), vec![d, c.vocab_size]));
    }
    let tensors: Vec<NamedTensor> = shapes
        .into_iter()
        .map(|(name, dims)| {
            let n: usize = dims.iter().product();
            let values = if dims.len() == 1 {
                vec![1.0; n]
            } else {
                // Box-Muller from uniform draws: no extra dependency.
                (0..n)
                    .map(|_| {
                        let u1: f64 = rng.random::<f64>().max(1e-12);
                        let u2: f64 = rng.random();
                        (std as f64 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos())
                            as f32
                    })
                    .collect()
            };
            (name, dims, values)
        })
        .collect();
    let tok = std::fs::read_to_string(tokenizer_dir.join("tokenizer.json"))
        .map_err(|e| Error::io(tokenizer_dir.join("tokenizer.json"), e))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tok_config = tokenizer_dir.join("tokenizer_config.json");
    if tok_config.exists() {
        std::fs::copy(&tok_config, dir.join("tokenizer_config.json"))
            .map_err(|e| Error::io(dir.join("tokenizer_config.json"), e))?;
    }
    main_engine::safetensors::write_dir(dir, config, &tensors, Some(&tok))?;
    Ok(())
}
