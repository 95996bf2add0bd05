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
pub use generation::TextPrompt;

use crate::conversation::{Conversation, Turn};
use crate::cuda::backend::Backend;
use crate::cuda::{GpuSide, GpuView};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::lanes;
use crate::logprob::head_logprobs;
use crate::matmul::Precision;
use crate::model::{KvCache, Model, Runtime};
use crate::score::{self, Combine, Pair, PairScore, TokenScore, ViewLogprobs};
use crate::template::ChatTemplate;
use crate::tokenizer::Tokenizer;
use crate::views::{build_view, negative_view, turn_views, ViewTokens};
use clusters::Start;

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

/// How many leading tokens of a view the precomputed prefix covers. The
/// last prompt token is always recomputed: its hidden state predicts the
/// first target.
fn shared_len(prefix_ids: &[u32], v: &ViewTokens) -> usize {
    let lcp = v
        .ids
        .iter()
        .zip(prefix_ids)
        .take_while(|(a, b)| a == b)
        .count();
    lcp.min(v.n_prompt.saturating_sub(1))
}

/// One model with what the scorer precomputes for it.
struct Side {
    model: Arc<Model>,
    template: Arc<ChatTemplate>,
    /// Tokens of the end-of-turn marker that closes every target.
    n_end_of_turn: usize,
    /// The unconditional prompt, shared by every view.
    prefix_ids: Vec<u32>,
    compute: Compute,
}

/// Where a side's forward passes run, with the prefix's keys and values there.
enum Compute {
    Cpu { prefix: KvCache },
    Gpu(Box<GpuSide>),
}

/// Views packed into a batch together: one view, or the views of one turn
/// that continue a prefix computed once for them.
#[derive(Clone)]
struct Item {
    views: std::ops::Range<usize>,
    prefix: Option<GroupPrefix>,
}

/// A turn's shared prompt prefix: its first `len` ids, of which the first
/// `from` are the precomputed prompt's.
#[derive(Clone, Copy)]
struct GroupPrefix {
    from: usize,
    len: usize,
}

impl Item {
    /// Tokens the forward pass computes for this item (at most: a
    /// cluster of the batch may compute its start once for several items).
    fn n_new(&self, views: &[&ViewTokens], prefix_ids: &[u32]) -> usize {
        let views = &views[self.views.clone()];
        match self.prefix {
            Some(p) => (p.len - p.from) + views.iter().map(|v| v.ids.len() - p.len).sum::<usize>(),
            None => views
                .iter()
                .map(|v| v.ids.len() - shared_len(prefix_ids, v))
                .sum(),
        }
    }
}

impl Side {
    /// `gpu`: run on this device in this precision (else on the CPU with `rt`).
    fn new(
        model: Arc<Model>,
        rt: &Runtime,
        gpu: Option<(&Arc<dyn Backend>, Precision)>,
    ) -> Result<Side> {
        let template = Arc::new(ChatTemplate::for_model(&model)?);
        let prompt = template.render_prompt("")?;
        let tok = &model.tokenizer;
        let prefix_ids = tok.encode(&prompt, tok.add_bos_default(), true)?;
        let n_end_of_turn = tok.encode(template.end_of_turn(), false, true)?.len();
        let compute = match gpu {
            Some((backend, precision)) => Compute::Gpu(Box::new(GpuSide::new(
                backend.clone(),
                &model,
                precision,
                &prefix_ids,
            )?)),
            None => {
                let mut prefix = model.new_cache(prefix_ids.len());
                model.forward(rt, std::slice::from_mut(&mut prefix), &[&prefix_ids])?;
                Compute::Cpu { prefix }
            }
        };
        Ok(Side {
            model,
            template,
            n_end_of_turn,
            prefix_ids,
            compute,
        })
    }

    /// Target log-probs of every view, in order. `groups[i]` names the turn
    /// view `i` belongs to; consecutive views of one turn share their common
    /// prompt prefix (a conversation's history) where it is longer than what
    /// they share with the scorer's precomputed prefix. A view repeated in
    /// `views` is computed once, and views with one prompt share it
    /// (`reuse`).
    fn run(
        &mut self,
        rt: &Runtime,
        views: &[&ViewTokens],
        groups: &[usize],
        batch_tokens: usize,
    ) -> Result<Vec<Vec<f64>>> {
        let plan = reuse::plan(views, groups, batch_tokens);
        let lps = self.run_distinct(rt, &plan.views, &plan.groups, batch_tokens)?;
        Ok(plan.spread(lps))
    }

    /// [`Side::run`] on planned views (no repeats, a group's views together).
    fn run_distinct(
        &mut self,
        rt: &Runtime,
        views: &[&ViewTokens],
        groups: &[usize],
        batch_tokens: usize,
    ) -> Result<Vec<Vec<f64>>> {
        if let Compute::Gpu(gpu) = &mut self.compute {
            let gv: Vec<GpuView> = views
                .iter()
                .map(|v| GpuView {
                    ids: &v.ids,
                    n_prompt: v.n_prompt,
                    shared: shared_len(&self.prefix_ids, v),
                })
                .collect();
            return gpu.run(&gv);
        }
        let (items, units) = cluster_order(views, self.items(views, groups), &self.prefix_ids);
        let sizes: Vec<usize> = items
            .iter()
            .map(|it| it.n_new(views, &self.prefix_ids))
            .collect();
        let Compute::Cpu { prefix } = &self.compute else {
            unreachable!("the GPU returned above")
        };
        let cpu = CpuSide {
            model: &self.model,
            prefix,
            prefix_ids: &self.prefix_ids,
        };
        // Back to the order of `views`: each item's results go to its views.
        let mut out: Vec<Option<Vec<f64>>> = vec![None; views.len()];
        let mut place = |ids: &mut dyn Iterator<Item = usize>, lps: Vec<Vec<f64>>| {
            let mut lps = lps.into_iter();
            for i in ids {
                for v in items[i].views.clone() {
                    out[v] = lps.next();
                }
            }
        };
        let n_lanes = lanes::n_lanes(rt.threads.n_threads(), sizes.iter().sum());
        if n_lanes == 1 {
            // The threads share each matmul of each batch.
            for b in lanes::batches(&sizes, batch_tokens) {
                let lps = cpu.run_batch(rt, views, &items[b.clone()])?;
                place(&mut b.into_iter(), lps);
            }
            return Ok(collect(out));
        }
        // One lane of views per thread, each on one thread end to end
        // (`lanes`); together they hold at most `batch_tokens` new tokens
        // at a time, as one batch would. A cluster's items stay in one lane,
        // in parts of at most half a lane's share, so the lanes still get
        // equal work (each part computes the shared prompt once).
        let limit = (batch_tokens / n_lanes).max(1);
        let cap = (sizes.iter().sum::<usize>() / (2 * n_lanes)).clamp(1, limit);
        let units: Vec<std::ops::Range<usize>> = units
            .into_iter()
            .flat_map(|u| {
                lanes::batches(&sizes[u.clone()], cap)
                    .into_iter()
                    .map(move |b| u.start + b.start..u.start + b.end)
            })
            .collect();
        let unit_sizes: Vec<usize> = units
            .iter()
            .map(|u| sizes[u.clone()].iter().sum())
            .collect();
        let dealt: Vec<Vec<usize>> = lanes::deal(&unit_sizes, n_lanes)
            .into_iter()
            .map(|lane| lane.into_iter().flat_map(|u| units[u].clone()).collect())
            .collect();
        let mut results: Vec<Option<Result<Vec<Vec<f64>>>>> = (0..n_lanes).map(|_| None).collect();
        rt.threads.for_each_mut(&mut results, |lane, result| {
            let serial = Runtime::new(1, rt.precision);
            let lane_items: Vec<Item> = dealt[lane].iter().map(|&i| items[i].clone()).collect();
            let lane_sizes: Vec<usize> = dealt[lane].iter().map(|&i| sizes[i]).collect();
            let run = || -> Result<Vec<Vec<f64>>> {
                let mut out = Vec::new();
                for b in lanes::batches(&lane_sizes, limit) {
                    out.extend(cpu.run_batch(&serial, views, &lane_items[b])?);
                }
                Ok(out)
            };
            *result = Some(run());
        });
        for (lane, result) in dealt.iter().zip(results) {
            place(&mut lane.iter().copied(), result.expect("every lane runs")?);
        }
        Ok(collect(out))
    }

    /// `views` cut into what is packed whole: a turn whose views share a
    /// prefix beyond the precomputed one, or a single view. A pair's views
    /// share nothing more (their common part is the system prompt), so they
    /// stay single views and pack exactly as they always have.
    fn items(&self, views: &[&ViewTokens], groups: &[usize]) -> Vec<Item> {
        let mut items = Vec::with_capacity(views.len());
        let mut a = 0;
        while a < views.len() {
            let mut b = a + 1;
            while b < views.len() && groups[b] == groups[a] {
                b += 1;
            }
            let group = &views[a..b];
            let lcp = group
                .iter()
                .map(|v| {
                    let same = v.ids.iter().zip(&group[0].ids).take_while(|(x, y)| x == y);
                    same.count().min(v.n_prompt.saturating_sub(1))
                })
                .min()
                .unwrap_or(0);
            let best_shared = group
                .iter()
                .map(|v| shared_len(&self.prefix_ids, v))
                .max()
                .unwrap_or(0);
            if b - a > 1 && lcp > best_shared {
                let from = group[0].ids[..lcp]
                    .iter()
                    .zip(&self.prefix_ids)
                    .take_while(|(x, y)| x == y)
                    .count();
                items.push(Item {
                    views: a..b,
                    prefix: Some(GroupPrefix { from, len: lcp }),
                });
            } else {
                items.extend((a..b).map(|i| Item {
                    views: i..i + 1,
                    prefix: None,
                }));
            }
            a = b;
        }
        items
    }

    fn pieces(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.model.tokenizer.piece(id))
            .collect()
    }
}

/// What a CPU forward pass of a side reads: shared by the lanes' threads
/// (the GPU state of a [`Side`] stays with its thread).
#[derive(Clone, Copy)]
struct CpuSide<'a> {
    model: &'a Model,
    /// The unconditional prompt's keys and values.
    prefix: &'a KvCache,
    prefix_ids: &'a [u32],
}

impl CpuSide<'_> {
    fn run_batch(
        &self,
        rt: &Runtime,
        all: &[&ViewTokens],
        items: &[Item],
    ) -> Result<Vec<Vec<f64>>> {
        let d = self.model.config.d_model;
        let prefix = self.prefix;
        // Long prompts that several items start with (a conversation's
        // system message, a data set's system prompt), computed once from
        // the precomputed prompt; their outputs are not needed, only their
        // keys and values.
        let starts = starts(all, items, self.prefix_ids);
        let clusters = clusters::clusters(&starts);
        let mut cluster_caches: Vec<KvCache> = clusters
            .iter()
            .map(|c| KvCache::from_prefix(prefix, c.from, c.len))
            .collect();
        if !clusters.is_empty() {
            let tokens: Vec<&[u32]> = clusters
                .iter()
                .map(|c| &starts[c.items[0]].ids[c.from..c.len])
                .collect();
            self.model.forward(rt, &mut cluster_caches, &tokens)?;
        }
        let mut cluster_of = vec![None; items.len()];
        for (k, c) in clusters.iter().enumerate() {
            for &i in &c.items {
                cluster_of[i] = Some(k);
            }
        }
        // Where item `i` continues from: its cluster, else the precomputed
        // prompt, and how many positions it takes from there.
        let source = |i: usize| -> (&KvCache, usize) {
            match cluster_of[i] {
                Some(k) => (&cluster_caches[k], clusters[k].len),
                None => (prefix, starts[i].covered),
            }
        };

        // The shared prefixes of this batch's turns next, each continued
        // from its source (where that covers all of it, the turn's views
        // continue from the source itself).
        let grouped: Vec<(usize, GroupPrefix)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| it.prefix.map(|p| (i, p)))
            .filter(|&(i, p)| source(i).1 < p.len)
            .collect();
        let mut group_caches: Vec<KvCache> = grouped
            .iter()
            .map(|&(i, p)| {
                let (src, s) = source(i);
                KvCache::from_prefix(src, s, p.len)
            })
            .collect();
        if !grouped.is_empty() {
            let tokens: Vec<&[u32]> = grouped
                .iter()
                .map(|&(i, p)| &starts[i].ids[source(i).1..p.len])
                .collect();
            self.model.forward(rt, &mut group_caches, &tokens)?;
        }
        let mut group_of = vec![None; items.len()];
        for (g, &(i, _)) in grouped.iter().enumerate() {
            group_of[i] = Some(g);
        }

        // Each view: the cache it continues and how many positions it takes from it.
        let mut views: Vec<&ViewTokens> = Vec::new();
        let mut shared: Vec<usize> = Vec::new();
        let mut caches: Vec<KvCache> = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let from = match (group_of[i], it.prefix) {
                (Some(g), Some(p)) => (&group_caches[g], p.len),
                _ => source(i),
            };
            for v in &all[it.views.clone()] {
                // A lone view outside any cluster takes what it shares
                // with the precomputed prompt (its `covered`); the views
                // of a turn whose history the source covers take all of it.
                let (src, s) = from;
                views.push(v);
                shared.push(s);
                caches.push(KvCache::from_prefix(src, s, v.ids.len()));
            }
        }
        drop(group_caches);
        drop(cluster_caches);
        let new_tokens: Vec<&[u32]> = views
            .iter()
            .zip(&shared)
            .map(|(v, &s)| &v.ids[s..])
            .collect();
        let hidden = self.model.forward(rt, &mut caches, &new_tokens)?;
        drop(caches);

        // Rows whose next token is a target: positions n_prompt-1 ..= len-2.
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        let mut base = 0;
        for (v, &s) in views.iter().zip(&shared) {
            for p in v.n_prompt - 1..v.ids.len() - 1 {
                let r = base + p - s;
                rows.extend_from_slice(&hidden[r * d..(r + 1) * d]);
                targets.push(v.ids[p + 1]);
            }
            base += v.ids.len() - s;
        }
        drop(hidden);
        let lps = head_logprobs(&self.model.output_weight(), rt, &rows, &targets);
        Ok(crate::logprob::split_runs(
            &lps,
            views.iter().map(|v| v.ids.len() - v.n_prompt),
        ))
    }
}

/// Every view's results, once each has them.
fn collect(out: Vec<Option<Vec<f64>>>) -> Vec<Vec<f64>> {
    out.into_iter()
        .map(|lp| lp.expect("every view is in one batch"))
        .collect()
}

/// Where each item starts (`clusters::Start`): a turn's shared history, or a
/// lone view's prompt but its last token.
fn starts<'a>(all: &[&'a ViewTokens], items: &[Item], prefix_ids: &[u32]) -> Vec<Start<'a>> {
    items
        .iter()
        .map(|it| match it.prefix {
            Some(p) => Start {
                ids: &all[it.views.start].ids[..p.len],
                covered: p.from,
            },
            None => {
                let v = all[it.views.start];
                Start {
                    ids: &v.ids[..v.n_prompt.saturating_sub(1)],
                    covered: shared_len(prefix_ids, v),
                }
            }
        })
        .collect()
}

/// `items` reordered so that the items of each cluster (`clusters`) are
/// next to each other, and the units they are dealt to lanes and cut into
/// batches by: a cluster's items, or one item. Without it a cluster's items
/// would land in different lanes and batches, and share nothing.
fn cluster_order(
    all: &[&ViewTokens],
    items: Vec<Item>,
    prefix_ids: &[u32],
) -> (Vec<Item>, Vec<std::ops::Range<usize>>) {
    let clusters = clusters::clusters(&starts(all, &items, prefix_ids));
    let mut first_of = vec![None; items.len()];
    let mut member = vec![false; items.len()];
    for (k, c) in clusters.iter().enumerate() {
        first_of[c.items[0]] = Some(k);
        for &i in &c.items {
            member[i] = true;
        }
    }
    // Each cluster where its first item was, the other items in order.
    let mut order = Vec::with_capacity(items.len());
    let mut units = Vec::new();
    for i in 0..items.len() {
        let start = order.len();
        match first_of[i] {
            Some(k) => order.extend(&clusters[k].items),
            None if !member[i] => order.push(i),
            None => continue,
        }
        units.push(start..order.len());
    }
    let mut slots: Vec<Option<Item>> = items.into_iter().map(Some).collect();
    let items = order
        .iter()
        .map(|&i| slots[i].take().expect("each item once"))
        .collect();
    (items, units)
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
