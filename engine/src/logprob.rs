//! The fused LM head: log p(target | context) for chosen positions only.
//!
//! The output matrix is applied in vocabulary chunks; each chunk's logits
//! update a running max and sum (online log-sum-exp) and the target's logit is
//! picked out, so no `(positions, vocab)` array of logits is ever stored.

use crate::kernels::softmax::max_and_sum_exp;
use crate::matmul::{matmul, matmul_input, QuantizedInput, Weight};
use crate::model::{Model, Runtime};

/// Vocabulary rows per chunk: big enough to keep all threads busy, small
/// enough that `(positions, chunk)` logits stay in cache-friendly sizes.
pub const VOCAB_CHUNK: usize = 4096;

/// Log-probabilities (nats) of `targets[i]` given the final hidden state
/// `hidden[i]` (`(n, d)`, already normed), for every `i`.
pub fn target_logprobs(model: &Model, rt: &Runtime, hidden: &[f32], targets: &[u32]) -> Vec<f64> {
    let head = model.output_weight();
    head_logprobs(&head, rt, hidden, targets)
}

/// The same for any output matrix `(vocab, d)`.
pub fn head_logprobs(head: &Weight, rt: &Runtime, hidden: &[f32], targets: &[u32]) -> Vec<f64> {
    let (d, vocab) = (head.n_in, head.n_out);
    let n = targets.len();
    assert_eq!(
        hidden.len(),
        n * d,
        "head_logprobs: hidden has the wrong length"
    );
    // Per target row: running max and sum of the log-sum-exp, and its logit.
    let mut rows = vec![(f64::NEG_INFINITY, 0f64, f64::NAN); n];
    let mut logits = vec![0f32; n * VOCAB_CHUNK.min(vocab)];
    // Quantized once, read by every chunk of the head.
    let mut input = QuantizedInput::new(rt.precision, hidden, n);
    let mut start = 0;
    while start < vocab {
        let end = (start + VOCAB_CHUNK).min(vocab);
        let width = end - start;
        let chunk = &mut logits[..n * width];
        matmul_input(&rt.threads, &head.rows(start, end), &mut input, chunk);
        let chunk = &*chunk;
        rt.threads.for_each_mut(&mut rows, |i, (max, sum, target)| {
            let row = &chunk[i * width..(i + 1) * width];
            let (chunk_max, chunk_sum) = max_and_sum_exp(row);
            let new_max = max.max(chunk_max as f64);
            *sum = *sum * (*max - new_max).exp()
                + chunk_sum as f64 * (chunk_max as f64 - new_max).exp();
            *max = new_max;
            let t = targets[i] as usize;
            if (start..end).contains(&t) {
                *target = row[t - start] as f64;
            }
        });
        start = end;
    }
    rows.into_iter()
        .map(|(max, sum, target)| target - max - sum.ln())
        .collect()
}

/// Full logits of one hidden state `(d)`, for sampling.
pub fn logits(model: &Model, rt: &Runtime, hidden: &[f32]) -> Vec<f32> {
    let head = model.output_weight();
    let mut out = vec![0f32; head.n_out];
    matmul(&rt.threads, rt.precision, &head, hidden, 1, &mut out);
    out
}

/// Tokens per forward call when scoring one long text: bounds activation
/// memory whatever the text length.
pub const TEXT_CHUNK: usize = 512;

/// `out[i] = log p(ids[i] | ids[..i])` for `i >= 1` (`out[0]` is `None`: the
/// first token has no context).
pub fn sequence_logprobs(
    model: &Model,
    rt: &Runtime,
    ids: &[u32],
) -> crate::Result<Vec<Option<f64>>> {
    model.check_tokens(ids)?;
    let mut out = Vec::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    out.push(None);
    let mut cache = model.new_cache(ids.len());
    let d = model.config.d_model;
    for start in (0..ids.len()).step_by(TEXT_CHUNK) {
        let end = (start + TEXT_CHUNK).min(ids.len());
        let hidden = model.forward(rt, std::slice::from_mut(&mut cache), &[&ids[start..end]])?;
        // Position p predicts ids[p + 1]; the text's last position predicts nothing.
        let n_pred = end.min(ids.len() - 1) - start;
        if n_pred > 0 {
            let lps = target_logprobs(
                model,
                rt,
                &hidden[..n_pred * d],
                &ids[start + 1..start + 1 + n_pred],
            );
            out.extend(lps.into_iter().map(Some));
        }
    }
    Ok(out)
}

/// `values` cut into consecutive runs of the given lengths (the target
/// log-probs of a packed batch, back to one vector per view).
pub fn split_runs(values: &[f64], lengths: impl Iterator<Item = usize>) -> Vec<Vec<f64>> {
    let mut at = 0;
    lengths
        .map(|n| {
            let run = values[at..at + n].to_vec();
            at += n;
            run
        })
        .collect()
}

/// exp of the mean negative log-prob over the scored tokens.
pub fn perplexity(logprobs: &[Option<f64>]) -> f64 {
    let scored: Vec<f64> = logprobs.iter().flatten().copied().collect();
    if scored.is_empty() {
        return f64::NAN;
    }
    (-scored.iter().sum::<f64>() / scored.len() as f64).exp()
}
