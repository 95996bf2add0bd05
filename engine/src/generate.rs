//! Batched generation: many prompts decoded together, each with its own KV
//! cache, so every weight is read once per step for all live sequences
//! instead of once per sequence.
//!
//! The steps: up to [`BatchParams::max_batch`] requests are admitted; their
//! prompts are prefilled together in forward calls of at most
//! [`BatchParams::prefill_tokens`] tokens (a long prompt is split across
//! calls); then every live sequence feeds its last token in one
//! [`Model::forward`] per step and the LM head runs on all their last
//! positions at once. A sequence that stops leaves the batch at once and the
//! next waiting request takes its place (continuous batching), so memory is
//! bounded by `max_batch` caches of `prompt + max_new` positions and one
//! prefill chunk, however many requests there are.
//!
//! Every sequence sees only itself: batching changes which sequences share
//! a weight read, never what a sequence computes (the matrix products treat
//! each row alone), so greedy decoding gives the tokens of one-at-a-time
//! decoding, and a sampled sequence depends only on its own seed.
//!
//! Stops: a token id in [`Request::stop_ids`] ends the sequence and is kept
//! in [`Generation::tokens`] but not in [`Generation::text`]; a string of
//! [`Request::stop_strings`] appearing in the decoded completion ends it and
//! the text is cut before it (OpenAI's `stop`: the stop string is not
//! returned).

use crate::error::{Error, Result};
use crate::model::{KvCache, Model, Runtime};
use crate::sample::{Sampler, SamplerParams};
use crate::template::ChatTemplate;

/// One prompt to continue.
pub struct Request {
    /// Token ids of the prompt (at least one).
    pub prompt: Vec<u32>,
    /// Most tokens to generate (also bounded by the model's context).
    pub max_new: usize,
    /// Token ids that end the sequence (kept in `tokens`, not in `text`).
    pub stop_ids: Vec<u32>,
    /// Texts that end the sequence; the completion is cut before the first.
    pub stop_strings: Vec<String>,
    /// This sequence's own sampler (greedy unless told otherwise).
    pub sampler: Sampler,
}

impl Request {
    /// A greedy request with no stops.
    pub fn new(prompt: Vec<u32>, max_new: usize) -> Request {
        Request {
            prompt,
            max_new,
            stop_ids: Vec::new(),
            stop_strings: Vec::new(),
            sampler: Sampler::new(SamplerParams::default()).expect("the defaults are valid"),
        }
    }
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A stop id or stop string.
    Stop,
    /// `max_new` tokens, or the end of the model's context.
    Length,
}

impl Finish {
    /// OpenAI's name for it (`finish_reason`).
    pub fn name(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What one request produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The generated ids, with the stop id that ended it, if one did.
    pub tokens: Vec<u32>,
    /// The decoded completion, without a stop id and cut before a stop string.
    pub text: String,
    pub finish: Finish,
}

/// How many sequences run together and how big a prefill call may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchParams {
    /// Sequences decoded together (each holds a KV cache of its prompt and
    /// completion).
    pub max_batch: usize,
    /// Tokens per prefill forward call (bounds its activation memory).
    pub prefill_tokens: usize,
}

impl Default for BatchParams {
    fn default() -> Self {
        BatchParams {
            max_batch: 32,
            prefill_tokens: 2048,
        }
    }
}

/// The ids that end a chat turn of `template` on `model`: the first token
/// of the template's end-of-turn text and the tokenizer's EOS.
pub fn chat_stop_ids(model: &Model, template: &ChatTemplate) -> Result<Vec<u32>> {
    let tok = &model.tokenizer;
    let mut stop: Vec<u32> = tok
        .encode(template.end_of_turn(), false, true)?
        .into_iter()
        .take(1)
        .collect();
    stop.extend(tok.eos_id().filter(|id| !stop.contains(id)));
    Ok(stop)
}

/// Runs every request; results in request order. See the module docs.
pub fn generate_batch(
    model: &Model,
    rt: &Runtime,
    requests: Vec<Request>,
    params: BatchParams,
) -> Result<Vec<Generation>> {
    let mut out: Vec<Option<Generation>> = vec![None; requests.len()];
    generate_batch_with(model, rt, requests, params, |i, g| {
        out[i] = Some(g);
        Ok(())
    })?;
    Ok(out
        .into_iter()
        .map(|g| g.expect("every request is reported once"))
        .collect())
}

/// A sequence in the batch.
struct Live {
    /// Index of its request.
    index: usize,
    request: Request,
    /// Context positions it may use (prompt + generated tokens fed back).
    capacity: usize,
    tokens: Vec<u32>,
    text: String,
}

/// Generates up to `max_new` tokens after `prompt`, stopping after any id in
/// `stop` (which is included in the result): one request of
/// [`generate_batch`], with a KV cache (the prompt is
/// prefilled once, then one token per step). `sampler` is used as given:
/// the same sampler gives the same tokens in every call.
pub fn generate(
    model: &Model,
    rt: &Runtime,
    prompt: &[u32],
    max_new: usize,
    stop: &[u32],
    sampler: &mut Sampler,
) -> Result<Vec<u32>> {
    let request = Request {
        prompt: prompt.to_vec(),
        max_new,
        stop_ids: stop.to_vec(),
        stop_strings: Vec::new(),
        sampler: sampler.clone(),
    };
    let mut out = generate_batch(model, rt, vec![request], BatchParams::default())?;
    Ok(out.remove(0).tokens)
}

/// [`generate_batch`] handing each result to `done(request index, result)`
/// as soon as its sequence ends (in the order sequences end, not request
/// order); an error from `done` stops the run.
pub fn generate_batch_with(
    model: &Model,
    rt: &Runtime,
    requests: Vec<Request>,
    params: BatchParams,
    mut done: impl FnMut(usize, Generation) -> Result<()>,
) -> Result<()> {
    if params.max_batch == 0 || params.prefill_tokens == 0 {
        return Err(Error::invalid_argument(
            "batch",
            format!(
                "max_batch ({}) and prefill_tokens ({}) must be at least 1",
                params.max_batch, params.prefill_tokens
            ),
        ));
    }
    let context = model.config.context_length;
    for (i, r) in requests.iter().enumerate() {
        if r.prompt.is_empty() {
            return Err(Error::invalid_argument(
                format!("prompt {i}"),
                "must hold at least one token",
            ));
        }
        if r.prompt.len() >= context {
            return Err(Error::invalid_argument(
                format!("prompt {i}"),
                format!(
                    "{} tokens leave no room to generate in the model's context of {context}",
                    r.prompt.len()
                ),
            ));
        }
        model
            .check_tokens(&r.prompt)
            .map_err(|e| Error::invalid_argument(format!("prompt {i}"), e.to_string()))?;
        if r.stop_strings.iter().any(String::is_empty) {
            return Err(Error::invalid_argument(
                format!("request {i}"),
                "an empty stop string would stop at once",
            ));
        }
    }
    let mut waiting = requests.into_iter().enumerate();
    // `live[j]` runs on `caches[j]`: `forward` takes the caches as one slice.
    let mut live: Vec<Live> = Vec::with_capacity(params.max_batch);
    let mut caches: Vec<KvCache> = Vec::with_capacity(params.max_batch);
    loop {
        // Admit new sequences, prefill them and draw their first tokens.
        let first_new = live.len();
        for (index, request) in waiting.by_ref().take(params.max_batch - live.len()) {
            if request.max_new == 0 {
                done(
                    index,
                    Generation {
                        tokens: Vec::new(),
                        text: String::new(),
                        finish: Finish::Length,
                    },
                )?;
                continue;
            }
            // The last generated token is never fed back: it needs no room.
            let capacity = (request.prompt.len() + request.max_new - 1).min(context);
            caches.push(model.new_cache(capacity));
            live.push(Live {
                index,
                request,
                capacity,
                tokens: Vec::new(),
                text: String::new(),
            });
        }
        if live.is_empty() {
            return Ok(());
        }
        if first_new < live.len() {
            let hidden = prefill(
                model,
                rt,
                &live[first_new..],
                &mut caches[first_new..],
                params,
            )?;
            let lg = batch_logits(model, rt, &hidden);
            for (seq, row) in live[first_new..].iter_mut().zip(&lg) {
                push_token(seq, row);
            }
        }
        retire(&mut live, &mut caches, model, &mut done)?;
        if live.is_empty() {
            continue;
        }
        // One decode step for every live sequence.
        let last: Vec<[u32; 1]> = live.iter().map(|s| [*s.tokens.last().unwrap()]).collect();
        let feed: Vec<&[u32]> = last.iter().map(|t| &t[..]).collect();
        let hidden = model.forward(rt, &mut caches, &feed)?;
        let lg = batch_logits(model, rt, &hidden);
        for (seq, row) in live.iter_mut().zip(&lg) {
            push_token(seq, row);
        }
        retire(&mut live, &mut caches, model, &mut done)?;
    }
}

/// Prefills the prompts of `seqs` into `caches` in forward calls of at most
/// `params.prefill_tokens` tokens; returns each prompt's last hidden state,
/// `(seqs, d)`.
fn prefill(
    model: &Model,
    rt: &Runtime,
    seqs: &[Live],
    caches: &mut [KvCache],
    params: BatchParams,
) -> Result<Vec<f32>> {
    let d = model.config.d_model;
    let mut last = vec![0f32; seqs.len() * d];
    // (sequence, first prompt token not yet fed)
    let (mut s, mut off) = (0, 0);
    while s < seqs.len() {
        // One call: whole or partial prompts from sequence `s` on.
        let mut parts: Vec<&[u32]> = Vec::new();
        let mut budget = params.prefill_tokens;
        let (mut e, mut e_off) = (s, off);
        while e < seqs.len() && budget > 0 {
            let prompt = &seqs[e].request.prompt;
            let take = (prompt.len() - e_off).min(budget);
            parts.push(&prompt[e_off..e_off + take]);
            budget -= take;
            e_off += take;
            if e_off == prompt.len() {
                e += 1;
                e_off = 0;
            }
        }
        let n_seqs = parts.len();
        let hidden = model.forward(rt, &mut caches[s..s + n_seqs], &parts)?;
        // Keep the last row of every prompt that ended in this call.
        let mut row_end = 0;
        for (j, part) in parts.iter().enumerate() {
            row_end += part.len();
            let seq = s + j;
            if caches[seq].len() == seqs[seq].request.prompt.len() {
                last[seq * d..(seq + 1) * d]
                    .copy_from_slice(&hidden[(row_end - 1) * d..row_end * d]);
            }
        }
        (s, off) = (e, e_off);
    }
    Ok(last)
}

/// The full logits of every row of `hidden` (`(n, d)`): one pass over the
/// LM head for all live sequences, `n * vocab` floats.
fn batch_logits(model: &Model, rt: &Runtime, hidden: &[f32]) -> Vec<Vec<f32>> {
    let n = hidden.len() / model.config.d_model;
    let head = model.output_weight();
    let vocab = head.n_out;
    let mut all = vec![0f32; n * vocab];
    crate::matmul::matmul(&rt.threads, rt.precision, &head, hidden, n, &mut all);
    all.chunks_exact(vocab).map(<[f32]>::to_vec).collect()
}

/// Draws `seq`'s next token from its logits.
fn push_token(seq: &mut Live, logits: &[f32]) {
    let next = seq.request.sampler.sample(logits);
    seq.tokens.push(next);
}

/// Why `seq` is finished, or `None` while it goes on; sets its text when it
/// is (cut before a stop string). The text is decoded at every step only
/// when there are stop strings to look for.
fn finished(model: &Model, seq: &mut Live) -> Option<Finish> {
    let last = *seq.tokens.last()?;
    let decode = |ids: &[u32]| model.tokenizer.decode(ids);
    if seq.request.stop_ids.contains(&last) {
        seq.text = decode(&seq.tokens[..seq.tokens.len() - 1]);
        return Some(Finish::Stop);
    }
    if !seq.request.stop_strings.is_empty() {
        seq.text = decode(&seq.tokens);
    }
    let cut = seq
        .request
        .stop_strings
        .iter()
        .filter_map(|s| seq.text.find(s.as_str()))
        .min();
    if let Some(at) = cut {
        seq.text.truncate(at);
        return Some(Finish::Stop);
    }
    let fed = seq.request.prompt.len() + seq.tokens.len();
    // The next step would feed the last token at position `fed - 1`.
    if seq.tokens.len() == seq.request.max_new || fed > seq.capacity {
        if seq.request.stop_strings.is_empty() {
            seq.text = decode(&seq.tokens);
        }
        return Some(Finish::Length);
    }
    None
}

/// Reports and removes every finished sequence (their caches with them).
fn retire(
    live: &mut Vec<Live>,
    caches: &mut Vec<KvCache>,
    model: &Model,
    done: &mut impl FnMut(usize, Generation) -> Result<()>,
) -> Result<()> {
    let mut j = 0;
    while j < live.len() {
        match finished(model, &mut live[j]) {
            None => j += 1,
            Some(finish) => {
                // `remove`, not `swap_remove`: the batch keeps request order,
                // which keeps runs easy to follow (and results identical).
                let seq = live.remove(j);
                caches.remove(j);
                done(
                    seq.index,
                    Generation {
                        tokens: seq.tokens,
                        text: seq.text,
                        finish,
                    },
                )?;
            }
        }
    }
    Ok(())
}
