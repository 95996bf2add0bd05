//! The memory-saving training step: per-layer recomputation, attention in
//! query blocks, the chunked LM head, and gradients handed over as soon as
//! they are complete.
//!
//! Forward keeps only each layer's input `(N, d)` in the compute dtype
//! (`L + 1` tensors with the final residual), no graph. Backward walks the
//! layers from last to first and rebuilds layer `l` from its saved input as
//! a fresh candle [`Var`], in three small graphs:
//! (a) norm + QKV + RoPE, (b) attention per query block of `q_block` rows,
//! each block its own graph backpropagated at once, (c) output projection +
//! residual + FFN. `(y * gy).sum_all().backward()` on each gives the
//! gradient on its inputs and on the layer's weights; the weights'
//! gradients go to the [`GradSink`] and everything of the layer is dropped.
//!
//! Attention is block-diagonal over the packed sequences ([`Packed`]): a
//! query sees only keys of its own sequence, causally, within Mistral's
//! sliding window. A query block of `r` rows reads only the keys it can
//! see (at most `r + window - 1`), so no `T x T` tensor of a sequence
//! outlives one block.
//!
//! Shapes: `N` packed tokens, `M` targets, `d` = `d_model`, `H` / `Hkv`
//! query / key-value heads, `hd` = `head_dim`.

use candle_core::{DType, Tensor, Var, D};

use crate::error::{CandleExt, Error, Result};
use crate::head::{self, HeadChunks};
use crate::model::{rms_norm, rope, TrainModel};
use crate::pack::Packed;

/// Receives each weight's gradient once it is complete (f32, shaped as the
/// master). `param` indexes [`TrainModel::params`].
pub trait GradSink {
    fn take(&mut self, param: usize, grad: Tensor) -> Result<()>;
}

/// Block and chunk sizes of the step.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Query rows per attention block.
    pub q_block: usize,
    pub head: HeadChunks,
}

/// Query rows per attention block by default.
pub const DEFAULT_Q_BLOCK: usize = 256;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            q_block: DEFAULT_Q_BLOCK,
            head: HeadChunks::default(),
        }
    }
}

/// The packed step on the model's device: ids, RoPE tables and the
/// attention blocks.
struct Step<'a> {
    model: &'a TrainModel,
    p: &'a Packed,
    /// (N) token ids.
    ids: Tensor,
    /// (N, 1, hd) cos / sin of each token's own position.
    cos: Tensor,
    sin: Tensor,
    blocks: Vec<Block>,
    scale: f64,
}

/// One query block: rows `q0..q1` attend keys `k0..q1` (one sequence).
struct Block {
    q0: usize,
    q1: usize,
    k0: usize,
    /// The sequence's first row (accumulators are per sequence).
    s0: usize,
}

impl<'a> Step<'a> {
    fn new(model: &'a TrainModel, p: &'a Packed, q_block: usize) -> Result<Step<'a>> {
        if q_block == 0 {
            return Err(Error::invalid("q_block", "must be at least 1"));
        }
        let c = &model.config;
        let (dev, cd) = (&model.device, model.compute);
        let n = p.n_tokens();
        let inv = c.rope_inv_freqs();
        let half = inv.len();
        let hd = 2 * half;
        let (mut cos, mut sin) = (vec![0f32; n * hd], vec![0f32; n * hd]);
        for (row, &pos) in p.positions.iter().enumerate() {
            for (i, f) in inv.iter().enumerate() {
                // Angles in f64, as the engine and the whole-graph path do.
                let a = pos as f64 * f;
                for j in [i, i + half] {
                    cos[row * hd + j] = a.cos() as f32;
                    sin[row * hd + j] = a.sin() as f32;
                }
            }
        }
        let table = |v: Vec<f32>| {
            Tensor::from_vec(v, (n, 1, hd), dev)
                .and_then(|x| x.to_dtype(cd))
                .op("rope table")
        };
        let window = c.sliding_window.unwrap_or(usize::MAX);
        let mut blocks = Vec::new();
        for s in 0..p.n_seq() {
            let (s0, s1) = (p.starts[s], p.starts[s + 1]);
            for q0 in (s0..s1).step_by(q_block) {
                let q1 = (q0 + q_block).min(s1);
                // The earliest key the block's first query sees.
                let k0 = (q0 + 1).saturating_sub(window).max(s0);
                blocks.push(Block { q0, q1, k0, s0 });
            }
        }
        Ok(Step {
            model,
            p,
            ids: Tensor::from_vec(p.ids.clone(), n, dev).op("packed ids")?,
            cos: table(cos)?,
            sin: table(sin)?,
            blocks,
            scale: 1.0 / (c.head_dim as f64).sqrt(),
        })
    }

    /// Weight `name` in the compute dtype: tracked (its gradient lands on
    /// the f32 master) or detached (no graph).
    fn w(&self, name: &str, track: bool) -> Result<Tensor> {
        let v = self.model.param(name)?.as_tensor();
        let v = if track { v.clone() } else { v.detach() };
        if v.dtype() == self.model.compute {
            Ok(v)
        } else {
            v.to_dtype(self.model.compute).op("weight cast")
        }
    }

    fn lin(&self, x: &Tensor, name: &str, track: bool) -> Result<Tensor> {
        x.matmul(&self.w(name, track)?.t().op("transpose")?)
            .op(&format!("matmul {name}"))
    }

    /// (a) norm + QKV + RoPE of layer `l`: q (N, H, hd), k and v (N, Hkv, hd).
    fn qkv(&self, l: usize, x: &Tensor, track: bool) -> Result<(Tensor, Tensor, Tensor)> {
        let c = &self.model.config;
        let n = x.dim(0).op("layer input")?;
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        let h = rms_norm(x, &self.w(&name("attn_norm"), track)?, c.rms_eps)?;
        let heads = |y: Tensor, nh: usize| y.reshape((n, nh, c.head_dim)).op("split heads");
        let q = heads(self.lin(&h, &name("attn_q"), track)?, c.n_heads)?;
        let k = heads(self.lin(&h, &name("attn_k"), track)?, c.n_kv_heads)?;
        let v = heads(self.lin(&h, &name("attn_v"), track)?, c.n_kv_heads)?;
        let q = rope(&q, &self.cos, &self.sin)?;
        let k = rope(&k, &self.cos, &self.sin)?;
        Ok((q, k, v))
    }

    /// (q1 - q0, q1 - k0) additive mask of block `b`: causal, within the
    /// sliding window. Made when the block runs (all blocks' masks at once
    /// would add up to half a `T x T` per sequence).
    fn mask(&self, b: &Block) -> Result<Tensor> {
        let window = self.model.config.sliding_window.unwrap_or(usize::MAX);
        let (r, kl) = (b.q1 - b.q0, b.q1 - b.k0);
        let mut m = vec![0f32; r * kl];
        for i in 0..r {
            for j in 0..kl {
                let (qi, kj) = (b.q0 + i, b.k0 + j);
                if kj > qi || qi - kj >= window {
                    m[i * kl + j] = f32::NEG_INFINITY;
                }
            }
        }
        Tensor::from_vec(m, (r, kl), &self.model.device)
            .and_then(|x| x.to_dtype(self.model.compute))
            .op("attention mask")
    }

    /// (b) one block's attention: q (r, H, hd), k and v (kl, Hkv, hd) -> (r, H*hd).
    fn attend(&self, b: &Block, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let c = &self.model.config;
        let (r, kl) = (b.q1 - b.q0, b.q1 - b.k0);
        let (nh, nkv, hd) = (c.n_heads, c.n_kv_heads, c.head_dim);
        let rep = nh / nkv;
        // (H, r, hd) and (H, kl, hd): each key-value head serves `rep`
        // consecutive query heads.
        let q = q
            .transpose(0, 1)
            .and_then(|x| x.contiguous())
            .op("q heads")?;
        let kv_heads = |x: &Tensor| -> Result<Tensor> {
            let x = x.transpose(0, 1).op("kv heads")?;
            if rep == 1 {
                return x.contiguous().op("kv heads");
            }
            x.unsqueeze(1)
                .and_then(|y| y.expand((nkv, rep, kl, hd)))
                .and_then(|y| y.reshape((nh, kl, hd)))
                .op("repeat kv")
        };
        let (k, v) = (kv_heads(k)?, kv_heads(v)?);
        let att = (q.matmul(&k.t().op("k^T")?).op("attention scores")? * self.scale)
            .op("attention scale")?
            .broadcast_add(&self.mask(b)?)
            .op("attention mask")?;
        let att = candle_nn::ops::softmax(&att, D::Minus1).op("attention softmax")?;
        att.matmul(&v)
            .and_then(|o| o.transpose(0, 1))
            .and_then(|o| o.reshape((r, nh * hd)))
            .op("attention output")
    }

    /// Attention of every block without a graph: (N, H*hd).
    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let mut out = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let qb = q.narrow(0, b.q0, b.q1 - b.q0).op("query block")?;
            let kb = k.narrow(0, b.k0, b.q1 - b.k0).op("key block")?;
            let vb = v.narrow(0, b.k0, b.q1 - b.k0).op("value block")?;
            out.push(self.attend(b, &qb, &kb, &vb)?);
        }
        Tensor::cat(&out, 0).op("attention blocks")
    }

    /// (c) output projection + residual + FFN of layer `l`.
    fn out_ffn(&self, l: usize, x: &Tensor, o: &Tensor, track: bool) -> Result<Tensor> {
        let c = &self.model.config;
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        let x = (x + self.lin(o, &name("attn_output"), track)?).op("residual")?;
        let h = rms_norm(&x, &self.w(&name("ffn_norm"), track)?, c.rms_eps)?;
        let gate = self.lin(&h, &name("ffn_gate"), track)?.silu().op("silu")?;
        let up = self.lin(&h, &name("ffn_up"), track)?;
        let ff = self.lin(&(gate * up).op("swiglu")?, &name("ffn_down"), track)?;
        (x + ff).op("residual")
    }

    /// Layer `l` without a graph.
    fn layer(&self, l: usize, x: &Tensor) -> Result<Tensor> {
        let (q, k, v) = self.qkv(l, x, false)?;
        let o = self.attention(&q, &k, &v)?;
        self.out_ffn(l, x, &o, false)
    }

    /// (N, d) embedding rows of the step in the compute dtype, no graph.
    fn embed(&self) -> Result<Tensor> {
        // Rows first, then the cast: the same values as casting the table.
        self.model
            .param("token_embd.weight")?
            .as_tensor()
            .detach()
            .index_select(&self.ids, 0)
            .and_then(|x| x.to_dtype(self.model.compute))
            .op("embedding")
    }

    /// Backward through layer `l` rebuilt from its input `x`, given the
    /// gradient `gy` on its output: the gradient on `x`; the layer's weight
    /// gradients go to `sink`.
    fn layer_backward(
        &self,
        l: usize,
        x: &Tensor,
        gy: &Tensor,
        sink: &mut dyn GradSink,
    ) -> Result<Tensor> {
        let c = &self.model.config;
        let xv = Var::from_tensor(x).op("layer input")?;
        // (a) with its graph kept until (b) is done.
        let (q, k, v) = self.qkv(l, xv.as_tensor(), true)?;
        let (qd, kd, vd) = (q.detach(), k.detach(), v.detach());
        // (c): attention output recomputed without a graph, then the tail.
        let ov = Var::from_tensor(&self.attention(&qd, &kd, &vd)?).op("attention output")?;
        let y = self.out_ffn(l, xv.as_tensor(), ov.as_tensor(), true)?;
        let g = (y * gy.detach())
            .and_then(|x| x.sum_all())
            .and_then(|x| x.backward())
            .op("layer backward (output, FFN)")?;
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        for s in ["attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"] {
            self.give(&g, &name(s), sink)?;
        }
        let go = grad_of(&g, ov.as_tensor(), "attention output")?;
        let gx_tail = grad_of(&g, xv.as_tensor(), "layer input")?;
        drop(g);
        // (b) per query block: dq per block in row order; dk, dv summed over
        // the blocks of each sequence.
        let (mut dq, mut dk, mut dv) = (Vec::new(), Vec::new(), Vec::new());
        let (mut acc_k, mut acc_v): (Option<Tensor>, Option<Tensor>) = (None, None);
        let mut cur_s0 = usize::MAX;
        for b in &self.blocks {
            if b.s0 != cur_s0 {
                dk.extend(acc_k.take());
                dv.extend(acc_v.take());
                cur_s0 = b.s0;
            }
            let (r, kl) = (b.q1 - b.q0, b.q1 - b.k0);
            let qb = Var::from_tensor(&qd.narrow(0, b.q0, r).op("query block")?).op("q")?;
            let kb = Var::from_tensor(&kd.narrow(0, b.k0, kl).op("key block")?).op("k")?;
            let vb = Var::from_tensor(&vd.narrow(0, b.k0, kl).op("value block")?).op("v")?;
            let ob = self.attend(b, qb.as_tensor(), kb.as_tensor(), vb.as_tensor())?;
            let gb = (ob * go.narrow(0, b.q0, r).op("block grad")?)
                .and_then(|x| x.sum_all())
                .and_then(|x| x.backward())
                .op("attention block backward")?;
            dq.push(grad_of(&gb, qb.as_tensor(), "query block")?);
            // Keys k0..q1 of the sequence starting at s0, as rows of its accumulator.
            let (off, len) = (b.k0 - b.s0, b.q1 - b.s0);
            for (acc, var) in [(&mut acc_k, &kb), (&mut acc_v, &vb)] {
                let gkv = grad_of(&gb, var.as_tensor(), "key/value block")?;
                let gkv = gkv.pad_with_zeros(0, off, 0).op("key/value grad")?;
                *acc = Some(match acc.take() {
                    None => gkv,
                    Some(a) => {
                        // The accumulator grows to the rows this block reaches.
                        let a = a
                            .pad_with_zeros(0, 0, len - a.dim(0).op("acc")?)
                            .op("acc")?;
                        (a + gkv).op("key/value grad")?
                    }
                });
            }
        }
        dk.extend(acc_k.take());
        dv.extend(acc_v.take());
        let cat = |t: Vec<Tensor>, what: &str| Tensor::cat(&t, 0).op(what);
        let (gq, gk, gv) = (cat(dq, "dq")?, cat(dk, "dk")?, cat(dv, "dv")?);
        // (a) backward.
        let total = [(q, gq), (k, gk), (v, gv)]
            .into_iter()
            .map(|(t, g)| (t * g).and_then(|x| x.sum_all()))
            .reduce(|a, b| a? + b?)
            .expect("three terms")
            .op("layer backward (QKV)")?;
        let g = total.backward().op("layer backward (QKV)")?;
        for s in ["attn_norm", "attn_q", "attn_k", "attn_v"] {
            self.give(&g, &name(s), sink)?;
        }
        let gx_head = grad_of(&g, xv.as_tensor(), "layer input")?;
        let _ = c;
        (gx_tail + gx_head).op("layer input grad")
    }

    /// Hands weight `name`'s gradient from `g` to the sink.
    fn give(
        &self,
        g: &candle_core::backprop::GradStore,
        name: &str,
        sink: &mut dyn GradSink,
    ) -> Result<()> {
        let var = self.model.param(name)?;
        let grad = grad_of(g, var.as_tensor(), name)?;
        sink.take(self.model.param_index(name)?, grad)
    }

    /// Final norm of `x` (N, d) at the target rows: (M, d).
    fn target_hidden(&self, x: &Tensor, track: bool) -> Result<Tensor> {
        let rows = Tensor::from_vec(
            self.p.target_rows.clone(),
            self.p.n_targets(),
            &self.model.device,
        )
        .op("target rows")?;
        let w = self.w("output_norm.weight", track)?;
        rms_norm(x, &w, self.model.config.rms_eps)?
            .index_select(&rows, 0)
            .op("gather hidden")
    }

    fn targets(&self) -> Result<Tensor> {
        Tensor::from_vec(
            self.p.targets.clone(),
            self.p.n_targets(),
            &self.model.device,
        )
        .op("targets")
    }
}

fn grad_of(g: &candle_core::backprop::GradStore, t: &Tensor, what: &str) -> Result<Tensor> {
    g.get(t)
        .cloned()
        .ok_or_else(|| Error::invalid("backward", format!("no gradient reached {what}")))
}

/// `sum_r weights[r] * scale * nll_r` of the packed step (nats), with every
/// weight's gradient of it handed to `sink` as soon as it is complete: each
/// layer's after that layer's backward, the final norm's and an untied
/// head's first, the token embedding's last (with a tied head, the sum of
/// both its uses).
pub fn loss_and_grads(
    model: &TrainModel,
    p: &Packed,
    scale: f64,
    set: &Settings,
    sink: &mut dyn GradSink,
) -> Result<f64> {
    let st = Step::new(model, p, set.q_block)?;
    let n_layers = model.config.n_layers;
    // Forward: the input of every layer and the final residual, nothing else.
    let mut saved = Vec::with_capacity(n_layers + 1);
    saved.push(st.embed()?);
    for l in 0..n_layers {
        let y = st.layer(l, &saved[l])?;
        saved.push(y);
    }
    // Head: the final norm's small graph, the chunked head by hand.
    let x_last = Var::from_tensor(&saved.pop().expect("final residual")).op("final residual")?;
    let h = st.target_hidden(x_last.as_tensor(), true)?;
    let head_w = st.w(model.head_name(), false)?;
    let weights: Vec<f64> = p.weights.iter().map(|w| w * scale).collect();
    let hg = head::loss_and_grads(&h.detach(), &head_w, &st.targets()?, &weights, set.head)?;
    drop(head_w);
    if !hg.loss.is_finite() {
        // Before any gradient reaches the sink (which may be updating weights).
        return Err(Error::invalid(
            "loss",
            format!("{} on a step of {} tokens", hg.loss, p.n_tokens()),
        ));
    }
    let g = (h * hg.grad_h.to_dtype(model.compute).op("head grad")?)
        .and_then(|x| x.sum_all())
        .and_then(|x| x.backward())
        .op("final norm backward")?;
    st.give(&g, "output_norm.weight", sink)?;
    let mut gx = grad_of(&g, x_last.as_tensor(), "final residual")?;
    drop(g);
    let head_grad = hg.grad_w.to_dtype(DType::F32).op("head grad")?;
    let mut head_grad = Some(head_grad);
    if !model.tied {
        let grad = head_grad.take().expect("head grad");
        sink.take(model.param_index("output.weight")?, grad)?;
    }
    // Layers from last to first, each dropped after its backward.
    for l in (0..n_layers).rev() {
        let x = saved.pop().expect("layer input");
        gx = st.layer_backward(l, &x, &gx, sink)?;
    }
    // The embedding lookup: rows of the gradient summed into their tokens.
    let emb = model.param("token_embd.weight")?.as_tensor();
    // Detached: `gx` still carries layer 0's backward graph (candle tracks a
    // gradient computed from tracked tensors), which the embedding gradient
    // would otherwise hold, and through AdamW's moments every step's after.
    let gx = gx.detach();
    // Summed in f32 whatever the weight's dtype (bf16 weights: the sink
    // takes f32 gradients, and the tied head's gradient added below is f32).
    let g_emb = Tensor::zeros(emb.dims(), DType::F32, emb.device())
        .and_then(|z| z.index_add(&st.ids, &gx.to_dtype(DType::F32)?, 0))
        .op("embedding grad")?;
    let g_emb = match head_grad {
        Some(hgw) => (g_emb + hgw).op("tied embedding grad")?,
        None => g_emb,
    };
    sink.take(model.param_index("token_embd.weight")?, g_emb)?;
    Ok(hg.loss)
}

/// `(M)` negative log-probability of each target of the packed step, the
/// forward only (eval), in the same blocks and chunks.
pub fn target_nll(model: &TrainModel, p: &Packed, set: &Settings) -> Result<Vec<f64>> {
    let st = Step::new(model, p, set.q_block)?;
    let mut x = st.embed()?;
    for l in 0..model.config.n_layers {
        x = st.layer(l, &x)?;
    }
    let h = st.target_hidden(&x, false)?;
    drop(x);
    let head_w = st.w(model.head_name(), false)?;
    head::nll(&h, &head_w, &st.targets()?, set.head)
}
