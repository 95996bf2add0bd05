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
//! Requests with the same prompt (several samples of one prompt, the
//! pipeline's candidates of one response) prefill it once: a later one
//! takes a copy of the first one's cache ([`StepModel::fork_cache`]) and
//! draws its first token from the same logits with its own sampler.
//!
//! Every sequence sees only itself: batching changes which sequences share
//! a weight read, never what a sequence computes (the matrix products treat
//! each row alone), so greedy decoding gives the tokens of one-at-a-time
//! decoding, and a sampled sequence depends only on its own seed.
//!
//! Where the forward passes run is a [`StepModel`]: [`CpuModel`] (the
//! model's own forward pass with a [`Runtime`]) or, with a GPU, the decode
//! loop's model in `cuda::decode`. The scheduling here (admission, prefill
//! packing, sampling, stops, retiring) is the same for both.
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

/// What batched generation asks of a model: per-sequence caches and one
/// forward call over many sequences at once. The CPU's is [`CpuModel`];
/// the GPU's is `cuda::decode::GpuDecoder`.
pub trait StepModel {
    /// One sequence's keys and values, wherever this model keeps them.
    type Cache;
    /// The host model: its config, tokenizer and vocabulary checks.
    fn model(&self) -> &Model;
    /// A cache for `capacity` positions (an error when there is no room).
    fn new_cache(&mut self, capacity: usize) -> Result<Self::Cache>;
    /// A cache for `capacity` positions holding the first `len` positions of
    /// `src` (`len <= src`'s length and `capacity`): a prompt computed once
    /// and continued by several sequences.
    fn fork_cache(&mut self, src: &Self::Cache, len: usize, capacity: usize)
        -> Result<Self::Cache>;
    /// Whether one prompt may be prefilled over several calls (continuing
    /// its own cache); when not, a prefill call takes whole prompts only.
    fn splits_prompts(&self) -> bool;
    /// Feeds `tokens[s]` after what `caches[s]` holds, for every sequence
    /// `s` at once, and appends their keys and values to the caches.
    /// Returns the logits (`vocab` each) of the last token of every sequence
    /// `s` with `want[s]`, in sequence order.
    fn step(
        &mut self,
        caches: &mut [Self::Cache],
        tokens: &[&[u32]],
        want: &[bool],
    ) -> Result<Vec<Vec<f32>>>;
}

/// Generation on the CPU: [`Model::forward`] with `rt`'s threads and
/// precision, the LM head on the wanted rows only.
pub struct CpuModel<'a> {
    pub model: &'a Model,
    pub rt: &'a Runtime,
}

impl StepModel for CpuModel<'_> {
    type Cache = KvCache;

    fn model(&self) -> &Model {
        self.model
    }

    fn new_cache(&mut self, capacity: usize) -> Result<KvCache> {
        Ok(self.model.new_cache(capacity))
    }

    fn fork_cache(&mut self, src: &KvCache, len: usize, capacity: usize) -> Result<KvCache> {
        Ok(KvCache::from_prefix(src, len, capacity))
    }

    fn splits_prompts(&self) -> bool {
        true
    }

    fn step(
        &mut self,
        caches: &mut [KvCache],
        tokens: &[&[u32]],
        want: &[bool],
    ) -> Result<Vec<Vec<f32>>> {
        let d = self.model.config.d_model;
        let hidden = self.model.forward(self.rt, caches, tokens)?;
        // The last row of every wanted sequence.
        let mut rows = Vec::new();
        let mut end = 0;
        for (part, &w) in tokens.iter().zip(want) {
            end += part.len();
            if w {
                rows.extend_from_slice(&hidden[(end - 1) * d..end * d]);
            }
        }
        Ok(batch_logits(self.model, self.rt, &rows))
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

/// Runs every request on the CPU; results in request order. See the
/// module docs.
pub fn generate_batch(
    model: &Model,
    rt: &Runtime,
    requests: Vec<Request>,
    params: BatchParams,
) -> Result<Vec<Generation>> {
    generate_batch_on(&mut CpuModel { model, rt }, requests, params)
}

/// [`generate_batch`] on any [`StepModel`] (the GPU's included).
pub fn generate_batch_on<M: StepModel>(
    m: &mut M,
    requests: Vec<Request>,
    params: BatchParams,
) -> Result<Vec<Generation>> {
    let mut out: Vec<Option<Generation>> = vec![None; requests.len()];
    generate_batch_with(m, requests, params, |i, g| {
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
    /// Prompt positions already prefilled.
    prefilled: usize,
    /// The logits after the whole prompt, once prefilled: what a request
    /// with the same prompt draws its first token from. Kept while the
    /// sequence lives (a later request may repeat its prompt), so the batch
    /// holds at most `max_batch` vocabulary rows more than the caches.
    prompt_logits: Option<std::rc::Rc<[f32]>>,
    tokens: Vec<u32>,
    text: String,
}

impl Live {
    fn new(index: usize, request: Request, capacity: usize) -> Live {
        Live {
            index,
            request,
            capacity,
            prefilled: 0,
            prompt_logits: None,
            tokens: Vec::new(),
            text: String::new(),
        }
    }
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

/// [`generate_batch_on`] handing each result to `done(request index,
/// result)` as soon as its sequence ends (in the order sequences end, not
/// request order); an error from `done` stops the run. The CPU's model is
/// `&mut CpuModel { model, rt }`.
pub fn generate_batch_with<M: StepModel>(
    m: &mut M,
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
    let model = m.model();
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
    // `live[j]` runs on `caches[j]`: `step` takes the caches as one slice.
    let mut live: Vec<Live> = Vec::with_capacity(params.max_batch);
    let mut caches: Vec<M::Cache> = Vec::with_capacity(params.max_batch);
    loop {
        // Admit new sequences, prefill them and draw their first tokens. A
        // request whose prompt a live or newly admitted sequence already
        // holds waits in `twins` for a copy of that one's cache.
        let first_new = live.len();
        let mut twins: Vec<(usize, Live)> = Vec::new();
        let room = params.max_batch - live.len();
        for (index, request) in waiting.by_ref().take(room) {
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
            let seq = Live::new(index, request, capacity);
            match live
                .iter()
                .position(|s| s.request.prompt == seq.request.prompt)
            {
                Some(src) => twins.push((src, seq)),
                None => {
                    caches.push(m.new_cache(capacity)?);
                    live.push(seq);
                }
            }
        }
        if live.is_empty() {
            return Ok(());
        }
        if first_new < live.len() {
            prefill(m, &mut live[first_new..], &mut caches[first_new..], params)?;
        }
        for (src, mut seq) in twins {
            let n = seq.request.prompt.len();
            caches.push(m.fork_cache(&caches[src], n, seq.capacity)?);
            let logits = live[src].prompt_logits.clone();
            let logits = logits.expect("a prefilled prompt keeps its logits");
            seq.prefilled = n;
            push_token(&mut seq, &logits);
            seq.prompt_logits = Some(logits);
            live.push(seq);
        }
        retire(&mut live, &mut caches, m.model(), &mut done)?;
        if live.is_empty() {
            continue;
        }
        // One decode step for every live sequence.
        let last: Vec<[u32; 1]> = live.iter().map(|s| [*s.tokens.last().unwrap()]).collect();
        let feed: Vec<&[u32]> = last.iter().map(|t| &t[..]).collect();
        let lg = m.step(&mut caches, &feed, &vec![true; feed.len()])?;
        for (seq, row) in live.iter_mut().zip(&lg) {
            push_token(seq, row);
        }
        retire(&mut live, &mut caches, m.model(), &mut done)?;
    }
}

/// Prefills the prompts of `seqs` into `caches` in calls of at most
/// `params.prefill_tokens` tokens (a model that cannot continue a prompt
/// across calls gets whole prompts, at least one per call, so a prompt
/// longer than the budget makes a call of its own) and draws every
/// sequence's first token from its prompt's last position.
fn prefill<M: StepModel>(
    m: &mut M,
    seqs: &mut [Live],
    caches: &mut [M::Cache],
    params: BatchParams,
) -> Result<()> {
    let split = m.splits_prompts();
    let mut s = 0;
    while s < seqs.len() {
        // One call: whole or partial prompts from sequence `s` on.
        let mut parts: Vec<&[u32]> = Vec::new();
        let mut want = Vec::new();
        let mut budget = params.prefill_tokens;
        let mut e = s;
        while e < seqs.len() && budget > 0 {
            let (prompt, off) = (&seqs[e].request.prompt, seqs[e].prefilled);
            let rest = prompt.len() - off;
            if !split && rest > budget && !parts.is_empty() {
                break;
            }
            let take = if split { rest.min(budget) } else { rest };
            parts.push(&prompt[off..off + take]);
            want.push(off + take == prompt.len());
            budget = budget.saturating_sub(take);
            e += 1;
        }
        let n_seqs = parts.len();
        let lg = m.step(&mut caches[s..s + n_seqs], &parts, &want)?;
        let fed: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        let mut rows = lg.iter();
        for (seq, (n, ends)) in seqs[s..s + n_seqs]
            .iter_mut()
            .zip(fed.into_iter().zip(want))
        {
            seq.prefilled += n;
            if ends {
                let row = rows.next().expect("one row per ended prompt");
                push_token(seq, row);
                seq.prompt_logits = Some(row.as_slice().into());
            }
        }
        // The next call starts at the first prompt not yet fully fed.
        while s < seqs.len() && seqs[s].prefilled == seqs[s].request.prompt.len() {
            s += 1;
        }
    }
    Ok(())
}

/// The full logits of every row of `hidden` (`(n, d)`): one pass over the
/// LM head for all the rows, `n * vocab` floats.
fn batch_logits(model: &Model, rt: &Runtime, hidden: &[f32]) -> Vec<Vec<f32>> {
    let n = hidden.len() / model.config.d_model;
    if n == 0 {
        return Vec::new();
    }
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

/// Reports and removes every finished sequence (their caches with them,
/// which frees a GPU cache's device memory).
fn retire<C>(
    live: &mut Vec<Live>,
    caches: &mut Vec<C>,
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
