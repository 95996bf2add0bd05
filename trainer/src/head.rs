//! The LM head and cross-entropy over the target rows only, in row chunks x
//! vocabulary chunks, forward and backward written by hand: never a
//! `[tokens x vocab]` tensor, a workspace of `rows_chunk x vocab_chunk`.
//!
//! Loss: `sum_r w_r (lse_r - logit_r[target_r])` with `lse` the log-sum-exp
//! of row `r`'s logits, so `dloss/dlogits = w_r (softmax_r - onehot_r)`.
//! Statistics in f32 (f64 when the inputs are f64); the matmuls in the
//! inputs' dtype, as the whole-graph head does.

use candle_core::{DType, Tensor, D};

use crate::error::{CandleExt, Result};

/// Chunk sizes of the head.
#[derive(Clone, Copy, Debug)]
pub struct HeadChunks {
    pub rows: usize,
    pub vocab: usize,
}

impl Default for HeadChunks {
    fn default() -> Self {
        HeadChunks {
            rows: 1024,
            vocab: 8192,
        }
    }
}

/// The loss and the gradients on `h` and on the head weight.
pub struct HeadGrads {
    pub loss: f64,
    /// (M, d) in the stat dtype.
    pub grad_h: Tensor,
    /// (V, d) in the stat dtype.
    pub grad_w: Tensor,
}

fn stat_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// `(M)` log-sum-exp of each row of `h @ w^T` by an online max / sum-exp
/// over vocabulary chunks. `h` (M, d), `w` (V, d), same dtype.
fn logsumexp(h: &Tensor, w: &Tensor, chunks: HeadChunks) -> Result<Tensor> {
    let (m, _) = h.dims2().op("head h")?;
    let (v, _) = w.dims2().op("head weight")?;
    let st = stat_dtype(h.dtype());
    let mut out = Vec::new();
    for r0 in (0..m).step_by(chunks.rows.max(1)) {
        let hr = h.narrow(0, r0, chunks.rows.min(m - r0)).op("head rows")?;
        let (mut mx, mut s): (Option<Tensor>, Option<Tensor>) = (None, None);
        for c0 in (0..v).step_by(chunks.vocab.max(1)) {
            let wc = w.narrow(0, c0, chunks.vocab.min(v - c0)).op("head chunk")?;
            // (rows, vocab chunk)
            let logits = hr
                .matmul(&wc.t().op("head")?)
                .and_then(|l| l.to_dtype(st))
                .op("head logits")?;
            let cmax = logits.max_keepdim(D::Minus1).op("head max")?;
            let new_max = match &mx {
                None => cmax,
                Some(m) => m.maximum(&cmax).op("head max")?,
            };
            let e = logits
                .broadcast_sub(&new_max)
                .and_then(|x| x.exp())
                .and_then(|x| x.sum_keepdim(D::Minus1))
                .op("head sum-exp")?;
            s = Some(match (s, &mx) {
                (Some(s), Some(m)) => {
                    let rescale = (m - &new_max).and_then(|x| x.exp()).op("head rescale")?;
                    ((s * rescale).op("head")? + e).op("head")?
                }
                _ => e,
            });
            mx = Some(new_max);
        }
        let (mx, s) = (mx.expect("vocabulary not empty"), s.expect("vocabulary"));
        out.push((s.log().op("head lse")? + mx).op("head lse")?);
    }
    Tensor::cat(&out, 0)
        .and_then(|x| x.squeeze(1))
        .op("head lse")
}

/// `(M)` logits of the targets: row `r` of `h` dotted with row `targets[r]` of `w`.
fn target_logits(h: &Tensor, w: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let st = stat_dtype(h.dtype());
    let wt = w.index_select(targets, 0).op("head target rows")?;
    (h.to_dtype(st).op("head")? * wt.to_dtype(st).op("head")?)
        .and_then(|x| x.sum(D::Minus1))
        .op("head target logits")
}

/// `sum_r weights[r] * nll_r` of `h` (M, d) against `targets` (M, u32):
/// the forward only (eval).
pub fn loss(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    weights: &[f64],
    chunks: HeadChunks,
) -> Result<f64> {
    let nll = nll(h, w, targets, chunks)?;
    Ok(nll.iter().zip(weights).map(|(n, w)| n * w).sum())
}

/// `(M)` negative log-probability of each target.
pub fn nll(h: &Tensor, w: &Tensor, targets: &Tensor, chunks: HeadChunks) -> Result<Vec<f64>> {
    let lse = logsumexp(h, w, chunks)?;
    let t = target_logits(h, w, targets)?;
    (lse - t)
        .and_then(|x| x.to_dtype(DType::F64))
        .and_then(|x| x.to_vec1::<f64>())
        .op("head nll")
}

/// The loss `sum_r weights[r] * nll_r` and its gradients on `h` and `w`.
pub fn loss_and_grads(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    weights: &[f64],
    chunks: HeadChunks,
) -> Result<HeadGrads> {
    let (m, d) = h.dims2().op("head h")?;
    let (v, _) = w.dims2().op("head weight")?;
    let st = stat_dtype(h.dtype());
    let dev = h.device();
    let lse = logsumexp(h, w, chunks)?;
    let t = target_logits(h, w, targets)?;
    let nll: Vec<f64> = (&lse - t)
        .and_then(|x| x.to_dtype(DType::F64))
        .and_then(|x| x.to_vec1::<f64>())
        .op("head nll")?;
    let loss = nll.iter().zip(weights).map(|(n, w)| n * w).sum();
    let wts = Tensor::from_vec(weights.to_vec(), (m, 1), dev)
        .and_then(|x| x.to_dtype(st))
        .op("head weights")?;
    let lse = lse.unsqueeze(1).op("head lse")?;
    let targets_col = targets
        .to_dtype(DType::U32)
        .and_then(|x| x.unsqueeze(1))
        .op("head targets")?;
    let mut grad_h: Vec<Option<Tensor>> = vec![None; m.div_ceil(chunks.rows.max(1))];
    let mut grad_w = Vec::new();
    for c0 in (0..v).step_by(chunks.vocab.max(1)) {
        let vc = chunks.vocab.min(v - c0);
        let wc = w.narrow(0, c0, vc).op("head chunk")?;
        let cols = Tensor::arange(c0 as u32, (c0 + vc) as u32, dev)
            .and_then(|x| x.unsqueeze(0))
            .op("head cols")?;
        let mut gwc: Option<Tensor> = None;
        for (ri, r0) in (0..m).step_by(chunks.rows.max(1)).enumerate() {
            let rows = chunks.rows.min(m - r0);
            let hr = h.narrow(0, r0, rows).op("head rows")?;
            let logits = hr
                .matmul(&wc.t().op("head")?)
                .and_then(|l| l.to_dtype(st))
                .op("head logits")?;
            let softmax = logits
                .broadcast_sub(&lse.narrow(0, r0, rows).op("head")?)
                .and_then(|x| x.exp())
                .op("head softmax")?;
            let onehot = targets_col
                .narrow(0, r0, rows)
                .and_then(|t| t.broadcast_eq(&cols))
                .and_then(|x| x.to_dtype(st))
                .op("head onehot")?;
            // (rows, vc) in the inputs' dtype for the two matmuls.
            let dl = (softmax - onehot)
                .and_then(|x| x.broadcast_mul(&wts.narrow(0, r0, rows)?))
                .and_then(|x| x.to_dtype(h.dtype()))
                .op("head dlogits")?;
            let gh = dl.matmul(&wc).op("head grad h")?;
            grad_h[ri] = Some(match grad_h[ri].take() {
                None => gh.to_dtype(st).op("head grad h")?,
                Some(a) => (a + gh.to_dtype(st).op("head")?).op("head grad h")?,
            });
            let g = dl
                .t()
                .and_then(|x| x.matmul(&hr))
                .and_then(|x| x.to_dtype(st))
                .op("head grad w")?;
            gwc = Some(match gwc {
                None => g,
                Some(a) => (a + g).op("head grad w")?,
            });
        }
        grad_w.push(match gwc {
            Some(g) => g,
            None => Tensor::zeros((vc, d), st, dev).op("head grad w")?,
        });
    }
    let grad_h = if m == 0 {
        Tensor::zeros((0, d), st, dev).op("head grad h")?
    } else {
        let parts: Vec<Tensor> = grad_h.into_iter().flatten().collect();
        Tensor::cat(&parts, 0).op("head grad h")?
    };
    Ok(HeadGrads {
        loss,
        grad_h,
        grad_w: Tensor::cat(&grad_w, 0).op("head grad w")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The chunked loss and gradients equal autograd through a full
    /// log-softmax, in f64 to 1e-10, at chunk sizes that do not divide the
    /// shapes (ragged last chunks).
    #[test]
    fn chunked_head_matches_full_log_softmax() {
        let dev = Device::Cpu;
        let (m, d, v) = (7usize, 5usize, 23usize);
        let h = Tensor::randn(0f64, 1.0, (m, d), &dev).unwrap();
        let w = Tensor::randn(0f64, 1.0, (v, d), &dev).unwrap();
        let targets = Tensor::from_vec(vec![0u32, 22, 5, 5, 13, 8, 21], m, &dev).unwrap();
        let weights = vec![0.5, 1.0, 0.0, 2.0, 0.25, 1.5, 0.75];
        let chunks = HeadChunks { rows: 3, vocab: 6 };
        let got = loss_and_grads(&h, &w, &targets, &weights, chunks).unwrap();

        let (hv, wv) = (Var::from_tensor(&h).unwrap(), Var::from_tensor(&w).unwrap());
        let logits = hv.matmul(&wv.t().unwrap()).unwrap();
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let lp = lsm
            .gather(&targets.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        let wt = Tensor::from_vec(weights.clone(), m, &dev).unwrap();
        let loss = (lp * wt).unwrap().sum_all().unwrap().neg().unwrap();
        let g = loss.backward().unwrap();
        let want = loss.to_scalar::<f64>().unwrap();
        assert!((got.loss - want).abs() < 1e-10, "{} vs {want}", got.loss);
        let maxdiff = |a: &Tensor, b: &Tensor| -> f64 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert!(maxdiff(&got.grad_h, g.get(hv.as_tensor()).unwrap()) < 1e-10);
        assert!(maxdiff(&got.grad_w, g.get(wv.as_tensor()).unwrap()) < 1e-10);
        let fwd = loss_fn_only(&h, &w, &targets, &weights, chunks);
        assert!((fwd - want).abs() < 1e-10);
    }

    fn loss_fn_only(h: &Tensor, w: &Tensor, t: &Tensor, wts: &[f64], c: HeadChunks) -> f64 {
        loss(h, w, t, wts, c).unwrap()
    }
}
