//! WASM bindings of MAIN (DESIGN.md §5, JS): a thin skin over `main-engine`.
//!
//! - `Model.fromBytes(Uint8Array)` loads a GGUF file held by JS; `ModelLoader`
//!   does the same from chunks (a `File` stream or a `fetch` body), so the
//!   page never holds the whole file next to the model's copy in wasm memory.
//! - `new Scorer(forward, reverse | null, options)`, `scorer.scorePair(...)`,
//!   `scorer.scoreBatch(...)` and `scorer.generate(...)` (the reverse model's
//!   guess of the instruction behind a response).
//! - `parseRecord(line, lineNumber)`: the engine's JSONL pair formats.
//! - `reportData(bytes, paramsJson)`: a file scored by `main-score score`,
//!   summarised by the engine's report builder, and its records for a table
//!   (`dataset.rs`; the annotation tool's data set view).
//! - Threads: the `threads` feature (the build in `pkg-threads/`, with
//!   atomics and shared memory) exports `initThreadPool(n)`, which starts `n`
//!   Web Workers sharing this module's memory as rayon's global pool; the
//!   engine's matmuls and attention then run on all of them. Other builds
//!   score on the calling thread. `hasThreads()` says which build this is.
//!
//! Every fallible call returns `Result<_, JsError>`, so an engine error
//! becomes a JS exception carrying the engine's message. Inputs are validated
//! here before they reach code that could panic (a panic would trap).

use std::mem::MaybeUninit;
use std::sync::Arc;

use js_sys::Uint8Array;
use main_engine::matmul::Precision;
use main_engine::pairs::{self, Format};
use main_engine::sample::{Sampler, SamplerParams};
use main_engine::score::{Combine, Pair, PairScore, TokenScore};
use main_engine::scorer::ScorerParams;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

/// What the skin itself rejects (engine errors pass through unchanged).
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("invalid option '{name}': {reason}")]
    Option { name: &'static str, reason: String },
    #[error("{name}: {reason}")]
    Input { name: &'static str, reason: String },
    #[error("model loader: {0}")]
    Loader(String),
    #[error("{0}")]
    Record(String),
}

fn option_error(name: &'static str, reason: impl Into<String>) -> JsError {
    JsError::from(WasmError::Option {
        name,
        reason: reason.into(),
    })
}

// ---------------------------------------------------------------------------
// TypeScript shapes of the plain objects that cross the boundary
// ---------------------------------------------------------------------------

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Options of `new Scorer(...)`; every field is optional. */
export interface ScorerOptions {
  /** Longest view in tokens (default 1024); longer content is cut and the pair flagged `truncated`. */
  maxTokens?: number;
  /** How `alignment` joins the two directions: "min" (default), "mean" or "softmin". */
  combine?: "min" | "mean" | "softmin";
  /** Other responses of the same batch per pair for `contrastive` in `scoreBatch` (default 0 = off). */
  negatives?: number;
  /**
   * "exact" (the default here: f32 activations against dequantized weights, the fastest under simd128),
   * "fast" (two bytes per activation, ~1e-5 relative of exact; `main-score`'s default on AVX-512 VNNI CPUs) or "int8" (one byte, as llama.cpp).
   */
  precision?: "exact" | "fast" | "int8";
  /** New tokens per forward call (default 2048): bounds activation memory. */
  batchTokens?: number;
  /**
   * Threads to score on: 0 (default) = every thread of the pool `initThreadPool` started,
   * 1 = the calling thread only. Builds without threads always use 1.
   */
  threads?: number;
}

export interface ScoreOptions {
  /** Per-token detail of both directions (default false). */
  tokens?: boolean;
}

export interface PairInput {
  instruction: string;
  response: string;
}

/** One scored target token; log-probs in nats. */
export interface TokenScore {
  id: number;
  text: string;
  cond: number;
  uncond: number;
  /** cond - uncond */
  pmi: number;
}

/** DESIGN.md §3, all log-probs in nats (means over target tokens). */
export interface PairScore {
  alignment: number;
  fwdPmi: number;
  revPmi: number;
  fwdCond: number;
  fwdUncond: number;
  revCond: number;
  revUncond: number;
  ifd: number;
  rifd: number;
  semantic: number;
  structural: number;
  intentional: number;
  /** Sum over the response's tokens of cond - uncond: the pair's PMI in nats. */
  fwdPmiTotal: number;
  /** The same sum over the instruction's tokens (reverse views). */
  revPmiTotal: number;
  /** Only with `negatives > 0` in `scoreBatch`. */
  contrastive?: number;
  responseTokens: number;
  instructionTokens: number;
  truncated: boolean;
  /** Response tokens (forward direction), with `{ tokens: true }`. */
  responseDetail?: TokenScore[];
  /** Instruction tokens (reverse direction), with `{ tokens: true }`. */
  instructionDetail?: TokenScore[];
}

export interface GenerateOptions {
  /** Most new tokens (default 64, at most 1024). */
  maxNewTokens?: number;
  /** 0 = greedy (default). */
  temperature?: number;
  /** Nucleus sampling mass in (0, 1] (default 1). */
  topP?: number;
  /** Seed of the sampler (default 0x5eed). */
  seed?: number;
}
"#;

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

/// A loaded model (immutable). One model may serve several scorers.
#[wasm_bindgen]
pub struct Model {
    inner: Arc<main_engine::model::Model>,
    n_bytes: usize,
}

#[wasm_bindgen]
impl Model {
    /// Loads a GGUF file from its bytes. The bytes are copied once into wasm
    /// memory; the caller may drop its array afterwards.
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(bytes: &Uint8Array) -> Result<Model, JsError> {
        let mut loader = ModelLoader::new(bytes.length() as f64)?;
        loader.write(bytes)?;
        loader.finish()
    }

    /// Another handle to the same model (no copy of the weights): a
    /// `Scorer` takes its `reverse` model over, so pass `model.share()` to
    /// keep using your own handle.
    pub fn share(&self) -> Model {
        Model {
            inner: self.inner.clone(),
            n_bytes: self.n_bytes,
        }
    }

    /// The token ids of the four views a `Scorer` computes for this pair
    /// (fwdCond, fwdUncond, revCond, revUncond; DESIGN.md §2), each as
    /// `{ ids, nPrompt }` where the targets are `ids.slice(nPrompt)`: what
    /// another engine must score to compute the same numbers (the browser
    /// benchmark feeds them to its peers).
    #[wasm_bindgen(js_name = viewTokens, unchecked_return_type = "{ ids: number[]; nPrompt: number }[]")]
    pub fn view_tokens(
        &self,
        instruction: &str,
        response: &str,
        max_tokens: f64,
    ) -> Result<JsValue, JsError> {
        let context = self.inner.config.context_length as f64;
        let max_tokens = whole(max_tokens, "maxTokens", 8.0, context)?;
        let template = main_engine::template::ChatTemplate::for_model(&self.inner)?;
        let side = (&self.inner.tokenizer, &template);
        let views = main_engine::views::pair_views(
            side,
            side,
            &Pair::new(instruction, response),
            max_tokens,
        )?;
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct View {
            ids: Vec<u32>,
            n_prompt: usize,
        }
        let out: Vec<View> = views
            .into_iter()
            .map(|v| View {
                ids: v.ids,
                n_prompt: v.n_prompt,
            })
            .collect();
        to_js(&out)
    }

    /// Size of the model file in bytes.
    #[wasm_bindgen(getter, js_name = fileBytes)]
    pub fn file_bytes(&self) -> f64 {
        self.n_bytes as f64
    }

    /// A one-line summary: architecture sizes and vocabulary.
    #[wasm_bindgen(getter)]
    pub fn description(&self) -> String {
        let c = &self.inner.config;
        format!(
            "{} layers, d_model {}, {} heads ({} kv), vocab {}, {:.1} MB",
            c.n_layers,
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            self.inner.tokenizer.vocab_size(),
            self.n_bytes as f64 / 1e6
        )
    }
}

/// Builds a [`Model`] from chunks written in order, straight into the one
/// buffer the model keeps: loading costs the file's size in wasm memory and
/// one chunk in JS, never two whole copies.
#[wasm_bindgen]
pub struct ModelLoader {
    buf: Arc<[MaybeUninit<u8>]>,
    written: usize,
}

#[wasm_bindgen]
impl ModelLoader {
    /// `size`: the file's length in bytes (from `File.size` or Content-Length).
    #[wasm_bindgen(constructor)]
    pub fn new(size: f64) -> Result<ModelLoader, JsError> {
        // wasm32 has 4 GiB of address space; a model must also leave room for activations.
        const MAX: f64 = 3.5 * (1u64 << 30) as f64;
        if !(size.is_finite() && size >= 1.0 && size.fract() == 0.0 && size <= MAX) {
            return Err(JsError::from(WasmError::Loader(format!(
                "model size {size} bytes is not a whole number between 1 and {MAX}"
            ))));
        }
        let n = size as usize;
        let mut buf: Vec<u8> = Vec::new();
        buf.try_reserve_exact(n).map_err(|_| {
            JsError::from(WasmError::Loader(format!(
                "cannot allocate {n} bytes for the model (out of wasm memory)"
            )))
        })?;
        drop(buf);
        Ok(ModelLoader {
            buf: Arc::new_uninit_slice(n),
            written: 0,
        })
    }

    /// Appends the next chunk of the file.
    pub fn write(&mut self, chunk: &Uint8Array) -> Result<(), JsError> {
        let n = chunk.length() as usize;
        let total = self.buf.len();
        if self.written + n > total {
            return Err(JsError::from(WasmError::Loader(format!(
                "chunk of {n} bytes at offset {} overruns the announced size {total}",
                self.written
            ))));
        }
        let buf = Arc::get_mut(&mut self.buf).ok_or_else(|| {
            JsError::from(WasmError::Loader("the loader was already finished".into()))
        })?;
        chunk.copy_to_uninit(&mut buf[self.written..self.written + n]);
        self.written += n;
        Ok(())
    }

    /// Bytes written so far.
    #[wasm_bindgen(getter)]
    pub fn written(&self) -> f64 {
        self.written as f64
    }

    /// Parses the GGUF file and returns the model.
    pub fn finish(self) -> Result<Model, JsError> {
        let total = self.buf.len();
        if self.written != total {
            return Err(JsError::from(WasmError::Loader(format!(
                "only {} of {total} bytes were written",
                self.written
            ))));
        }
        // SAFETY: `write` copied exactly `total` bytes, in order and without
        // gaps, into `buf[0..total]`, so every byte is initialised.
        let bytes: Arc<[u8]> = unsafe { self.buf.assume_init() };
        let inner = main_engine::model::Model::from_gguf_bytes(bytes)?;
        Ok(Model {
            inner: Arc::new(inner),
            n_bytes: total,
        })
    }
}

// ---------------------------------------------------------------------------
// Scorer
// ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ScorerOptions {
    max_tokens: Option<f64>,
    combine: Option<String>,
    negatives: Option<f64>,
    precision: Option<String>,
    batch_tokens: Option<f64>,
    threads: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ScoreOptions {
    tokens: Option<bool>,
}

#[derive(Deserialize)]
struct PairInput {
    instruction: String,
    response: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerateOptions {
    max_new_tokens: Option<f64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<f64>,
}

/// DESIGN.md §3 in camelCase: the JS face of the engine's `PairScore`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsPairScore {
    alignment: f64,
    fwd_pmi: f64,
    rev_pmi: f64,
    fwd_cond: f64,
    fwd_uncond: f64,
    rev_cond: f64,
    rev_uncond: f64,
    ifd: f64,
    rifd: f64,
    semantic: f64,
    structural: f64,
    intentional: f64,
    fwd_pmi_total: f64,
    rev_pmi_total: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    contrastive: Option<f64>,
    response_tokens: u32,
    instruction_tokens: u32,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_detail: Option<Vec<TokenScore>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instruction_detail: Option<Vec<TokenScore>>,
}

impl JsPairScore {
    fn new(s: PairScore, tokens: bool) -> JsPairScore {
        JsPairScore {
            alignment: s.alignment,
            fwd_pmi: s.fwd_pmi,
            rev_pmi: s.rev_pmi,
            fwd_cond: s.fwd_cond,
            fwd_uncond: s.fwd_uncond,
            rev_cond: s.rev_cond,
            rev_uncond: s.rev_uncond,
            ifd: s.ifd,
            rifd: s.rifd,
            semantic: s.semantic,
            structural: s.structural,
            intentional: s.intentional,
            fwd_pmi_total: s.fwd_pmi_total,
            rev_pmi_total: s.rev_pmi_total,
            contrastive: s.contrastive,
            response_tokens: s.response_tokens,
            instruction_tokens: s.instruction_tokens,
            truncated: s.truncated,
            response_detail: s.response_detail.filter(|_| tokens),
            instruction_detail: s.instruction_detail.filter(|_| tokens),
        }
    }
}

/// Reads optional options: `undefined` and `null` mean all defaults.
fn read_options<T: for<'de> Deserialize<'de> + Default>(
    value: JsValue,
    what: &'static str,
    known: &[&str],
) -> Result<T, JsError> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    // serde-wasm-bindgen reads only the fields it knows, so a misspelt
    // option would pass silently: reject unknown keys here.
    if value.is_object() {
        for key in js_sys::Object::keys(value.unchecked_ref::<js_sys::Object>()).iter() {
            let key = key.as_string().unwrap_or_default();
            if !known.contains(&key.as_str()) {
                return Err(option_error(
                    what,
                    format!("unknown field '{key}', expected one of {known:?}"),
                ));
            }
        }
    }
    serde_wasm_bindgen::from_value(value).map_err(|e| option_error(what, e.to_string()))
}

/// A whole number in `[lo, hi]`.
fn whole(value: f64, name: &'static str, lo: f64, hi: f64) -> Result<usize, JsError> {
    if value.is_finite() && value.fract() == 0.0 && (lo..=hi).contains(&value) {
        Ok(value as usize)
    } else {
        Err(option_error(
            name,
            format!("{value} is not a whole number in [{lo}, {hi}]"),
        ))
    }
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    // Plain objects and arrays (no Maps), as JSON.parse would make them.
    let s = serde_wasm_bindgen::Serializer::json_compatible();
    value
        .serialize(&s)
        .map_err(|e| JsError::new(&format!("cannot convert the result to JS: {e}")))
}

/// Scores pairs with a forward model and, optionally, a separate reverse
/// model (zero-shot when `reverse` is null: the forward model serves both).
/// Runs on the calling thread: put it in a Web Worker in a page. The scorer
/// takes `reverse` over (its JS handle is emptied); `forward` stays usable.
#[wasm_bindgen]
pub struct Scorer {
    inner: main_engine::scorer::Scorer,
    /// The model that writes `generate`'s guesses (the reverse one, or the forward one).
    guesser: Arc<main_engine::model::Model>,
    threads: usize,
}

#[wasm_bindgen]
impl Scorer {
    #[wasm_bindgen(constructor)]
    pub fn new(
        forward: &Model,
        reverse: Option<Model>,
        #[wasm_bindgen(unchecked_param_type = "ScorerOptions | undefined")] options: JsValue,
    ) -> Result<Scorer, JsError> {
        let o: ScorerOptions = read_options(
            options,
            "options",
            &[
                "maxTokens",
                "combine",
                "negatives",
                "precision",
                "batchTokens",
                "threads",
            ],
        )?;
        let defaults = ScorerParams::default();
        // Bounds that keep the KV cache and activations inside wasm's 4 GiB:
        // an allocation failure would abort (a trap), not raise.
        let context = forward.inner.config.context_length as f64;
        let params = ScorerParams {
            // At most the page's pool (the engine caps it); the build without
            // threads runs on the calling thread whatever this says.
            n_threads: match o.threads {
                Some(v) => whole(v, "threads", 0.0, 1024.0)?,
                None => 0,
            },
            max_tokens: match o.max_tokens {
                Some(v) => whole(v, "maxTokens", 8.0, context)?,
                None => defaults.max_tokens,
            },
            combine: match o.combine.as_deref() {
                Some(c) => Combine::parse(c)?,
                None => defaults.combine,
            },
            negatives: match o.negatives {
                Some(v) => whole(v, "negatives", 0.0, 1024.0)?,
                None => 0,
            },
            // Always computed (the pieces cost little next to the forward
            // pass); `scorePair` drops them unless asked, so one scorer, and
            // one precomputed prefix, serves both kinds of call.
            tokens: true,
            precision: match o.precision.as_deref() {
                // The engine's default on wasm32 too (simd128 has no byte
                // dot product, so f32 is the faster arithmetic); fixed here
                // so the browser's numbers never depend on that choice.
                None => Precision::Exact,
                Some(p) => Precision::parse(p).ok_or_else(|| {
                    option_error(
                        "precision",
                        format!("'{p}' is not one of exact, fast, int8"),
                    )
                })?,
            },
            batch_tokens: match o.batch_tokens {
                Some(v) => whole(v, "batchTokens", 1.0, 8192.0)?,
                None => defaults.batch_tokens,
            },
            device: main_engine::Device::Cpu,
        };
        let reverse = reverse.map(|m| m.inner);
        let guesser = reverse.clone().unwrap_or_else(|| forward.inner.clone());
        let threads = main_engine::threads::Threads::new(params.n_threads).n_threads();
        let inner = main_engine::scorer::Scorer::new(forward.inner.clone(), reverse, params)?;
        Ok(Scorer {
            inner,
            guesser,
            threads,
        })
    }

    /// The threads this scorer computes on (1 without a thread pool).
    #[wasm_bindgen(getter)]
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Scores one pair: DESIGN.md §3's fields in camelCase, plus per-token
    /// detail with `{ tokens: true }`.
    #[wasm_bindgen(js_name = scorePair, unchecked_return_type = "PairScore")]
    pub fn score_pair(
        &mut self,
        instruction: &str,
        response: &str,
        #[wasm_bindgen(unchecked_param_type = "ScoreOptions | undefined")] options: JsValue,
    ) -> Result<JsValue, JsError> {
        let o: ScoreOptions = read_options(options, "options", &["tokens"])?;
        let s = self.inner.score_pair(&Pair::new(instruction, response))?;
        to_js(&JsPairScore::new(s, o.tokens.unwrap_or(false)))
    }

    /// Scores many pairs in fused batches (faster per pair than one by one,
    /// and needed for `contrastive`).
    #[wasm_bindgen(js_name = scoreBatch, unchecked_return_type = "PairScore[]")]
    pub fn score_batch(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "PairInput[]")] pairs: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ScoreOptions | undefined")] options: JsValue,
    ) -> Result<JsValue, JsError> {
        let o: ScoreOptions = read_options(options, "options", &["tokens"])?;
        if !js_sys::Array::is_array(&pairs) {
            return Err(option_error(
                "pairs",
                "expected an array of {instruction, response}",
            ));
        }
        let inputs: Vec<PairInput> = serde_wasm_bindgen::from_value(pairs).map_err(|e| {
            option_error(
                "pairs",
                format!("expected an array of {{instruction, response}} strings: {e}"),
            )
        })?;
        let batch: Vec<Pair> = inputs
            .into_iter()
            .map(|p| Pair::new(p.instruction, p.response))
            .collect();
        let tokens = o.tokens.unwrap_or(false);
        let scores: Vec<JsPairScore> = self
            .inner
            .score_batch(&batch)?
            .into_iter()
            .map(|s| JsPairScore::new(s, tokens))
            .collect();
        to_js(&scores)
    }

    /// The reverse model's guess of the instruction that `response` answers.
    pub fn generate(
        &mut self,
        response: &str,
        #[wasm_bindgen(unchecked_param_type = "GenerateOptions | undefined")] options: JsValue,
    ) -> Result<String, JsError> {
        let o: GenerateOptions = read_options(
            options,
            "options",
            &["maxNewTokens", "temperature", "topP", "seed"],
        )?;
        let defaults = SamplerParams::default();
        let max_new = match o.max_new_tokens {
            Some(v) => whole(v, "maxNewTokens", 1.0, 1024.0)?,
            None => 64,
        };
        let seed = match o.seed {
            // Integers beyond 2^53 are not exact in JS.
            Some(v) => whole(v, "seed", 0.0, 9_007_199_254_740_991.0)? as u64,
            None => defaults.seed,
        };
        // The guess prefills the whole response: bound it as scoring does.
        let max_tokens = self.inner.params().max_tokens;
        let n = self.guesser.tokenizer.encode(response, false, false)?.len();
        if n > max_tokens {
            return Err(JsError::from(WasmError::Input {
                name: "response",
                reason: format!("{n} tokens is longer than maxTokens {max_tokens}"),
            }));
        }
        let mut sampler = Sampler::new(SamplerParams {
            temperature: o.temperature.map_or(defaults.temperature, |t| t as f32),
            top_p: o.top_p.map_or(defaults.top_p, |p| p as f32),
            seed,
        })?;
        Ok(self
            .inner
            .guess_instruction(response, max_new, &mut sampler)?)
    }
}

// ---------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------

/// Starts `n` Web Workers that share this module's memory as the engine's
/// thread pool (once per module instance; the page must be cross-origin
/// isolated for shared memory). Only in the threaded build.
#[cfg(all(feature = "threads", target_arch = "wasm32"))]
pub use wasm_bindgen_rayon::init_thread_pool;

/// Whether this is the threaded build (the one with `initThreadPool`).
/// Start the pool before creating a `Scorer`: a scorer made first fixes
/// rayon's global pool at one thread.
#[wasm_bindgen(js_name = hasThreads)]
pub fn has_threads() -> bool {
    cfg!(all(feature = "threads", target_arch = "wasm32"))
}

// ---------------------------------------------------------------------------
// Input records
// ---------------------------------------------------------------------------

/// The pair in one JSONL record (Alpaca, prompt/response or chat
/// `messages`, detected from its keys). `lineNumber` (1-based) goes into
/// the error message.
#[wasm_bindgen(js_name = parseRecord, unchecked_return_type = "PairInput")]
pub fn parse_record(line: &str, line_number: u32) -> Result<JsValue, JsError> {
    let (_, pair) = pairs::parse_line(line, line_number as usize, &Format::Auto)
        .map_err(|e| JsError::from(WasmError::Record(e.to_string())))?;
    #[derive(Serialize)]
    struct Out {
        instruction: String,
        response: String,
    }
    to_js(&Out {
        instruction: pair.instruction,
        response: pair.response,
    })
}

// ---------------------------------------------------------------------------
// A scored data set
// ---------------------------------------------------------------------------

mod dataset;
pub use dataset::report_data;
