//! One model on one side of the scorer (forward, or reverse) and how it
//! runs a list of views: the precomputed unconditional prompt, views cut
//! into items (a lone view, or a turn's views sharing its history), items
//! dealt to lanes and packed into batches, and each CPU batch's forward
//! pass from the prefixes it continues.

use std::sync::Arc;

use super::{clusters, reuse};
use crate::cuda::backend::Backend;
use crate::cuda::{GpuSide, GpuView};
use crate::error::Result;
use crate::lanes;
use crate::logprob::head_logprobs;
use crate::matmul::Precision;
use crate::model::{KvCache, Model, Runtime};
use crate::template::ChatTemplate;
use crate::views::ViewTokens;

/// How many leading tokens of a view the precomputed prefix covers. The
/// last prompt token is always recomputed: its hidden state predicts the
/// first target.
pub(super) fn shared_len(prefix_ids: &[u32], v: &ViewTokens) -> usize {
    let lcp = v
        .ids
        .iter()
        .zip(prefix_ids)
        .take_while(|(a, b)| a == b)
        .count();
    lcp.min(v.n_prompt.saturating_sub(1))
}

/// One model with what the scorer precomputes for it.
pub(super) struct Side {
    pub(super) model: Arc<Model>,
    pub(super) template: Arc<ChatTemplate>,
    /// Tokens of the end-of-turn marker that closes every target.
    pub(super) n_end_of_turn: usize,
    /// The unconditional prompt, shared by every view.
    pub(super) prefix_ids: Vec<u32>,
    pub(super) compute: Compute,
}

/// Where a side's forward passes run, with the prefix's keys and values there.
pub(super) enum Compute {
    Cpu { prefix: KvCache },
    Gpu(Box<GpuSide>),
}

/// Views packed into a batch together: one view, or the views of one turn
/// that continue a prefix computed once for them.
#[derive(Clone)]
pub(super) struct Item {
    pub(super) views: std::ops::Range<usize>,
    pub(super) prefix: Option<GroupPrefix>,
}

/// A turn's shared prompt prefix: its first `len` ids, of which the first
/// `from` are the precomputed prompt's.
#[derive(Clone, Copy)]
pub(super) struct GroupPrefix {
    pub(super) from: usize,
    pub(super) len: usize,
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
    pub(super) fn new(
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
    pub(super) fn run(
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
        let (items, units) =
            clusters::cluster_order(views, self.items(views, groups), &self.prefix_ids);
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

    pub(super) fn pieces(&self, ids: &[u32]) -> Vec<String> {
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
        // keys and values. Found again for this batch's items: a batch may
        // hold a part of a cluster `run_distinct` ordered, or several
        // (sorting a batch's starts costs nothing next to its forward pass).
        let starts = clusters::starts(all, items, self.prefix_ids);
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
