//! libmain, the C ABI of MAIN: a thin skin over `main-engine` that translates
//! types and errors and holds no logic of its own (DESIGN.md sections 1 and 5).
//!
//! `include/main.h` is generated from this crate by cbindgen
//! (`ffi/cbindgen.toml`); `tests/header.rs` fails when the committed header
//! is stale. The rules every entry point follows:
//! - it runs inside [`error::guard`]: engine errors become a `main_status`
//!   and a message for `main_last_error()`, panics become
//!   `MAIN_ERR_INTERNAL` and never unwind into C;
//! - it checks every pointer for NULL and every string for UTF-8 before use,
//!   naming the argument in the message;
//! - memory the library hands out is freed only by the matching `main_*_free`.

#![allow(non_camel_case_types)]

mod args;
mod error;
mod job;
mod owned;

use std::ffi::{c_char, c_int};
use std::sync::Arc;

use main_engine::logprob::{perplexity, sequence_logprobs};
use main_engine::model::{Model, Runtime};
use main_engine::score::Pair;
use main_engine::scorer::{Scorer, ScorerParams};
use main_engine::Device;

use args::{
    c_score, combine_value, engine_params, mut_arg, null, precision_arg, precision_value, ref_arg,
    str_arg,
};
pub use error::main_status;
use error::{guard, guard_void};
pub use job::{
    main_job_default_params, main_job_event, main_job_event_kind, main_job_params,
    main_job_progress, main_job_report, main_score_jsonl,
};
use owned::{c_tokens, free_text, free_tokens, leak_slice, leak_text, take_slice};

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

/// A loaded model: configuration, weights (memory-mapped for GGUF), tokenizer
/// and chat template. Immutable: any number of threads may use one model at
/// the same time (each through its own scorer).
pub struct main_model {
    model: Arc<Model>,
}

/// Scores pairs with a forward model and an optional reverse model. Owns its
/// worker threads and scratch memory: use a scorer from one thread at a time
/// (one scorer per thread). It keeps its own reference to its models, so the
/// models may be freed before the scorer.
pub struct main_scorer {
    scorer: Scorer,
}

/// How `alignment` combines the two directions (a value for
/// `main_scorer_params.combine`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum main_combine {
    /// `min(fwd_pmi, rev_pmi)`: a pair is as aligned as its weaker direction (default).
    MAIN_COMBINE_MIN = 0,
    /// `(fwd_pmi + rev_pmi) / 2`.
    MAIN_COMBINE_MEAN = 1,
    /// `-ln(exp(-fwd_pmi) + exp(-rev_pmi)) + ln 2`: a smooth minimum.
    MAIN_COMBINE_SOFTMIN = 2,
}

/// Arithmetic of the matrix products (a value for `precision` fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum main_precision {
    /// f32 activations against dequantized weights.
    MAIN_PRECISION_EXACT = 0,
    /// Integer dot products with activations in two 8-bit passes: within
    /// about 1e-5 relative of EXACT.
    MAIN_PRECISION_FAST = 1,
    /// One 8-bit pass, llama.cpp's scheme: fastest, about 0.06 nats from EXACT.
    MAIN_PRECISION_INT8 = 2,
    /// GPU only: bf16 matrix products with f32 accumulation, the GPU default.
    MAIN_PRECISION_BF16 = 3,
}

/// Where a scorer runs its forward passes (a value for `device` fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum main_device {
    /// The CPU's SIMD kernels (default).
    MAIN_DEVICE_CPU = 0,
    /// The NVIDIA GPU numbered `gpu` (a libmain built with the `cuda`
    /// feature); it runs `MAIN_PRECISION_BF16` or `MAIN_PRECISION_EXACT`.
    MAIN_DEVICE_CUDA = 1,
}

/// Settings of a scorer. Start from `main_scorer_default_params()` and change
/// the fields you need, so code keeps compiling when fields are added.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct main_scorer_params {
    /// Worker threads of this scorer; 0 = one per core. With several scorers
    /// in several threads, give each a share of the cores (for example 1).
    pub n_threads: u32,
    /// Longest view in tokens (default 1024, at least 8); longer content is
    /// cut at its end and the pair flagged `truncated`.
    pub max_tokens: u32,
    /// Other responses of the same batch per pair for `contrastive` (default
    /// 0 = off). With K > 0 pair i is contrasted with the responses of pairs
    /// i+1 ..= i+K (cyclically) of the same `main_score_batch` call, which
    /// must then hold at least K + 1 pairs.
    pub negatives: u32,
    /// A `main_combine` value (default `MAIN_COMBINE_MIN`).
    pub combine: u32,
    /// A `main_precision` value (default: the engine's, see
    /// `main_scorer_default_params`).
    pub precision: u32,
    /// New tokens per forward pass (default 2048, at least 1): bounds the
    /// activation memory; larger batches read each weight once for more tokens.
    pub batch_tokens: u32,
    /// A `main_device` value (default `MAIN_DEVICE_CPU`). With
    /// `MAIN_DEVICE_CUDA` set `precision` too: `MAIN_PRECISION_BF16` (the
    /// GPU's default) or `MAIN_PRECISION_EXACT`; CPU precisions are refused.
    pub device: u32,
    /// The GPU's number when `device` is `MAIN_DEVICE_CUDA` (default 0).
    pub gpu: u32,
}

/// The scores of one pair (DESIGN.md section 3). Log-probs are in nats, means over
/// the target tokens of a view.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct main_pair_score {
    /// Combination of `fwd_pmi` and `rev_pmi` (`params.combine`; min by default).
    pub alignment: f64,
    /// `fwd_cond - fwd_uncond`.
    pub fwd_pmi: f64,
    /// `rev_cond - rev_uncond`.
    pub rev_pmi: f64,
    /// Mean log p(response | instruction).
    pub fwd_cond: f64,
    /// Mean log p(response | empty prompt).
    pub fwd_uncond: f64,
    /// Mean log p(instruction | response), reverse model.
    pub rev_cond: f64,
    /// Mean log p(instruction | empty prompt), reverse model.
    pub rev_uncond: f64,
    /// `exp(-fwd_pmi)`: PPL(y|x) / PPL(y), Cherry-LLM's IFD.
    pub ifd: f64,
    /// `exp(-rev_pmi)`: the reverse IFD.
    pub rifd: f64,
    /// Mean (cond - uncond) over the response's content tokens.
    pub semantic: f64,
    /// Mean (cond - uncond) over the response's structure tokens (0 when none).
    pub structural: f64,
    /// `rev_pmi`.
    pub intentional: f64,
    /// InfoNCE estimate with `params.negatives` negatives; NaN when negatives = 0.
    pub contrastive: f64,
    /// Target tokens of the instruction (reverse views).
    pub instruction_tokens: u32,
    /// Target tokens of the response (forward views).
    pub response_tokens: u32,
    /// 1 when a view was cut to `max_tokens`, else 0.
    pub truncated: u32,
    /// Sum over the response's tokens of (cond - uncond): the pair's PMI
    /// log p(y|x) - log p(y) in nats (`fwd_pmi` is its per-token mean). After
    /// the fields above, so their offsets stay as they were.
    pub fwd_pmi_total: f64,
    /// The same sum over the instruction's tokens in the reverse views.
    pub rev_pmi_total: f64,
}

/// One scored target token of a pair.
#[repr(C)]
#[derive(Debug)]
pub struct main_token_score {
    /// Token id in the model's vocabulary.
    pub id: u32,
    /// The token's text, NUL-terminated, UTF-8 (bytes of a character split
    /// across tokens are shown as U+FFFD). Owned by the enclosing detail.
    pub text: *const c_char,
    /// Bytes in `text`, without the terminating NUL.
    pub text_len: usize,
    /// log p(token | prompt with the content), nats.
    pub cond: f64,
    /// log p(token | prompt with empty content), nats.
    pub uncond: f64,
    /// `cond - uncond`.
    pub pmi: f64,
}

/// Per-token detail of one pair, allocated by `main_score_pair_detail` and
/// freed, with everything it points to, by `main_pair_detail_free`. The
/// target tokens end with the template's end-of-turn marker.
#[repr(C)]
#[derive(Debug)]
pub struct main_pair_detail {
    /// The response's tokens, forward direction (`n_response` entries).
    pub response: *const main_token_score,
    pub n_response: usize,
    /// The instruction's tokens, reverse direction (`n_instruction` entries).
    pub instruction: *const main_token_score,
    pub n_instruction: usize,
}

/// One token of a plain text.
#[repr(C)]
#[derive(Debug)]
pub struct main_text_token {
    /// Token id in the model's vocabulary.
    pub id: u32,
    /// The token's exact bytes, NUL-terminated. A byte-level token may hold
    /// part of a UTF-8 character, and a byte token may be a NUL byte itself:
    /// use `text_len`. Owned by the enclosing `main_text_logprobs`.
    pub text: *const c_char,
    /// Bytes in `text`, without the terminating NUL.
    pub text_len: usize,
    /// log p(token | all tokens before it), nats; NaN for the first token,
    /// which has no context.
    pub logprob: f64,
}

/// Log-probs of a plain text, allocated by `main_text_logprobs_new` and
/// freed, with everything it points to, by `main_text_logprobs_free`.
#[repr(C)]
#[derive(Debug)]
pub struct main_text_logprobs {
    /// `n_tokens` tokens: the text as the model tokenizes it, with its BOS
    /// token first when the model adds one.
    pub tokens: *const main_text_token,
    pub n_tokens: usize,
    /// exp of the mean negative log-prob over tokens 1 .. n_tokens-1; NaN
    /// when there are fewer than two tokens.
    pub perplexity: f64,
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// The library's version, "MAJOR.MINOR.PATCH". A static string: never free it.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn main_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on the calling thread, or "" when the
/// thread's last fallible call succeeded (every call that returns
/// `main_status` clears it first). Never NULL. Owned by the library and
/// valid until the calling thread's next libmain call; copy it to keep it.
/// Each thread has its own message.
#[no_mangle]
pub extern "C" fn main_last_error() -> *const c_char {
    error::last_error_ptr()
}

/// The name of a status code ("MAIN_OK", "MAIN_ERR_IO", ...), or
/// "unknown main_status". A static string: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn main_status_name(status: c_int) -> *const c_char {
    error::status_name(status).as_ptr()
}

/// Loads a model: a GGUF file (memory-mapped) or a Hugging Face folder
/// (config.json + *.safetensors + tokenizer.json [+ tokenizer_config.json]).
///
/// `path`: UTF-8, NUL-terminated; not retained. On success `*out` is a new
/// model the caller owns and frees with `main_model_free`; on failure `*out`
/// is set to NULL (when `out` is not NULL). Thread-safe.
///
/// Returns `MAIN_OK`; `MAIN_ERR_INVALID_ARGUMENT` (`path` or `out` NULL,
/// `path` not UTF-8); `MAIN_ERR_IO` (cannot open or read);
/// `MAIN_ERR_FORMAT` (malformed file, metadata, tensors, tokenizer or
/// template); `MAIN_ERR_UNSUPPORTED` (architecture or tensor type);
/// `MAIN_ERR_OUT_OF_MEMORY`; `MAIN_ERR_INTERNAL`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn main_model_load(
    path: *const c_char,
    out: *mut *mut main_model,
) -> main_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: the caller promises a NUL-terminated string.
        let path = unsafe { str_arg(path, "path") }?;
        let model = Model::load(path.as_ref())?;
        let model = Box::new(main_model {
            model: Arc::new(model),
        });
        // SAFETY: as above.
        unsafe { *out = Box::into_raw(model) };
        Ok(())
    })
}

/// Frees a model. NULL is a no-op. Scorers made from the model keep their
/// own reference and stay valid. The caller must not use `model` again, and
/// no other thread may be using it through this handle.
///
/// # Safety
/// `model` is NULL or a model from `main_model_load`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn main_model_free(model: *mut main_model) {
    guard_void(|| {
        if !model.is_null() {
            // SAFETY: the caller hands back a pointer main_model_load leaked.
            drop(unsafe { Box::from_raw(model) });
        }
    })
}

/// Size of the model's vocabulary (valid token ids are 0 .. n_vocab-1), or
/// 0 when `model` is NULL. Thread-safe.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn main_model_n_vocab(model: *const main_model) -> u32 {
    // SAFETY: the caller promises NULL or a live model.
    match unsafe { model.as_ref() } {
        Some(m) => m.model.config.vocab_size as u32,
        None => 0,
    }
}

/// The default scorer settings, the engine's own: n_threads 0 (all cores),
/// max_tokens 1024, negatives 0, combine MIN, batch_tokens 2048, device CPU,
/// and the precision the engine finds best for the CPU (read `precision`
/// from the result; a GPU needs `MAIN_PRECISION_BF16` or `_EXACT`).
/// Thread-safe.
#[no_mangle]
pub extern "C" fn main_scorer_default_params() -> main_scorer_params {
    let d = ScorerParams::default();
    main_scorer_params {
        n_threads: d.n_threads as u32,
        max_tokens: d.max_tokens as u32,
        negatives: d.negatives as u32,
        combine: combine_value(d.combine),
        precision: precision_value(d.precision),
        batch_tokens: d.batch_tokens as u32,
        device: main_device::MAIN_DEVICE_CPU as u32,
        gpu: 0,
    }
}

/// Makes a scorer: starts its worker threads and runs each model once on its
/// unconditional prompt (shared by every later view).
///
/// `forward`: the forward model (required). `reverse`: a trained reverse
/// model, or NULL for zero-shot (the forward model serves both directions).
/// `params`: NULL for the defaults; read, not retained. The scorer keeps its
/// own reference to the models; free them whenever you like. On success
/// `*out` is a new scorer the caller owns and frees with `main_scorer_free`;
/// on failure `*out` is set to NULL (when `out` is not NULL). Thread-safe;
/// the models may be in use by other threads' scorers meanwhile.
///
/// Returns `MAIN_OK`; `MAIN_ERR_INVALID_ARGUMENT` (`forward` or `out` NULL,
/// `max_tokens` < 8, `batch_tokens` 0, unknown `combine` or `precision`);
/// `MAIN_ERR_FORMAT` (the model's chat template fails to render);
/// `MAIN_ERR_INTERNAL`.
///
/// # Safety
/// Every pointer is NULL or points to a live object of its type.
#[no_mangle]
pub unsafe extern "C" fn main_scorer_new(
    forward: *const main_model,
    reverse: *const main_model,
    params: *const main_scorer_params,
    out: *mut *mut main_scorer,
) -> main_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: the caller promises NULL or live objects.
        let forward = unsafe { ref_arg(forward, "forward") }?;
        // SAFETY: as above.
        let reverse = unsafe { reverse.as_ref() };
        // SAFETY: as above.
        let params = match unsafe { params.as_ref() } {
            Some(p) => *p,
            None => main_scorer_default_params(),
        };
        let scorer = Scorer::new(
            forward.model.clone(),
            reverse.map(|m| m.model.clone()),
            engine_params(&params)?,
        )?;
        // SAFETY: as above.
        unsafe { *out = Box::into_raw(Box::new(main_scorer { scorer })) };
        Ok(())
    })
}

/// Frees a scorer and stops its threads. NULL is a no-op. No thread may be
/// using the scorer; the caller must not use it again.
///
/// # Safety
/// `scorer` is NULL or a scorer from `main_scorer_new`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn main_scorer_free(scorer: *mut main_scorer) {
    guard_void(|| {
        if !scorer.is_null() {
            // SAFETY: the caller hands back a pointer main_scorer_new leaked.
            drop(unsafe { Box::from_raw(scorer) });
        }
    })
}

/// Scores one pair. `instruction` is the whole instruction (for Alpaca data:
/// `instruction`, plus "\n\n" and `input` when `input` is not empty);
/// `response` the response. Both UTF-8, NUL-terminated, not retained.
/// On success writes `*out`; on failure `*out` is left unchanged. Uses
/// `scorer` from one thread at a time. A pair cannot have negatives: with
/// `params.negatives` > 0 use `main_score_batch`.
///
/// Returns `MAIN_OK`; `MAIN_ERR_INVALID_ARGUMENT` (a NULL pointer, text not
/// UTF-8, `negatives` > 0, a text the template rejects); `MAIN_ERR_INTERNAL`.
///
/// # Safety
/// Every pointer is NULL or points to a live object of its type; `scorer` is
/// not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn main_score_pair(
    scorer: *mut main_scorer,
    instruction: *const c_char,
    response: *const c_char,
    out: *mut main_pair_score,
) -> main_status {
    guard(|| {
        // SAFETY: the caller promises NULL or live objects, and exclusive use of the scorer.
        let scorer = unsafe { mut_arg(scorer, "scorer") }?;
        // SAFETY: as above.
        let out = unsafe { mut_arg(out, "out") }?;
        // SAFETY: as above.
        let instruction = unsafe { str_arg(instruction, "instruction") }?;
        // SAFETY: as above.
        let response = unsafe { str_arg(response, "response") }?;
        let s = scorer
            .scorer
            .score_pair(&Pair::new(instruction, response))?;
        *out = c_score(&s);
        Ok(())
    })
}

/// Scores `n` pairs in fused batches (faster than `n` single calls):
/// `instructions[i]` with `responses[i]` into `out[i]`. The arrays hold `n`
/// UTF-8, NUL-terminated strings each, and `out` room for `n` scores; none
/// is retained. With `n` = 0 nothing is read or written (the pointers may be
/// NULL). On failure `out` is left unchanged. Uses `scorer` from one thread
/// at a time.
///
/// Returns `MAIN_OK`; `MAIN_ERR_INVALID_ARGUMENT` (a NULL pointer or string,
/// a text not UTF-8, the message naming it as `instructions[i]` or
/// `responses[i]`; fewer than `negatives` + 1 pairs); `MAIN_ERR_INTERNAL`.
///
/// # Safety
/// Every pointer is NULL or points to a live object (array of `n`) of its
/// type; `scorer` is not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn main_score_batch(
    scorer: *mut main_scorer,
    instructions: *const *const c_char,
    responses: *const *const c_char,
    n: usize,
    out: *mut main_pair_score,
) -> main_status {
    guard(|| {
        // SAFETY: the caller promises NULL or live objects, and exclusive use of the scorer.
        let scorer = unsafe { mut_arg(scorer, "scorer") }?;
        if n == 0 {
            return Ok(());
        }
        for (p, name) in [(instructions, "instructions"), (responses, "responses")] {
            if p.is_null() {
                return Err(null(name));
            }
        }
        if out.is_null() {
            return Err(null("out"));
        }
        let mut pairs = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: the caller promises arrays of n strings (checked non-NULL above).
            let (x, y) = unsafe { (*instructions.add(i), *responses.add(i)) };
            // SAFETY: each element is NULL or a NUL-terminated string.
            let x = unsafe { str_arg(x, &format!("instructions[{i}]")) }?;
            // SAFETY: as above.
            let y = unsafe { str_arg(y, &format!("responses[{i}]")) }?;
            pairs.push(Pair::new(x, y));
        }
        let scores = scorer.scorer.score_batch(&pairs)?;
        // SAFETY: the caller promises room for n scores at out (checked non-NULL).
        let out = unsafe { std::slice::from_raw_parts_mut(out, n) };
        for (o, s) in out.iter_mut().zip(&scores) {
            *o = c_score(s);
        }
        Ok(())
    })
}

/// Scores one pair like `main_score_pair` and also returns its per-token
/// detail: `*out_detail` is a new `main_pair_detail` the caller owns and
/// frees with `main_pair_detail_free`. `out` may be NULL when only the
/// detail is wanted. On failure `*out` is unchanged and `*out_detail` is set
/// to NULL (when `out_detail` is not NULL).
///
/// Returns the statuses of `main_score_pair` (`out_detail` NULL is
/// `MAIN_ERR_INVALID_ARGUMENT`).
///
/// # Safety
/// As `main_score_pair`; `out_detail` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn main_score_pair_detail(
    scorer: *mut main_scorer,
    instruction: *const c_char,
    response: *const c_char,
    out: *mut main_pair_score,
    out_detail: *mut *mut main_pair_detail,
) -> main_status {
    guard(|| {
        if out_detail.is_null() {
            return Err(null("out_detail"));
        }
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { *out_detail = std::ptr::null_mut() };
        // SAFETY: the caller promises NULL or live objects, and exclusive use of the scorer.
        let scorer = unsafe { mut_arg(scorer, "scorer") }?;
        // SAFETY: as above.
        let instruction = unsafe { str_arg(instruction, "instruction") }?;
        // SAFETY: as above.
        let response = unsafe { str_arg(response, "response") }?;
        let s = scorer
            .scorer
            .score_pair(&Pair::new(instruction, response))?;
        let (response, n_response) = c_tokens(s.response_detail.as_deref().unwrap_or(&[]));
        let (instruction, n_instruction) = c_tokens(s.instruction_detail.as_deref().unwrap_or(&[]));
        let detail = Box::new(main_pair_detail {
            response,
            n_response,
            instruction,
            n_instruction,
        });
        // SAFETY: the caller promises NULL or a writable score.
        if let Some(out) = unsafe { out.as_mut() } {
            *out = c_score(&s);
        }
        // SAFETY: checked non-NULL above.
        unsafe { *out_detail = Box::into_raw(detail) };
        Ok(())
    })
}

/// Frees a detail from `main_score_pair_detail` and all its arrays and
/// strings. NULL is a no-op. Thread-safe for distinct details.
///
/// # Safety
/// `detail` is NULL or from `main_score_pair_detail`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn main_pair_detail_free(detail: *mut main_pair_detail) {
    guard_void(|| {
        if detail.is_null() {
            return;
        }
        // SAFETY: the caller hands back a pointer main_score_pair_detail leaked.
        let d = unsafe { Box::from_raw(detail) };
        // SAFETY: both arrays came from c_tokens with these lengths.
        unsafe {
            free_tokens(d.response, d.n_response);
            free_tokens(d.instruction, d.n_instruction);
        }
    })
}

/// Log-probs of every token of a plain text under a model (no chat
/// template): the text is tokenized as the model does (its BOS rule; special
/// tokens written in the text are not parsed), and token i gets
/// log p(token i | tokens 0 .. i-1).
///
/// `model`: shared, may be in use by other threads. `text`: UTF-8,
/// NUL-terminated, not retained. `n_threads`: worker threads for this call
/// (0 = one per core). `precision`: a `main_precision` value. On success
/// `*out` is a new `main_text_logprobs` the caller owns and frees with
/// `main_text_logprobs_free`; on failure `*out` is set to NULL (when `out`
/// is not NULL). Thread-safe.
///
/// Returns `MAIN_OK`; `MAIN_ERR_INVALID_ARGUMENT` (a NULL pointer, text not
/// UTF-8, unknown precision, or `MAIN_PRECISION_BF16`, which the CPU does
/// not run); `MAIN_ERR_FORMAT` (the model's tokenizer fails on the text);
/// `MAIN_ERR_INTERNAL`.
///
/// # Safety
/// Every pointer is NULL or points to a live object of its type.
#[no_mangle]
pub unsafe extern "C" fn main_text_logprobs_new(
    model: *const main_model,
    text: *const c_char,
    n_threads: u32,
    precision: u32,
    out: *mut *mut main_text_logprobs,
) -> main_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: the caller promises NULL or live objects.
        let model = &unsafe { ref_arg(model, "model") }?.model;
        // SAFETY: as above.
        let text = unsafe { str_arg(text, "text") }?;
        // The CPU runs text log-probs: bf16 is refused here as everywhere,
        // not quietly run in exact.
        let precision =
            Device::Cpu.resolve_precision(Some(precision_arg(precision, "precision")?))?;
        let rt = Runtime::new(n_threads as usize, precision);
        let tok = &model.tokenizer;
        let ids = tok.encode(text, tok.add_bos_default(), false)?;
        let lps = sequence_logprobs(model, &rt, &ids)?;
        let ppl = perplexity(&lps);
        let tokens: Vec<main_text_token> = ids
            .iter()
            .zip(&lps)
            .map(|(&id, lp)| {
                let (text, text_len) = leak_text(&tok.piece_bytes(id));
                main_text_token {
                    id,
                    text,
                    text_len,
                    logprob: lp.unwrap_or(f64::NAN),
                }
            })
            .collect();
        let (tokens, n_tokens) = leak_slice(tokens);
        let result = Box::new(main_text_logprobs {
            tokens,
            n_tokens,
            perplexity: ppl,
        });
        // SAFETY: as above.
        unsafe { *out = Box::into_raw(result) };
        Ok(())
    })
}

/// Frees a result of `main_text_logprobs_new` with all its tokens and
/// strings. NULL is a no-op. Thread-safe for distinct results.
///
/// # Safety
/// `logprobs` is NULL or from `main_text_logprobs_new`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn main_text_logprobs_free(logprobs: *mut main_text_logprobs) {
    guard_void(|| {
        if logprobs.is_null() {
            return;
        }
        // SAFETY: the caller hands back a pointer main_text_logprobs_new leaked.
        let l = unsafe { Box::from_raw(logprobs) };
        // SAFETY: the array and its texts came from leak_slice / leak_text with these lengths.
        for t in unsafe { take_slice(l.tokens, l.n_tokens) }.iter() {
            // SAFETY: as above.
            unsafe { free_text(t.text, t.text_len) };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{COMBINES, PRECISIONS};

    #[test]
    fn default_params_are_the_engines() {
        let want = ScorerParams {
            tokens: true,
            ..Default::default()
        };
        let got = engine_params(&main_scorer_default_params()).unwrap();
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
    }

    #[test]
    fn enum_values_round_trip() {
        for (v, p) in PRECISIONS {
            assert_eq!(precision_value(p), v);
            assert_eq!(precision_arg(v, "p").unwrap(), p);
        }
        for (v, c) in COMBINES {
            assert_eq!(combine_value(c), v);
        }
        let e = precision_arg(4, "precision").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid argument 'precision': 4 is not one of 0, 1, 2, 3"
        );
        let mut p = main_scorer_default_params();
        p.device = 2;
        let e = engine_params(&p).unwrap_err().to_string();
        assert_eq!(e, "invalid argument 'params->device': 2 is not one of 0, 1");
        p.device = main_device::MAIN_DEVICE_CUDA as u32;
        p.gpu = 1;
        assert_eq!(engine_params(&p).unwrap().device, Device::Cuda(1));
    }
}
