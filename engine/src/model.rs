//! The LLaMA-family forward pass (LLaMA-2/3, Mistral, SmolLM): RMSNorm, RoPE,
//! grouped-query attention with an optional sliding window, SwiGLU, tied or
//! separate output head.
//!
//! A [`Model`] is immutable and may be shared by many threads; all mutable
//! state lives in [`KvCache`]s (one per sequence) and the [`Runtime`]
//! (threads and precision) that the caller passes in.
//!
//! Shapes below: `T` = tokens in the call (all sequences together),
//! `d` = `d_model`, `hd` = `head_dim`, `H` / `Hkv` = query / key-value heads.

use crate::config::{Config, RopeStyle};
use crate::error::{Error, Result};
use crate::gguf::{Gguf, Value};
use crate::kernels::{
    self,
    attention::{attend_head, HeadAttention},
};
pub use crate::kv_cache::KvCache;
use crate::matmul::{matmul_input, Precision, QuantizedInput, Weight};
use crate::quant::dequantize_row;
use crate::template::ChatTemplate;
use crate::tensor::{Storage, TensorRef, TensorStore};
use crate::threads::Threads;
use crate::tokenizer::Tokenizer;

/// Threads and numeric precision for a forward pass. Owned by the caller
/// (one per scorer), never by the shared `Model`.
pub struct Runtime {
    pub threads: Threads,
    pub precision: Precision,
}

impl Runtime {
    /// `n_threads == 0`: one per core.
    pub fn new(n_threads: usize, precision: Precision) -> Runtime {
        Runtime {
            threads: Threads::new(n_threads),
            precision,
        }
    }
}

/// The weights of one transformer block, as views into the model's storage.
pub(crate) struct Layer {
    /// (d) RMSNorm weight before attention.
    pub(crate) attn_norm: Vec<f32>,
    /// (H*hd, d) query projection.
    pub(crate) wq: TensorRef,
    /// (Hkv*hd, d) key projection.
    pub(crate) wk: TensorRef,
    /// (Hkv*hd, d) value projection.
    pub(crate) wv: TensorRef,
    /// (d, H*hd) attention output projection.
    pub(crate) wo: TensorRef,
    /// (d) RMSNorm weight before the feed-forward block.
    pub(crate) ffn_norm: Vec<f32>,
    /// (d_ff, d) SwiGLU gate.
    pub(crate) w_gate: TensorRef,
    /// (d_ff, d) SwiGLU up.
    pub(crate) w_up: TensorRef,
    /// (d, d_ff) SwiGLU down.
    pub(crate) w_down: TensorRef,
}

/// A loaded model: config, tokenizer, chat template and weights.
pub struct Model {
    pub config: Config,
    pub tokenizer: Tokenizer,
    /// Jinja chat template from the model file, if it has one.
    pub chat_template: Option<String>,
    /// Whether the weights are one GGUF file, whose metadata
    /// [`Model::gguf_metadata`] reads again on demand. Not kept parsed: the
    /// vocabulary arrays alone are ~100k small strings, several MB that only a
    /// conversion needs.
    from_gguf: bool,
    pub(crate) store: TensorStore,
    /// (vocab, d) token embeddings.
    pub(crate) token_embd: TensorRef,
    /// (vocab, d) output head; the embedding itself when tied.
    pub(crate) output: TensorRef,
    /// (d) final RMSNorm weight.
    pub(crate) output_norm: Vec<f32>,
    pub(crate) layers: Vec<Layer>,
    /// (hd/2) RoPE inverse frequencies, scaling applied.
    rope_inv_freqs: Vec<f64>,
}

fn meta_usize(g: &Gguf, key: &str) -> Result<Option<usize>> {
    g.get_opt::<usize>(key)
}

fn meta_f32(g: &Gguf, key: &str) -> Result<Option<f32>> {
    g.get_opt::<f32>(key)
}

fn meta_str<'a>(g: &'a Gguf, key: &str) -> Result<Option<&'a str>> {
    g.get_opt::<&str>(key)
}

fn required<T>(v: Option<T>, key: &str) -> Result<T> {
    v.ok_or_else(|| Error::metadata(key, "missing"))
}

impl Config {
    /// Reads the hyper-parameters of a LLaMA-family GGUF.
    pub fn from_gguf(g: &Gguf) -> Result<Config> {
        let arch =
            required(meta_str(g, "general.architecture")?, "general.architecture")?.to_string();
        if arch != "llama" && arch != "mistral" {
            return Err(Error::unsupported(
                "architecture",
                format!("'{arch}' (supported: llama, mistral)"),
            ));
        }
        let k = |name: &str| format!("{arch}.{name}");
        let d_model = required(
            meta_usize(g, &k("embedding_length"))?,
            &k("embedding_length"),
        )?;
        let n_heads = required(
            meta_usize(g, &k("attention.head_count"))?,
            &k("attention.head_count"),
        )?;
        let n_kv_heads = meta_usize(g, &k("attention.head_count_kv"))?.unwrap_or(n_heads);
        if n_heads == 0 {
            return Err(Error::metadata(
                k("attention.head_count"),
                "must be at least 1",
            ));
        }
        let head_dim = meta_usize(g, &k("attention.key_length"))?.unwrap_or(d_model / n_heads);
        if let Some(rope_dim) = meta_usize(g, &k("rope.dimension_count"))? {
            if rope_dim != head_dim {
                return Err(Error::unsupported(
                    "partial rotary embedding",
                    format!(
                        "{} = {rope_dim} but head_dim = {head_dim}",
                        k("rope.dimension_count")
                    ),
                ));
            }
        }
        if let Some(t) = meta_str(g, &k("rope.scaling.type"))? {
            if t != "none" {
                return Err(Error::unsupported(
                    "RoPE scaling",
                    format!("{} = '{t}'", k("rope.scaling.type")),
                ));
            }
        }
        let vocab_size = match meta_usize(g, &k("vocab_size"))? {
            Some(v) => v,
            None => match g.get("tokenizer.ggml.tokens") {
                Some(Value::Array(a)) => a.len(),
                _ => {
                    return Err(Error::metadata(
                        k("vocab_size"),
                        "missing (and no tokenizer.ggml.tokens)",
                    ))
                }
            },
        };
        let config = Config {
            n_layers: required(meta_usize(g, &k("block_count"))?, &k("block_count"))?,
            d_model,
            n_heads,
            n_kv_heads,
            head_dim,
            d_ff: required(
                meta_usize(g, &k("feed_forward_length"))?,
                &k("feed_forward_length"),
            )?,
            vocab_size,
            rms_eps: required(
                meta_f32(g, &k("attention.layer_norm_rms_epsilon"))?,
                &k("attention.layer_norm_rms_epsilon"),
            )?,
            rope_theta: meta_f32(g, &k("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_style: RopeStyle::Interleaved,
            rope_freq_factors: None, // filled from the `rope_freqs.weight` tensor by the loader
            sliding_window: meta_usize(g, &k("attention.sliding_window"))?.filter(|&w| w > 0),
            context_length: meta_usize(g, &k("context_length"))?.unwrap_or(4096),
            architecture: arch,
        };
        Ok(config)
    }
}

fn f32_vector(store: &TensorStore, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = store.expect(name, &[len])?;
    let mut out = vec![0f32; len];
    if t.dtype.row_bytes(len).is_none() {
        return Err(Error::tensor(
            name,
            format!(
                "{} is not a valid type for a vector of {len}",
                t.dtype.name()
            ),
        ));
    }
    dequantize_row(t.dtype, store.data(t), &mut out);
    Ok(out)
}

fn matrix(store: &TensorStore, name: &str, n_in: usize, n_out: usize) -> Result<TensorRef> {
    let t = store.expect(name, &[n_in, n_out])?;
    if !t.dtype.is_weight_type() || t.dtype.row_bytes(n_in).is_none() {
        return Err(Error::tensor(
            name,
            format!(
                "type {} cannot hold rows of {n_in} elements",
                t.dtype.name()
            ),
        ));
    }
    Ok(t.clone())
}

impl Model {
    /// Loads a GGUF file (memory-mapped) or a Hugging Face folder
    /// (`config.json` + safetensors + `tokenizer.json`).
    #[cfg(feature = "std-fs")]
    pub fn load(path: &std::path::Path) -> Result<Model> {
        if path.is_dir() {
            return Model::load_hf_dir(path);
        }
        let storage = Storage::map(path)?;
        Model::from_gguf_storage(storage)
    }

    /// Loads a GGUF model from bytes the caller owns (wasm, tests).
    pub fn from_gguf_bytes(bytes: std::sync::Arc<[u8]>) -> Result<Model> {
        Model::from_gguf_storage(Storage::Bytes(bytes))
    }

    fn from_gguf_storage(storage: Storage) -> Result<Model> {
        let g = Gguf::parse(storage.bytes())?;
        let mut config = Config::from_gguf(&g)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        let chat_template = meta_str(&g, "tokenizer.chat_template")?.map(str::to_string);
        let tensors = g
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        let store = TensorStore {
            shards: vec![storage],
            tensors,
        };
        if store.tensors.contains_key("rope_freqs.weight") {
            config.rope_freq_factors = Some(f32_vector(
                &store,
                "rope_freqs.weight",
                config.head_dim / 2,
            )?);
        }
        drop(g);
        let mut model = Model::assemble(config, tokenizer, chat_template, store)?;
        model.from_gguf = true;
        Ok(model)
    }

    #[cfg(feature = "std-fs")]
    fn load_hf_dir(dir: &std::path::Path) -> Result<Model> {
        let (config, store) = crate::safetensors::load_dir(dir)?;
        let tok_path = dir.join("tokenizer.json");
        let tok_config: Option<serde_json::Value> =
            match std::fs::read(dir.join("tokenizer_config.json")) {
                Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                    Error::format(
                        dir.join("tokenizer_config.json").display().to_string(),
                        e.column() as u64,
                        e.to_string(),
                    )
                })?),
                Err(_) => None,
            };
        let tok_bytes = std::fs::read(&tok_path).map_err(|e| Error::io(&tok_path, e))?;
        let tokenizer = Tokenizer::from_json_bytes(&tok_bytes, tok_config.as_ref())?;
        let chat_template = tok_config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
            .and_then(|t| t.as_str())
            .map(str::to_string);
        Model::assemble(config, tokenizer, chat_template, store)
    }

    /// Checks every tensor against the config and builds the layer table.
    pub fn assemble(
        config: Config,
        tokenizer: Tokenizer,
        chat_template: Option<String>,
        store: TensorStore,
    ) -> Result<Model> {
        // Every interface loads a model first: a `MAIN_ISA` this CPU cannot
        // honour is reported here rather than silently ignored.
        crate::kernels::isa_cap::check()?;
        config.validate()?;
        let c = &config;
        let (d, hd) = (c.d_model, c.head_dim);
        let token_embd = matrix(&store, "token_embd.weight", d, c.vocab_size)?;
        let output = if store.tensors.contains_key("output.weight") {
            matrix(&store, "output.weight", d, c.vocab_size)?
        } else {
            token_embd.clone()
        };
        let output_norm = f32_vector(&store, "output_norm.weight", d)?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: f32_vector(&store, &n("attn_norm"), d)?,
                wq: matrix(&store, &n("attn_q"), d, c.n_heads * hd)?,
                wk: matrix(&store, &n("attn_k"), d, c.n_kv_heads * hd)?,
                wv: matrix(&store, &n("attn_v"), d, c.n_kv_heads * hd)?,
                wo: matrix(&store, &n("attn_output"), c.n_heads * hd, d)?,
                ffn_norm: f32_vector(&store, &n("ffn_norm"), d)?,
                w_gate: matrix(&store, &n("ffn_gate"), d, c.d_ff)?,
                w_up: matrix(&store, &n("ffn_up"), d, c.d_ff)?,
                w_down: matrix(&store, &n("ffn_down"), c.d_ff, d)?,
            });
        }
        if tokenizer.vocab_size() > c.vocab_size {
            return Err(Error::metadata(
                "vocab_size",
                format!(
                    "the tokenizer has {} tokens but the embedding only {}",
                    tokenizer.vocab_size(),
                    c.vocab_size
                ),
            ));
        }
        let rope_inv_freqs = config.rope_inv_freqs();
        let model = Model {
            config,
            tokenizer,
            chat_template,
            from_gguf: false,
            store,
            token_embd,
            output,
            output_norm,
            layers,
            rope_inv_freqs,
        };
        // The chat template is a stranger's code: one that runs past its
        // bounds is refused here, before any data is read.
        let (bos, eos) = model.special_token_texts();
        crate::template::check_bounds(model.chat_template.as_deref(), bos, eos)?;
        Ok(model)
    }

    /// The texts of the tokenizer's BOS and EOS tokens, which chat
    /// templates write as `bos_token` and `eos_token`.
    fn special_token_texts(&self) -> (Option<String>, Option<String>) {
        let tok = &self.tokenizer;
        let text_of = |id: Option<u32>| id.and_then(|id| tok.id_to_token(id));
        (text_of(tok.bos_id()), text_of(tok.eos_id()))
    }

    pub(crate) fn weight(&self, t: &TensorRef) -> Weight<'_> {
        Weight {
            dtype: t.dtype,
            n_out: t.dims[1],
            n_in: t.dims[0],
            data: self.store.data(t),
        }
    }

    /// The output head as a matrix `(vocab, d)`, for the fused log-prob kernel.
    /// The GGUF metadata as stored in the file (None for safetensors), so a
    /// conversion can carry it over.
    pub fn gguf_metadata(&self) -> Result<Option<Vec<(String, Value)>>> {
        if !self.from_gguf {
            return Ok(None);
        }
        Ok(Some(Gguf::parse(self.store.shards[0].bytes())?.metadata))
    }

    pub fn output_weight(&self) -> Weight<'_> {
        self.weight(&self.output)
    }

    /// All tensors with their types and shapes, for `inspect`.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorRef> {
        self.store.tensors.values()
    }

    /// The bytes of one of this model's tensors.
    pub fn tensor_data(&self, t: &TensorRef) -> &[u8] {
        self.store.data(t)
    }

    /// Total bytes of weight data.
    pub fn weight_bytes(&self) -> usize {
        self.store.tensors.values().map(|t| t.n_bytes).sum()
    }

    /// Checks that every id is inside the vocabulary.
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        match tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            Some(t) => Err(Error::invalid_argument(
                "tokens",
                format!(
                    "token id {t} is outside the vocabulary of {}",
                    self.config.vocab_size
                ),
            )),
            None => Ok(()),
        }
    }

    /// Runs `tokens[s]` after what `caches[s]` already holds, for every
    /// sequence `s` at once, appends their keys and values to the caches, and
    /// returns the final-normed hidden states of the new tokens, sequence
    /// after sequence: `(T, d)`.
    ///
    /// Each sequence sees only itself (its own causal mask); sequences of
    /// different lengths share every weight read.
    pub fn forward(
        &self,
        rt: &Runtime,
        caches: &mut [KvCache],
        tokens: &[&[u32]],
    ) -> Result<Vec<f32>> {
        if caches.len() != tokens.len() {
            return Err(Error::invalid_argument(
                "caches",
                "one KV cache per sequence is required",
            ));
        }
        let c = &self.config;
        for (s, (cache, toks)) in caches.iter().zip(tokens).enumerate() {
            self.check_tokens(toks)?;
            if !cache.fits(c) {
                return Err(Error::invalid_argument(
                    "caches",
                    format!("cache {s} was made for another model"),
                ));
            }
            if cache.len + toks.len() > cache.capacity {
                return Err(Error::invalid_argument(
                    "tokens",
                    format!(
                        "sequence {s}: {} cached + {} new tokens exceed the cache capacity {}",
                        cache.len,
                        toks.len(),
                        cache.capacity
                    ),
                ));
            }
        }
        let (d, hd) = (c.d_model, c.head_dim);
        let (q_dim, kv_dim) = (c.n_heads * hd, c.n_kv_heads * hd);
        let n_tok: usize = tokens.iter().map(|t| t.len()).sum();
        let threads = &rt.threads;

        // Sequence of each token and its absolute position.
        let mut positions = Vec::with_capacity(n_tok);
        for (cache, toks) in caches.iter().zip(tokens) {
            positions.extend((0..toks.len()).map(|i| cache.len + i));
        }
        let rope = RopeTable::new(&self.rope_inv_freqs, &positions);

        // (T, d) residual stream, starting from the embeddings.
        let mut x = vec![0f32; n_tok * d];
        let embd = self.weight(&self.token_embd);
        for (row, &tok) in x
            .chunks_exact_mut(d)
            .zip(tokens.iter().flat_map(|t| t.iter()))
        {
            embd.dequantize_row(tok as usize, row);
        }

        let mut xn = vec![0f32; n_tok * d];
        let mut q = vec![0f32; n_tok * q_dim];
        let mut k = vec![0f32; n_tok * kv_dim];
        let mut v = vec![0f32; n_tok * kv_dim];
        let mut attn = vec![0f32; n_tok * q_dim];
        let mut proj = vec![0f32; n_tok * d];
        let mut gate = vec![0f32; n_tok * c.d_ff];
        let mut up = vec![0f32; n_tok * c.d_ff];
        // Each activation is quantized once (for Fast / Int8) and read by
        // every matmul that takes it: q, k and v; gate and up.
        let p = rt.precision;
        let mm = |w: &TensorRef, input: &mut QuantizedInput, out: &mut [f32]| {
            matmul_input(threads, &self.weight(w), input, out)
        };

        for (l, layer) in self.layers.iter().enumerate() {
            // Attention block.
            rms_norm(threads, &x, &layer.attn_norm, c.rms_eps, &mut xn);
            let mut xn_q = QuantizedInput::new(p, &xn, n_tok);
            mm(&layer.wq, &mut xn_q, &mut q);
            mm(&layer.wk, &mut xn_q, &mut k);
            mm(&layer.wv, &mut xn_q, &mut v);
            rope.apply(threads, &mut q, c.n_heads, hd, c.rope_style);
            rope.apply(threads, &mut k, c.n_kv_heads, hd, c.rope_style);
            let mut t0 = 0;
            for (cache, toks) in caches.iter_mut().zip(tokens) {
                cache.store(l, &k[t0 * kv_dim..], &v[t0 * kv_dim..], toks.len());
                t0 += toks.len();
            }
            attention(c, threads, l, caches, tokens, &q, &mut attn);
            mm(
                &layer.wo,
                &mut QuantizedInput::new(p, &attn, n_tok),
                &mut proj,
            );
            add_in_place(threads, &mut x, &proj, d);

            // Feed-forward block (SwiGLU).
            rms_norm(threads, &x, &layer.ffn_norm, c.rms_eps, &mut xn);
            let mut xn_q = QuantizedInput::new(p, &xn, n_tok);
            mm(&layer.w_gate, &mut xn_q, &mut gate);
            mm(&layer.w_up, &mut xn_q, &mut up);
            by_rows(threads, &mut gate, c.d_ff, |r0, g| {
                crate::kernels::activation::silu_mul(g, &up[r0 * c.d_ff..][..g.len()])
            });
            mm(
                &layer.w_down,
                &mut QuantizedInput::new(p, &gate, n_tok),
                &mut proj,
            );
            add_in_place(threads, &mut x, &proj, d);
        }
        for (cache, toks) in caches.iter_mut().zip(tokens) {
            cache.len += toks.len();
        }
        rms_norm(threads, &x, &self.output_norm, c.rms_eps, &mut xn);
        Ok(xn)
    }

    /// A KV cache able to hold `capacity` positions of one sequence.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(&self.config, capacity)
    }
}

/// cos/sin of every (token, dimension pair), computed in f64 once per call.
pub(crate) struct RopeTable {
    /// (T, hd/2)
    pub(crate) cos: Vec<f32>,
    /// (T, hd/2)
    pub(crate) sin: Vec<f32>,
    half: usize,
}

impl RopeTable {
    pub(crate) fn new(inv_freqs: &[f64], positions: &[usize]) -> RopeTable {
        let half = inv_freqs.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in inv_freqs {
                let (s, c) = (p as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        RopeTable { cos, sin, half }
    }

    /// Rotates `x`: `(T, n_heads * hd)` in place, rows spread over the
    /// threads ([`by_rows`]).
    pub(crate) fn apply(
        &self,
        threads: &Threads,
        x: &mut [f32],
        n_heads: usize,
        hd: usize,
        style: RopeStyle,
    ) {
        let half = self.half;
        by_rows(threads, x, n_heads * hd, |t0, rows| {
            let (cos, sin) = (&self.cos[t0 * half..], &self.sin[t0 * half..]);
            kernels::rope::rotate(rows, cos, sin, n_heads, hd, style)
        });
    }
}

/// Causal (optionally sliding-window) grouped-query attention for every
/// sequence and head. `q`: `(T, H*hd)` already rotated; `out`: `(T, H*hd)`.
fn attention(
    c: &Config,
    threads: &Threads,
    layer: usize,
    caches: &[KvCache],
    tokens: &[&[u32]],
    q: &[f32],
    out: &mut [f32],
) {
    let hd = c.head_dim;
    let q_dim = c.n_heads * hd;
    let group = c.n_heads / c.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();

    // One task per (sequence, head); each writes its own `(n_new, hd)` block.
    struct Task<'a> {
        seq: usize,
        head: usize,
        /// First token of the sequence in `q`.
        t0: usize,
        out: &'a mut [f32],
    }
    let mut buf = vec![0f32; out.len()];
    let mut tasks = Vec::with_capacity(tokens.len() * c.n_heads);
    {
        let mut rest: &mut [f32] = &mut buf;
        let mut t0 = 0;
        for (seq, toks) in tokens.iter().enumerate() {
            for head in 0..c.n_heads {
                let (mine, tail) = rest.split_at_mut(toks.len() * hd);
                rest = tail;
                tasks.push(Task {
                    seq,
                    head,
                    t0,
                    out: mine,
                });
            }
            t0 += toks.len();
        }
    }
    threads.for_each_mut(&mut tasks, |_, task| {
        let cache = &caches[task.seq];
        let (keys_t, values) = cache.head(layer, task.head / group);
        let problem = HeadAttention {
            q: &q[task.t0 * q_dim + task.head * hd..],
            q_stride: q_dim,
            n_queries: tokens[task.seq].len(),
            // `cache.len` is not yet advanced: the new tokens sit at `len..`.
            first_pos: cache.len,
            head_dim: hd,
            keys_t,
            capacity: cache.capacity,
            values,
            window: c.sliding_window,
            scale,
        };
        SCORES.with(|s| attend_head(&problem, task.out, &mut s.borrow_mut()));
    });
    // Back from (seq, head, token, hd) to (token, head*hd).
    for task in &tasks {
        let n_new = tokens[task.seq].len();
        for i in 0..n_new {
            let dst = (task.t0 + i) * q_dim + task.head * hd;
            out[dst..dst + hd].copy_from_slice(&task.out[i * hd..(i + 1) * hd]);
        }
    }
}

thread_local! {
    /// Each worker's attention scores, kept between calls.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Elements below which an element-wise layer stays on the calling thread:
/// handing work to the pool costs microseconds, about what one thread takes
/// for this many elements.
const MIN_ELEMENTS_PER_TASK: usize = 1 << 14;

/// Runs `f(first_row, rows)` over `data` (whole rows of `row_len`): on the
/// calling thread for small batches, else in one contiguous group of rows per
/// thread. Every row is computed alike however the rows are grouped, so
/// results never depend on the thread count.
fn by_rows(
    threads: &Threads,
    data: &mut [f32],
    row_len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let n_rows = data.len() / row_len.max(1);
    let n_tasks = (data.len() / MIN_ELEMENTS_PER_TASK)
        .min(threads.n_threads())
        .min(n_rows);
    if n_tasks <= 1 {
        return f(0, data);
    }
    let rows_per_task = n_rows.div_ceil(n_tasks);
    let mut groups: Vec<&mut [f32]> = data.chunks_mut(rows_per_task * row_len).collect();
    threads.for_each_mut(&mut groups, |i, rows| f(i * rows_per_task, rows));
}

/// The residual add `x += y` over rows of `d`, spread over the threads.
fn add_in_place(threads: &Threads, x: &mut [f32], y: &[f32], d: usize) {
    by_rows(threads, x, d, |r0, rows| {
        kernels::residual::add_in_place(rows, &y[r0 * d..][..rows.len()])
    });
}

/// RMSNorm of every row of `x` (`(T, d)`) into `out`, spread over the threads.
fn rms_norm(threads: &Threads, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    by_rows(threads, out, d, |r0, rows| {
        kernels::rms_norm::rms_norm(&x[r0 * d..][..rows.len()], w, eps, rows)
    });
}

/// The template of a model lives with the model, so that `template` needs
/// nothing of `Model` (the two would import each other).
impl ChatTemplate {
    /// The template of `model` (Alpaca when the file has none), with the
    /// texts of its tokenizer's BOS and EOS tokens.
    pub fn for_model(model: &Model) -> Result<ChatTemplate> {
        let (bos, eos) = model.special_token_texts();
        ChatTemplate::new(model.chat_template.as_deref(), bos, eos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row is handed out once, with its own index, on one thread or two.
    #[test]
    fn by_rows_visits_every_row_once_with_its_index() {
        let row_len = 7;
        let n_rows = 3 * MIN_ELEMENTS_PER_TASK / row_len + 5;
        for n_threads in [1, 2] {
            let threads = Threads::new(n_threads);
            for n in [1, 2, n_rows] {
                let mut data = vec![-1f32; n * row_len];
                by_rows(&threads, &mut data, row_len, |r0, rows| {
                    assert_eq!(rows.len() % row_len, 0);
                    for (k, row) in rows.chunks_exact_mut(row_len).enumerate() {
                        for v in row.iter_mut() {
                            assert_eq!(*v, -1.0, "row {} visited twice", r0 + k);
                            *v = (r0 + k) as f32;
                        }
                    }
                });
                for (r, row) in data.chunks_exact(row_len).enumerate() {
                    assert!(
                        row.iter().all(|&v| v == r as f32),
                        "{n_threads} threads, row {r}"
                    );
                }
            }
        }
    }
}
