//! The differentiable alignment loss (issue 6 §5, issue 20 item 4) for the
//! model of one direction, at a cost linear in the batch.
//!
//! A direction has an anchor and a target per pair: forward, the anchor is
//! the instruction `x_i` and the target the response `y_i`; reverse, the
//! anchor is the response (`REVERSE(y_i)`, DESIGN.md §2) and the target the
//! instruction `x_i`. With `lp(t | c)` the mean log-probability of target
//! `t` after prompt content `c`, the model of the direction scores only its
//! own views: `s_ij = lp(target_j | anchor_i)` and `u_i = lp(target_i | "")`.
//! The forward model never sees a reverse view, nor the reverse model a
//! forward one.
//!
//! For a micro-batch of `K` pairs with weights `w_i`:
//! - contrastive, sampled InfoNCE: each pair `i` is scored against `M`
//!   negatives `N_i`, other pairs of the micro-batch drawn without
//!   replacement by a seeded generator (`M = min(negatives, K - 1)`):
//!   `l_i = logsumexp_{j in {i} + N_i} s_ij - s_ii`, and the term is
//!   `sum_i w_i l_i / K`. At `M = K - 1` it is exactly the full in-batch
//!   InfoNCE loss. With `M + 1` candidates, `ln(M + 1) - l_i` is a lower
//!   bound on the mutual information between anchor and target (in nats;
//!   van den Oord et al. 2018, Poole et al. 2019), which can never exceed
//!   `ln(M + 1)`; for every `M` the loss is minimised by the same critic,
//!   `s_ij = log p(target_j | anchor_i) / p(target_j) + c(anchor_i)` (the
//!   pointwise mutual information up to a per-anchor constant), so the
//!   sampled loss trains toward the PMI the scorer reads, with a looser
//!   bound and more variance than the full one. For `M < K - 1` it is not
//!   an unbiased estimate of the full in-batch loss (a log-sum-exp over a
//!   subset; Jensen): it is the InfoNCE loss of `M + 1` candidates.
//! - consistency: this direction's PMI of pair `i`, `pmi_i = s_ii - u_i`,
//!   is pulled toward the other direction's PMI of the same pair as last
//!   scored (`t_i`, a constant: the `alignment.rev_pmi` of a scored record
//!   for the forward model, `alignment.fwd_pmi` for the reverse model):
//!   `sum_{i with t_i} w_i (pmi_i - t_i)^2 / K`. A pair without a score
//!   adds nothing to this term; the other direction's views are never run.
//!
//! Sequences per micro-batch: `K (M + 1)` conditional views plus one
//! unconditional view per pair with a consistency target, at most
//! `K (M + 2)`: linear in `K` for a fixed `M` (the one-model version built
//! `2K^2 + 2K`). Dividing by `K`, the micro-batch's pair count (the run's
//! `batch_size`, unweighted), keeps a weight's pull the same whatever the
//! other pairs weigh, as the LM loss does (`sft::loss_normaliser`).

use candle_core::Tensor;
use main_engine::score::Pair;
use main_engine::views::{build_view, reverse_content, ViewTokens};

use crate::data::{Direction, Rng};
use crate::error::{CandleExt, Error, Result};
use crate::model::{Batch, TrainModel};

/// The default number of sampled negatives per pair (`[train]
/// align_negatives`): at the default `batch_size` of 4 every other pair of
/// the micro-batch, so the loss is the full in-batch one; at larger batches
/// 3 negatives keep `K x 5` sequences per micro-batch.
pub const DEFAULT_NEGATIVES: usize = 3;

/// One pair of the micro-batch as the loss sees it.
#[derive(Clone, Copy, Debug)]
pub struct AlignPair<'a> {
    pub pair: &'a Pair,
    /// The pair's loss weight.
    pub weight: f64,
    /// The other direction's PMI of this pair as last scored (nats), the
    /// consistency term's target; `None`: no consistency term for the pair.
    pub target_pmi: Option<f64>,
}

pub struct AlignTerms {
    /// Scalar weighted sampled InfoNCE loss, in nats.
    pub contrastive: Tensor,
    /// Scalar weighted squared PMI gap, in nats².
    pub consistency: Tensor,
    /// The negatives each pair was scored against (indices into the batch).
    pub negatives: Vec<Vec<usize>>,
    /// Sequences run through the model.
    pub n_sequences: usize,
}

/// Mean target log-prob of each sequence: `(n_seq)`.
pub fn sequence_means(model: &TrainModel, batch: &Batch) -> Result<Tensor> {
    let lp = model.target_logprobs(batch)?;
    let n = batch.n_targets();
    let mut counts = vec![0usize; batch.n_seq];
    for &s in &batch.target_seq {
        counts[s] += 1;
    }
    // (n_seq, N) averaging matrix.
    let mut avg = vec![0f64; batch.n_seq * n];
    for (t, &s) in batch.target_seq.iter().enumerate() {
        avg[s * n + t] = 1.0 / counts[s] as f64;
    }
    let avg = Tensor::from_vec(avg, (batch.n_seq, n), &model.device)
        .and_then(|a| a.to_dtype(lp.dtype()))
        .op("sequence means")?;
    avg.matmul(&lp.unsqueeze(1).op("sequence means")?)
        .and_then(|m| m.squeeze(1))
        .op("sequence means")
}

fn logsumexp(x: &Tensor, dim: usize) -> Result<Tensor> {
    let max = x.max_keepdim(dim).op("logsumexp")?.detach();
    x.broadcast_sub(&max)
        .and_then(|y| y.exp())
        .and_then(|y| y.sum_keepdim(dim))
        .and_then(|y| y.log())
        .and_then(|y| y + max)
        .and_then(|y| y.squeeze(dim))
        .op("logsumexp")
}

/// `M` negatives for each of `k` pairs: every other pair in order when
/// `negatives >= k - 1`, else `negatives` of them drawn without replacement
/// (a partial Fisher-Yates) from one generator seeded by `seed`, pair by
/// pair, so the same seed gives the same draw on any machine and after any
/// resume.
pub fn sample_negatives(k: usize, negatives: usize, seed: u64) -> Vec<Vec<usize>> {
    let m = negatives.min(k.saturating_sub(1));
    let mut rng = Rng(seed ^ 0x6e65_6761_7469_7665);
    (0..k)
        .map(|i| {
            let mut others: Vec<usize> = (0..k).filter(|&j| j != i).collect();
            if m < others.len() {
                for a in 0..m {
                    let b = a + (rng.next_u64() % (others.len() - a) as u64) as usize;
                    others.swap(a, b);
                }
                others.truncate(m);
            }
            others
        })
        .collect()
}

/// The view of `target_j` after `anchor_i` in `direction` (forward: the
/// training sequence of pair `i` when `i == j`, the scorer's `fwd_cond`
/// view; reverse: the scorer's `rev_cond` view).
fn view(
    model: &TrainModel,
    direction: Direction,
    anchor: &Pair,
    target: &Pair,
    max_tokens: usize,
) -> Result<ViewTokens> {
    let (tok, tpl) = (model.tokenizer(), &model.template);
    Ok(match direction {
        Direction::Forward => {
            build_view(tok, tpl, &anchor.instruction, &target.response, max_tokens)?
        }
        Direction::Reverse => build_view(
            tok,
            tpl,
            &reverse_content(&anchor.response),
            &target.instruction,
            max_tokens,
        )?,
    })
}

/// The unconditional view of pair `p`'s target in `direction`.
fn unconditional(
    model: &TrainModel,
    direction: Direction,
    p: &Pair,
    max_tokens: usize,
) -> Result<ViewTokens> {
    let target = match direction {
        Direction::Forward => &p.response,
        Direction::Reverse => &p.instruction,
    };
    Ok(build_view(
        model.tokenizer(),
        &model.template,
        "",
        target,
        max_tokens,
    )?)
}

/// The sequences the loss runs for `pairs` in `direction`, negatives drawn
/// with `seed`: per pair its positive then its negatives (`K (M + 1)`),
/// then the unconditional view of each pair with a consistency target; and
/// the negatives drawn.
pub fn align_views(
    model: &TrainModel,
    direction: Direction,
    pairs: &[AlignPair],
    max_tokens: usize,
    negatives: usize,
    seed: u64,
) -> Result<(Vec<ViewTokens>, Vec<Vec<usize>>)> {
    let k = pairs.len();
    if k < 2 {
        return Err(Error::invalid(
            "align-loss batch",
            format!("needs at least 2 pairs for in-batch negatives, got {k}"),
        ));
    }
    if negatives == 0 {
        return Err(Error::invalid(
            "align_negatives",
            "must be at least 1 (the contrastive term needs a negative)",
        ));
    }
    for (i, p) in pairs.iter().enumerate() {
        if !(p.weight >= 0.0 && p.weight.is_finite()) {
            return Err(Error::invalid(
                "align-loss batch",
                format!("pair {i}: weight {} (must be a number >= 0)", p.weight),
            ));
        }
    }
    let negs = sample_negatives(k, negatives, seed);
    let m = negs[0].len();
    // Row i: the positive, then its negatives.
    let mut views = Vec::with_capacity(k * (m + 2));
    for (i, n_i) in negs.iter().enumerate() {
        views.push(view(
            model,
            direction,
            pairs[i].pair,
            pairs[i].pair,
            max_tokens,
        )?);
        for &j in n_i {
            views.push(view(
                model,
                direction,
                pairs[i].pair,
                pairs[j].pair,
                max_tokens,
            )?);
        }
    }
    for p in pairs.iter().filter(|p| p.target_pmi.is_some()) {
        views.push(unconditional(model, direction, p.pair, max_tokens)?);
    }
    Ok((views, negs))
}

/// The two terms for `pairs` in `direction`, negatives drawn with `seed`.
pub fn align_terms(
    model: &TrainModel,
    direction: Direction,
    pairs: &[AlignPair],
    max_tokens: usize,
    negatives: usize,
    seed: u64,
) -> Result<AlignTerms> {
    let k = pairs.len();
    let (views, negs) = align_views(model, direction, pairs, max_tokens, negatives, seed)?;
    let m = negs[0].len();
    let with_target: Vec<usize> = (0..k).filter(|&i| pairs[i].target_pmi.is_some()).collect();
    let seqs: Vec<(&[u32], usize)> = views.iter().map(|v| (&v.ids[..], v.n_prompt)).collect();
    let batch = Batch::new(&seqs, &model.device)?;
    let means = sequence_means(model, &batch)?;
    let dtype = means.dtype();
    let dev = &model.device;
    let consts = |v: Vec<f64>, what: &str| {
        let n = v.len();
        Tensor::from_vec(v, n, dev)
            .and_then(|t| t.to_dtype(dtype))
            .op(what)
    };
    // (K, M + 1), column 0 the positive.
    let s = means
        .narrow(0, 0, k * (m + 1))
        .and_then(|x| x.reshape((k, m + 1)))
        .op("align scores")?;
    let s_pos = s
        .narrow(1, 0, 1)
        .and_then(|x| x.squeeze(1))
        .and_then(|x| x.contiguous())
        .op("positives")?;
    let w = consts(
        pairs.iter().map(|p| p.weight / k as f64).collect(),
        "align weights",
    )?;
    let contrastive = (logsumexp(&s, 1)? - &s_pos)
        .and_then(|l| l * &w)
        .and_then(|l| l.sum_all())
        .op("sampled InfoNCE")?;
    let consistency = if with_target.is_empty() {
        Tensor::new(0f64, dev)
            .and_then(|z| z.to_dtype(dtype))
            .op("consistency")?
    } else {
        let n = with_target.len();
        let idx: Vec<u32> = with_target.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, n, dev).op("consistency")?;
        let u = means.narrow(0, k * (m + 1), n).op("unconditional")?;
        let pmi =
            (s_pos.index_select(&idx, 0).op("consistency")? - u).op("this direction's PMI")?;
        let t = consts(
            with_target
                .iter()
                .map(|&i| pairs[i].target_pmi.unwrap_or_default())
                .collect(),
            "consistency targets",
        )?;
        let wt = consts(
            with_target
                .iter()
                .map(|&i| pairs[i].weight / k as f64)
                .collect(),
            "consistency weights",
        )?;
        (pmi - t)
            .and_then(|d| d.sqr())
            .and_then(|d| d * wt)
            .and_then(|d| d.sum_all())
            .op("consistency")?
    };
    Ok(AlignTerms {
        contrastive,
        consistency,
        negatives: negs,
        n_sequences: views.len(),
    })
}

/// `λ1 * contrastive + λ2 * consistency`.
#[allow(clippy::too_many_arguments)]
pub fn align_loss(
    model: &TrainModel,
    direction: Direction,
    pairs: &[AlignPair],
    max_tokens: usize,
    negatives: usize,
    seed: u64,
    lambda_contrastive: f64,
    lambda_consistency: f64,
) -> Result<Tensor> {
    let t = align_terms(model, direction, pairs, max_tokens, negatives, seed)?;
    ((t.contrastive * lambda_contrastive).op("align")?
        + (t.consistency * lambda_consistency).op("align")?)
    .op("align")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negatives_are_distinct_others_and_seeded() {
        for k in 2..10 {
            for m in 1..k + 2 {
                let n = sample_negatives(k, m, 7);
                assert_eq!(n.len(), k);
                for (i, n_i) in n.iter().enumerate() {
                    assert_eq!(n_i.len(), m.min(k - 1));
                    assert!(!n_i.contains(&i));
                    let set: std::collections::BTreeSet<_> = n_i.iter().collect();
                    assert_eq!(set.len(), n_i.len());
                    assert!(n_i.iter().all(|&j| j < k));
                }
                assert_eq!(n, sample_negatives(k, m, 7));
            }
        }
        // The full set, in order, at M >= K - 1; a draw otherwise.
        assert_eq!(
            sample_negatives(3, 5, 1),
            [vec![1, 2], vec![0, 2], vec![0, 1]]
        );
        assert_ne!(sample_negatives(16, 3, 1), sample_negatives(16, 3, 2));
    }
}
