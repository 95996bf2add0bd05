//! The differentiable alignment loss (issue 6 §5), for one model that
//! serves both directions.
//!
//! For a batch of `K` pairs `(x_i, y_i)`, with `lp(t | c)` the mean
//! log-probability of target `t` after prompt content `c` (DESIGN.md §2):
//! - `s_ij = lp(y_j | x_i)` (forward views), `r_ij = lp(x_i | REVERSE(y_j))`
//!   (reverse views), `u_i = lp(y_i | "")`, `w_i = lp(x_i | "")`;
//! - contrastive (InfoNCE, both directions):
//!   `mean_i [logsumexp_j s_ij - s_ii] + mean_j [logsumexp_i r_ij - r_jj]`;
//! - consistency: `mean_i (fwd_pmi_i - rev_pmi_i)^2` with
//!   `fwd_pmi_i = s_ii - u_i`, `rev_pmi_i = r_ii - w_i`.

use candle_core::Tensor;
use main_engine::score::Pair;
use main_engine::views::{build_view, reverse_content};

use crate::error::{CandleExt, Error, Result};
use crate::model::{Batch, TrainModel};

pub struct AlignTerms {
    /// Scalar InfoNCE loss (both directions), in nats.
    pub contrastive: Tensor,
    /// Scalar squared PMI gap, in nats².
    pub consistency: Tensor,
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

fn diag(m: &Tensor, k: usize) -> Result<Tensor> {
    let idx: Vec<u32> = (0..k).map(|i| (i * k + i) as u32).collect();
    let idx = Tensor::from_vec(idx, k, m.device()).op("diag")?;
    m.flatten_all()
        .and_then(|f| f.index_select(&idx, 0))
        .op("diag")
}

pub fn align_terms(model: &TrainModel, pairs: &[&Pair], max_tokens: usize) -> Result<AlignTerms> {
    let k = pairs.len();
    if k < 2 {
        return Err(Error::invalid(
            "align-loss batch",
            format!("needs at least 2 pairs for in-batch negatives, got {k}"),
        ));
    }
    let (tok, tpl) = (model.tokenizer(), &model.template);
    let mut views = Vec::with_capacity(2 * k * k + 2 * k);
    for xi in pairs {
        for yj in pairs {
            views.push(build_view(
                tok,
                tpl,
                &xi.instruction,
                &yj.response,
                max_tokens,
            )?);
        }
    }
    for xi in pairs {
        for yj in pairs {
            views.push(build_view(
                tok,
                tpl,
                &reverse_content(&yj.response),
                &xi.instruction,
                max_tokens,
            )?);
        }
    }
    for p in pairs {
        views.push(build_view(tok, tpl, "", &p.response, max_tokens)?);
    }
    for p in pairs {
        views.push(build_view(tok, tpl, "", &p.instruction, max_tokens)?);
    }
    let seqs: Vec<(&[u32], usize)> = views.iter().map(|v| (&v.ids[..], v.n_prompt)).collect();
    let batch = Batch::new(&seqs, &model.device)?;
    let means = sequence_means(model, &batch)?;
    let part = |start: usize, len: usize| means.narrow(0, start, len).op("align split");
    let s = part(0, k * k)?.reshape((k, k)).op("align s")?;
    let r = part(k * k, k * k)?.reshape((k, k)).op("align r")?;
    let u = part(2 * k * k, k)?;
    let w = part(2 * k * k + k, k)?;
    let (s_diag, r_diag) = (diag(&s, k)?, diag(&r, k)?);
    let nce_fwd = (logsumexp(&s, 1)? - &s_diag)
        .and_then(|x| x.mean_all())
        .op("InfoNCE forward")?;
    // Reverse: for response j, its instruction among all instructions i.
    let nce_rev = (logsumexp(&r, 0)? - &r_diag)
        .and_then(|x| x.mean_all())
        .op("InfoNCE reverse")?;
    let fwd_pmi = (&s_diag - u).op("fwd pmi")?;
    let rev_pmi = (&r_diag - w).op("rev pmi")?;
    let consistency = (fwd_pmi - rev_pmi)
        .and_then(|d| d.sqr())
        .and_then(|d| d.mean_all())
        .op("consistency")?;
    Ok(AlignTerms {
        contrastive: (nce_fwd + nce_rev).op("InfoNCE")?,
        consistency,
    })
}

/// `λ1 * contrastive + λ2 * consistency`.
pub fn align_loss(
    model: &TrainModel,
    pairs: &[&Pair],
    max_tokens: usize,
    lambda_contrastive: f64,
    lambda_consistency: f64,
) -> Result<Tensor> {
    let t = align_terms(model, pairs, max_tokens)?;
    ((t.contrastive * lambda_contrastive).op("align")?
        + (t.consistency * lambda_consistency).op("align")?)
    .op("align")
}
