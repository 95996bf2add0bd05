//! The fused bidirectional scorer (DESIGN.md §4).
//!
//! The four views of many pairs are packed into large prefill batches so
//! each weight is read once for many tokens; the LM head runs only at
//! positions whose next token is a target, in vocabulary chunks
//! (`logprob::head_logprobs`). The unconditional prompt of each model is
//! computed once, when the scorer is made, and every view continues from the
//! longest part of it that it shares (the system prompt for conditional
//! views, all of it for unconditional ones). The views of one turn of a
//! conversation share more: its history, computed once per batch and
//! continued by each of them. And turns (or pairs) of a batch that start
//! with the same long prompt, such as a conversation's system message and
//! tool definitions or a system prompt a whole data set repeats, compute it
//! once for all of them (`clusters`).
//!
//! ```
//! use std::sync::Arc;
//! use main_engine::model::Model;
//! use main_engine::score::Pair;
//! use main_engine::scorer::{Scorer, ScorerParams};
//!
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/SmolLM2-135M-Instruct.Q4_1.gguf");
//! let model = Arc::new(Model::load(path.as_ref())?);
//! let mut scorer = Scorer::new(model, None, ScorerParams::default())?;
//! let good = scorer.score_pair(&Pair::new("What is the capital of France?", "Paris."))?;
//! let bad = scorer.score_pair(&Pair::new("What is the capital of France?", "17 + 25 = 42."))?;
//! println!("alignment {:.3} (fwd {:.3}, rev {:.3})", good.alignment, good.fwd_pmi, good.rev_pmi);
//! assert!(good.alignment > bad.alignment);
//! # Ok::<(), main_engine::Error>(())
//! ```

use std::sync::Arc;

mod clusters;
mod generation;
mod reuse;
mod side;
pub use generation::TextPrompt;

use crate::conversation::{Conversation, Turn};
use crate::cuda::backend::Backend;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::matmul::Precision;
use crate::model::{Model, Runtime};
use crate::score::{self, Combine, Pair, PairScore, TokenScore, ViewLogprobs};
use crate::template::ChatTemplate;
use crate::tokenizer::Tokenizer;
use crate::views::{build_view, negative_view, turn_views, ViewTokens};
use side::{Compute, Side};

/// Settings of a [`Scorer`].
#[derive(Clone, Debug)]
pub struct ScorerParams {
    /// Worker threads; 0 = one per core.
    pub n_threads: usize,
    /// Longest view in tokens; longer content is cut and the pair flagged.
    pub max_tokens: usize,
    pub combine: Combine,
    /// Other responses of the same batch per pair for the contrastive score (0 = off).
    pub negatives: usize,
    /// Per-token detail in the results.
    pub tokens: bool,
    pub precision: Precision,
    /// New tokens per forward call: bounds activation memory, and is large
    /// enough that weights are read once for many tokens.
    pub batch_tokens: usize,
    /// Where the forward passes run. A GPU takes `Precision::Bf16` or
    /// `Precision::Exact` (`Device::default_precision` gives its default).
    pub device: Device,
}

impl Default for ScorerParams {
    fn default() -> Self {
        ScorerParams {
            n_threads: 0,
            max_tokens: 1024,
            combine: Combine::Min,
            negatives: 0,
            tokens: false,
            precision: Precision::default(),
            batch_tokens: 2048,
            device: Device::Cpu,
        }
    }
}

/// Scores pairs with a forward model and, optionally, a separate reverse
/// model. Owns its threads and scratch: use one scorer per thread; the
/// models behind it may be shared.
pub struct Scorer {
    rt: Runtime,
    params: ScorerParams,
    forward: Side,
    /// `None`: zero-shot, the forward model serves both directions.
    reverse: Option<Side>,
}

impl Scorer {
    pub fn new(
        forward: Arc<Model>,
        reverse: Option<Arc<Model>>,
        params: ScorerParams,
    ) -> Result<Scorer> {
        if params.max_tokens < 8 {
            return Err(Error::invalid_argument(
                "max_tokens",
                format!("{} is too small (at least 8)", params.max_tokens),
            ));
        }
        if params.batch_tokens == 0 {
            return Err(Error::invalid_argument(
                "batch_tokens",
                "must be at least 1",
            ));
        }
        params.device.check_precision(params.precision)?;
        let backend = match params.device {
            Device::Cpu => None,
            Device::Cuda(n) => Some(crate::cuda::open(n)?),
        };
        Scorer::with_backend(forward, reverse, params, backend)
    }

    /// [`Scorer::new`] on a given GPU backend (tests pass the emulator).
    pub(crate) fn with_backend(
        forward: Arc<Model>,
        reverse: Option<Arc<Model>>,
        params: ScorerParams,
        backend: Option<Arc<dyn Backend>>,
    ) -> Result<Scorer> {
        let rt = Runtime::new(params.n_threads, params.precision);
        let gpu = backend.as_ref().map(|b| (b, params.precision));
        let forward = Side::new(forward, &rt, gpu)?;
        let reverse = match reverse {
            Some(m) => Some(Side::new(m, &rt, gpu)?),
            None => None,
        };
        Ok(Scorer {
            rt,
            params,
            forward,
            reverse,
        })
    }

    pub fn params(&self) -> &ScorerParams {
        &self.params
    }

    fn reverse_side(&self) -> &Side {
        self.reverse.as_ref().unwrap_or(&self.forward)
    }

    pub fn score_pair(&mut self, pair: &Pair) -> Result<PairScore> {
        let mut v = self.score_batch(std::slice::from_ref(pair))?;
        Ok(v.remove(0))
    }

    /// Scores many pairs in fused batches. With `negatives = K > 0`, pair i's
    /// contrastive score uses the responses of pairs i+1 ..= i+K (cyclically)
    /// of the same batch, so it needs at least K+1 pairs.
    pub fn score_batch(&mut self, pairs: &[Pair]) -> Result<Vec<PairScore>> {
        let turns: Vec<Turn> = pairs.iter().map(Turn::of_pair).collect();
        self.score_turns(&turns)
    }

    /// Every turn of `conversation`, in order (turn k of the output is
    /// element k-1). The record's score is [`crate::conversation::weakest`].
    pub fn score_conversation(&mut self, conversation: &Conversation) -> Result<Vec<PairScore>> {
        let turns: Vec<Turn> = conversation.turns().collect();
        self.score_turns(&turns)
    }

    /// Scores turns of conversations (and pairs, as [`Turn::of_pair`]) in
    /// fused batches, each turn with its history in front (DESIGN.md §2).
    /// Negatives as in [`Scorer::score_batch`]: turn i is scored against the
    /// responses of turns i+1 ..= i+K, after its own history.
    pub fn score_turns(&mut self, turns: &[Turn]) -> Result<Vec<PairScore>> {
        self.score_turns_named(turns, &|i| format!("pair {i}"))
    }

    /// [`Scorer::score_turns`], an error about turn `i` (its views cannot
    /// be built: a template that refuses its roles, a history that leaves
    /// no room) starting with `name(i)`: the job names the record's line
    /// and turn there.
    pub fn score_turns_named(
        &mut self,
        turns: &[Turn],
        name: &(dyn Fn(usize) -> String + Sync),
    ) -> Result<Vec<PairScore>> {
        if turns.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.params.negatives;
        if k > 0 && turns.len() < k + 1 {
            return Err(Error::invalid_argument(
                "negatives",
                format!(
                    "{k} negatives need batches of at least {} pairs, got {}",
                    k + 1,
                    turns.len()
                ),
            ));
        }
        let (views, mut fwd_lps, rev_lps) = if matches!(self.forward.compute, Compute::Gpu(_)) {
            self.run_pipelined(turns, name)?
        } else {
            let views = self.build_views(turns, 0, name)?;
            let (fwd_jobs, rev_jobs, groups) = jobs(&views);
            let bt = self.params.batch_tokens;
            let fwd_lps = self.forward.run(&self.rt, &fwd_jobs, &groups, bt)?;
            let rev = self.reverse.as_mut().unwrap_or(&mut self.forward);
            let rev_lps = rev.run(&self.rt, &rev_jobs, &groups, bt)?;
            (views, fwd_lps, rev_lps)
        };
        // Conditional views of x_i with other responses y_j.
        if k > 0 {
            let max = self.params.max_tokens;
            let fwd = &self.forward;
            let mut negative_views = Vec::new();
            for (i, (t, (_, dropped))) in turns.iter().zip(&views).enumerate() {
                for step in 1..=k {
                    let other = &turns[(i + step) % turns.len()];
                    negative_views.push(
                        negative_view(
                            &fwd.model.tokenizer,
                            &fwd.template,
                            t,
                            *dropped,
                            other.assistant,
                            max,
                        )
                        .map_err(|e| Error::Input(format!("{}: {e}", name(i))))?,
                    );
                }
            }
            let jobs: Vec<&ViewTokens> = negative_views.iter().collect();
            // Each negative is its own group: they share the history of
            // their turn only up to where the other response begins, which
            // the precomputed prefix mostly covers for pairs.
            let groups: Vec<usize> = (0..jobs.len()).collect();
            let bt = self.params.batch_tokens;
            fwd_lps.extend(self.forward.run(&self.rt, &jobs, &groups, bt)?);
        }
        let (fwd, rev) = (&self.forward, self.reverse_side());

        let mut out = Vec::with_capacity(turns.len());
        for (i, (v, _)) in views.iter().enumerate() {
            let (fc, fu) = (&fwd_lps[2 * i], &fwd_lps[2 * i + 1]);
            let (rc, ru) = (&rev_lps[2 * i], &rev_lps[2 * i + 1]);
            let response_ids = &v[0].ids[v[0].n_prompt..];
            let response_pieces = fwd.pieces(response_ids);
            let truncated = v.iter().any(|x| x.truncated);
            let mut s = score::pair_score(
                &ViewLogprobs {
                    fwd_cond: fc,
                    fwd_uncond: fu,
                    rev_cond: rc,
                    rev_uncond: ru,
                    response_pieces: &response_pieces,
                    n_end_of_turn: fwd.n_end_of_turn.min(response_ids.len()),
                },
                self.params.combine,
                truncated,
            );
            if k > 0 {
                let mut sims = vec![score::mean(fc)];
                let base = 2 * turns.len() + i * k;
                sims.extend((0..k).map(|j| score::mean(&fwd_lps[base + j])));
                s.contrastive = Some(score::contrastive(&sims));
            }
            if self.params.tokens {
                s.response_detail = Some(detail(response_ids, response_pieces, fc, fu));
                let instr_ids = &v[2].ids[v[2].n_prompt..];
                s.instruction_detail = Some(detail(instr_ids, rev.pieces(instr_ids), rc, ru));
            }
            out.push(s);
        }
        Ok(out)
    }

    /// The four views of `turns`, built on the scorer's threads (tokenizing
    /// is the CPU's share of the work). `offset`: index of `turns[0]` in the
    /// caller's batch, for `name`.
    fn build_views(
        &self,
        turns: &[Turn],
        offset: usize,
        name: &(dyn Fn(usize) -> String + Sync),
    ) -> Result<Vec<TurnViews>> {
        let (fwd, rev) = (&self.forward, self.reverse_side());
        build_views(
            &self.rt,
            (&fwd.model.tokenizer, &fwd.template),
            (&rev.model.tokenizer, &rev.template),
            self.params.max_tokens,
            turns,
            offset,
            name,
        )
    }

    /// The GPU path: CPU threads build the views of the next chunk of turns
    /// while the GPU runs the forward and reverse views of this one, so
    /// tokenizing never leaves the GPU waiting (except for the first chunk).
    fn run_pipelined(
        &mut self,
        turns: &[Turn],
        name: &(dyn Fn(usize) -> String + Sync),
    ) -> Result<Batches> {
        const CHUNK: usize = 256;
        let Scorer {
            rt,
            params,
            forward,
            reverse,
        } = self;
        let bt = params.batch_tokens;
        let max = params.max_tokens;
        // The builder thread reads the models' tokenizers and templates
        // through their own handles; the GPU state stays with this thread.
        let fwd_text = (forward.model.clone(), forward.template.clone());
        let rev_text = reverse
            .as_ref()
            .map(|r| (r.model.clone(), r.template.clone()))
            .unwrap_or_else(|| fwd_text.clone());
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let rt = &*rt;
            let builder = scope.spawn(move || {
                let fwd = (&fwd_text.0.tokenizer, &*fwd_text.1);
                let rev = (&rev_text.0.tokenizer, &*rev_text.1);
                for (c, chunk) in turns.chunks(CHUNK).enumerate() {
                    let views = build_views(rt, fwd, rev, max, chunk, c * CHUNK, name);
                    let failed = views.is_err();
                    if tx.send(views).is_err() || failed {
                        return;
                    }
                }
            });
            let mut all = Vec::with_capacity(turns.len());
            let (mut fwd_lps, mut rev_lps) = (Vec::new(), Vec::new());
            for views in rx {
                let views = views?;
                let (fwd_jobs, rev_jobs, groups) = jobs(&views);
                fwd_lps.extend(forward.run(rt, &fwd_jobs, &groups, bt)?);
                let rev = reverse.as_mut().unwrap_or(&mut *forward);
                rev_lps.extend(rev.run(rt, &rev_jobs, &groups, bt)?);
                all.extend(views);
            }
            builder.join().expect("the view builder does not panic");
            Ok((all, fwd_lps, rev_lps))
        })
    }

    /// The forward model's mean log-prob (nats per target token) of each
    /// pair's response given its instruction: the `fwd_cond` that
    /// [`Scorer::score_batch`] gives the pair, from the same view, without
    /// the other three views. The trainer's agreement check needs only this
    /// of the forward model's own answer.
    pub fn forward_cond(&mut self, pairs: &[Pair]) -> Result<Vec<f64>> {
        let (tok, tpl) = (&self.forward.model.tokenizer, &self.forward.template);
        let max = self.params.max_tokens;
        let views = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                build_view(tok, tpl, &p.instruction, &p.response, max)
                    .map_err(|e| Error::Input(format!("pair {i}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let jobs: Vec<&ViewTokens> = views.iter().collect();
        let groups: Vec<usize> = (0..jobs.len()).collect();
        let bt = self.params.batch_tokens;
        let lps = self.forward.run(&self.rt, &jobs, &groups, bt)?;
        Ok(lps.iter().map(|v| score::mean(v)).collect())
    }
}

/// A turn's four views and how many of its history's oldest exchanges they leave out.
type TurnViews = ([ViewTokens; 4], usize);

/// Views of a batch and the target log-probs of its forward views (two
/// per turn, then any negatives) and reverse views (two per turn).
type Batches = (Vec<TurnViews>, Vec<Vec<f64>>, Vec<Vec<f64>>);

/// The forward (cond, uncond of each turn) and reverse jobs of `views`,
/// and the turn of each job (the same for both lists).
fn jobs(views: &[TurnViews]) -> (Vec<&ViewTokens>, Vec<&ViewTokens>, Vec<usize>) {
    let mut fwd = Vec::with_capacity(2 * views.len());
    let mut rev = Vec::with_capacity(2 * views.len());
    let mut groups = Vec::with_capacity(2 * views.len());
    for (i, (v, _)) in views.iter().enumerate() {
        fwd.push(&v[0]);
        fwd.push(&v[1]);
        rev.push(&v[2]);
        rev.push(&v[3]);
        groups.extend([i, i]);
    }
    (fwd, rev, groups)
}

/// The four views of each turn, on `rt`'s threads.
fn build_views(
    rt: &Runtime,
    fwd: (&Tokenizer, &ChatTemplate),
    rev: (&Tokenizer, &ChatTemplate),
    max_tokens: usize,
    turns: &[Turn],
    offset: usize,
    name: &(dyn Fn(usize) -> String + Sync),
) -> Result<Vec<TurnViews>> {
    let mut built: Vec<Option<Result<TurnViews>>> = (0..turns.len()).map(|_| None).collect();
    rt.threads.for_each_mut(&mut built, |i, out| {
        *out = Some(
            turn_views(fwd, rev, &turns[i], max_tokens)
                .map_err(|e| Error::Input(format!("{}: {e}", name(offset + i)))),
        );
    });
    built
        .into_iter()
        .map(|v| v.expect("every turn is built"))
        .collect()
}

fn detail(ids: &[u32], pieces: Vec<String>, cond: &[f64], uncond: &[f64]) -> Vec<TokenScore> {
    ids.iter()
        .zip(pieces)
        .zip(cond.iter().zip(uncond))
        .map(|((&id, text), (&c, &u))| TokenScore {
            id,
            text,
            cond: c,
            uncond: u,
            pmi: c - u,
        })
        .collect()
}
