//! The layer-by-layer step (`layerwise.rs`, `head.rs`) replayed on the
//! byte-level tensors of [`super::autograd`], statement by statement, so
//! that every temporary lives exactly as long as it does there: the
//! forward without a graph keeping `L + 1` layer inputs, the chunked head,
//! the final norm's graph, then each layer's three small graphs (QKV,
//! attention blocks, projection + FFN) rebuilt and backpropagated, the
//! gradients handed to the sink.

use super::autograd::{Binary, Ctx, Unary, T};
use super::ops::Builder;
use main_engine::config::Config;
use std::collections::HashMap;

/// The packed step: sequence lengths (tokens) and target count.
#[derive(Clone, Debug)]
pub struct PackShape {
    pub seq_lens: Vec<u64>,
    pub n_targets: u64,
}

impl PackShape {
    pub fn n_tokens(&self) -> u64 {
        self.seq_lens.iter().sum()
    }
}

/// Where weight gradients go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkKind {
    /// Kept (f32) until the step after backward.
    Accumulate,
    /// AdamW `update_one` at once (the fused update: in place on the CPU,
    /// a host round trip on CUDA), the gradient dropped.
    StepNow,
}

/// Block and chunk sizes.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub q_block: u64,
    pub head_rows: u64,
    pub head_vocab: u64,
}

struct Vars {
    embd: T,
    layers: Vec<[T; 9]>,
    out_norm: T,
    head: T,
}

// Indices into a layer's weights.
const ATTN_NORM: usize = 0;
const Q: usize = 1;
const K: usize = 2;
const V: usize = 3;
const O: usize = 4;
const FFN_NORM: usize = 5;
const GATE: usize = 6;
const UP: usize = 7;
const DOWN: usize = 8;

struct Sink<'a> {
    ctx: &'a Ctx,
    kind: SinkKind,
    kept: HashMap<usize, T>,
    /// The optimizer steps on the host (CUDA, whose compute is bf16).
    round_trip: bool,
}

impl Sink<'_> {
    fn take(&mut self, param: &T, grad: T) {
        let grad = self.ctx.to_dtype(&grad, 4);
        match self.kind {
            SinkKind::Accumulate => {
                self.kept.insert(param.id(), grad);
            }
            SinkKind::StepNow => {
                let c = self.ctx;
                // sum of squares for the norm (`optim::sum_squares`): in
                // place on the CPU; on CUDA sqr, then a scalar.
                if self.round_trip {
                    drop(c.unary(Unary::Sqr, &grad));
                }
                fused_update_one(c, param.numel, param.elem, self.round_trip);
            }
        }
    }
}

/// `AdamW::update_one`'s device bytes for a weight of `numel` elements
/// stored in `param_elem` bytes each (`optim/mod.rs`, the fused update):
/// on the CPU the update runs in place over the weight, its moments and the
/// gradient (nothing allocated beyond per-block scratch on the stack); on
/// CUDA the weight and gradient go to the host, are updated there, and the
/// updated weight comes back as a new device tensor before `Var::set`
/// copies it in, so one weight-sized tensor is briefly alive.
pub fn fused_update_one(c: &Ctx, numel: u64, param_elem: u64, round_trip: bool) {
    if round_trip {
        drop(c.hold(numel * param_elem));
    }
}

/// One step of the layerwise path over `base` bytes held outside it (the
/// moments); returns the peak of live bytes, weights included, and the
/// bytes of the saved layer inputs.
#[allow(clippy::too_many_arguments)]
pub fn replay(
    cfg: &Config,
    tied: bool,
    e: u64,
    param_elem: u64,
    shape: &PackShape,
    sizes: Sizes,
    sink: SinkKind,
    base: u64,
) -> (u64, u64) {
    let ctx = Ctx::default();
    let _held = ctx.hold(base);
    let g = Builder { c: &ctx, e };
    let (d, hd, vocab, f) = (
        cfg.d_model as u64,
        cfg.head_dim as u64,
        cfg.vocab_size as u64,
        cfg.d_ff as u64,
    );
    let (nh, nkv) = (cfg.n_heads as u64, cfg.n_kv_heads as u64);
    let (q, kv) = (nh * hd, nkv * hd);
    let embd = ctx.var(vocab * d, param_elem);
    let layers = (0..cfg.n_layers)
        .map(|_| {
            [
                ctx.var(d, param_elem),
                ctx.var(q * d, param_elem),
                ctx.var(kv * d, param_elem),
                ctx.var(kv * d, param_elem),
                ctx.var(d * q, param_elem),
                ctx.var(d, param_elem),
                ctx.var(f * d, param_elem),
                ctx.var(f * d, param_elem),
                ctx.var(d * f, param_elem),
            ]
        })
        .collect();
    let out_norm = ctx.var(d, param_elem);
    let head = if tied {
        embd.clone()
    } else {
        ctx.var(vocab * d, param_elem)
    };
    let vars = Vars {
        embd,
        layers,
        out_norm,
        head,
    };
    let n = shape.n_tokens();
    let m = shape.n_targets;
    // Query blocks: (q0, q1, k0, s0) as layerwise::Step::new makes them.
    let window = cfg.sliding_window.map_or(u64::MAX, |w| w as u64);
    let mut blocks = Vec::new();
    let mut s0 = 0;
    for &len in &shape.seq_lens {
        let s1 = s0 + len;
        let mut q0 = s0;
        while q0 < s1 {
            let q1 = (q0 + sizes.q_block).min(s1);
            let k0 = (q0 + 1).saturating_sub(window).max(s0);
            blocks.push((q0, q1, k0, s0));
            q0 = q1;
        }
        s0 = s1;
    }
    let st = Step {
        g: &g,
        cfg,
        vars: &vars,
        _ids: ctx.leaf(n, 4),
        cos: ctx.leaf(n * hd, e),
        sin: ctx.leaf(n * hd, e),
        blocks,
        n,
        q,
        kv,
        f,
        d,
    };
    let mut sink = Sink {
        ctx: &ctx,
        kind: sink,
        kept: HashMap::new(),
        // bf16 compute is what `device::select` picks on CUDA.
        round_trip: e != 4,
    };

    // Forward: the input of every layer, nothing else.
    let mut saved: Vec<T> = Vec::with_capacity(cfg.n_layers + 1);
    saved.push(ctx.to_dtype(&ctx.index_select(&ctx.detach(&vars.embd), n, d), e));
    for l in 0..cfg.n_layers {
        let y = st.layer(l, &saved[l]);
        saved.push(y);
    }
    let saved_bytes: u64 = saved.iter().map(|t| t.bytes()).sum();
    // Head.
    let x_last = ctx.var_from(&saved.pop().expect("final residual"));
    let h = {
        let _rows = ctx.leaf(m, 4);
        let w = g.w(&vars.out_norm);
        ctx.index_select(&g.rms_norm(&x_last, &w, n), m, d)
    };
    let head_w = g.w(&ctx.detach(&vars.head));
    let _weights = ctx.hold(8 * m);
    let targets = ctx.leaf(m, 4);
    let hg = head_loss_and_grads(&ctx, &ctx.detach(&h), &head_w, m, d, vocab, sizes);
    drop(head_w);
    drop(targets);
    let gs = {
        let gh = ctx.to_dtype(&hg.0, e);
        let prod = ctx.mul(&h, &gh);
        drop(h);
        let loss = ctx.sum_keepdim(&prod, 1);
        drop(prod);
        ctx.backward(&loss)
    };
    sink.take(&vars.out_norm, gs[&vars.out_norm.id()].clone());
    let mut gx = gs[&x_last.id()].clone();
    drop(gs);
    let head_grad = ctx.to_dtype(&hg.1, 4);
    let mut head_grad = Some(head_grad);
    if !tied {
        let grad = head_grad.take().expect("head grad");
        sink.take(&vars.head, grad);
    }
    for l in (0..cfg.n_layers).rev() {
        let x = saved.pop().expect("layer input");
        gx = st.layer_backward(l, &x, &gx, &mut sink);
    }
    let gx = ctx.detach(&gx);
    let g_emb = {
        let z = ctx.zeros_like(&ctx.to_dtype(&vars.embd, 4));
        let gx32 = ctx.to_dtype(&gx, 4);
        ctx.other(z.numel, z.elem, &[&z, &gx32])
    };
    // `g_emb + hgw` consumes both.
    let g_emb = match head_grad {
        Some(hgw) => {
            let sum = ctx.add(&g_emb, &hgw);
            drop((g_emb, hgw));
            sum
        }
        None => g_emb,
    };
    sink.take(&vars.embd, g_emb);
    drop(gx);
    drop(hg);
    drop(x_last);
    (ctx.peak(), saved_bytes)
}

/// `head::loss_and_grads`: (grad_h, grad_w), f32.
fn head_loss_and_grads(
    ctx: &Ctx,
    h: &T,
    w: &T,
    m: u64,
    d: u64,
    vocab: u64,
    sizes: Sizes,
) -> (T, T) {
    let (rows_c, vocab_c) = (sizes.head_rows.max(1), sizes.head_vocab.max(1));
    let row_chunks: Vec<(u64, u64)> = (0..m.div_ceil(rows_c))
        .map(|i| (i * rows_c, rows_c.min(m - i * rows_c)))
        .collect();
    let vocab_chunks: Vec<(u64, u64)> = (0..vocab.div_ceil(vocab_c))
        .map(|i| (i * vocab_c, vocab_c.min(vocab - i * vocab_c)))
        .collect();
    // logsumexp: an online max / sum-exp per row chunk.
    let lse = {
        let mut out = Vec::new();
        for &(_, rows) in &row_chunks {
            let hr = ctx.narrow(h, 0, rows * d);
            let (mut mx, mut s): (Option<T>, Option<T>) = (None, None);
            for &(_, vc) in &vocab_chunks {
                let wc = ctx.narrow(w, 0, vc * d);
                let logits = ctx.to_dtype(&ctx.matmul(&hr, &ctx.transpose(&wc), rows * vc), 4);
                let cmax = ctx.max_keepdim(&logits, rows);
                let new_max = match &mx {
                    None => cmax,
                    Some(m0) => ctx.binary(Binary::Sub, m0, &cmax), // maximum: same bytes
                };
                let e = {
                    let sub = ctx.sub(&logits, &ctx.broadcast_as(&new_max, rows * vc));
                    let ex = ctx.unary(Unary::Exp, &sub);
                    drop(sub);
                    ctx.sum_keepdim(&ex, rows)
                };
                s = Some(match (s, &mx) {
                    (Some(s0), Some(m0)) => {
                        let rescale = ctx.unary(Unary::Exp, &ctx.sub(m0, &new_max));
                        ctx.add(&ctx.mul(&s0, &rescale), &e)
                    }
                    _ => e,
                });
                mx = Some(new_max);
            }
            let (mx, s) = (mx.expect("vocabulary"), s.expect("vocabulary"));
            out.push(ctx.add(&ctx.unary(Unary::Log, &s), &mx));
        }
        let refs: Vec<&T> = out.iter().collect();
        ctx.cat(&refs)
    };
    // target logits: rows of w, a product, a sum.
    let t = {
        let wt = ctx.index_select(w, m, d);
        let prod = ctx.mul(h, &wt);
        ctx.sum_keepdim(&prod, m)
    };
    let nll = ctx.sub(&lse, &t);
    drop(t);
    let _nll_vec = ctx.hold(8 * m);
    drop(nll);
    let wts = ctx.leaf(m, 4);
    let mut grad_h: Vec<Option<T>> = vec![None; row_chunks.len()];
    let mut grad_w = Vec::new();
    for &(_, vc) in &vocab_chunks {
        let wc = ctx.narrow(w, 0, vc * d);
        let _cols = ctx.leaf(vc, 4);
        let mut gwc: Option<T> = None;
        for (ri, &(_, rows)) in row_chunks.iter().enumerate() {
            let hr = ctx.narrow(h, 0, rows * d);
            let logits = ctx.to_dtype(&ctx.matmul(&hr, &ctx.transpose(&wc), rows * vc), 4);
            let softmax = {
                let sub = ctx.sub(
                    &logits,
                    &ctx.broadcast_as(&ctx.narrow(&lse, 0, rows), rows * vc),
                );
                ctx.unary(Unary::Exp, &sub)
            };
            let onehot = {
                let eq = ctx.other(rows * vc, 1, &[]);
                ctx.to_dtype(&eq, 4)
            };
            let dl = {
                let diff = ctx.sub(&softmax, &onehot);
                drop(softmax);
                drop(onehot);
                let scaled = ctx.mul(
                    &diff,
                    &ctx.broadcast_as(&ctx.narrow(&wts, 0, rows), rows * vc),
                );
                drop(diff);
                ctx.to_dtype(&scaled, h.elem)
            };
            let gh = ctx.matmul(&dl, &wc, rows * d);
            grad_h[ri] = Some(match grad_h[ri].take() {
                None => ctx.to_dtype(&gh, 4),
                Some(a) => ctx.add(&a, &ctx.to_dtype(&gh, 4)),
            });
            drop(gh);
            let gw = ctx.to_dtype(&ctx.matmul(&ctx.transpose(&dl), &hr, vc * d), 4);
            gwc = Some(match gwc {
                None => gw,
                Some(a) => ctx.add(&a, &gw),
            });
            drop(dl);
            drop(logits);
        }
        grad_w.push(gwc.unwrap_or_else(|| ctx.zeros(vc * d, 4)));
    }
    let parts: Vec<T> = grad_h.into_iter().flatten().collect();
    let refs: Vec<&T> = parts.iter().collect();
    let gh = ctx.cat(&refs);
    drop(refs);
    drop(parts);
    let refs: Vec<&T> = grad_w.iter().collect();
    let gw = ctx.cat(&refs);
    (gh, gw)
}

struct Step<'a> {
    g: &'a Builder<'a>,
    cfg: &'a Config,
    vars: &'a Vars,
    _ids: T,
    cos: T,
    sin: T,
    blocks: Vec<(u64, u64, u64, u64)>,
    n: u64,
    q: u64,
    kv: u64,
    f: u64,
    d: u64,
}

impl Step<'_> {
    fn w(&self, var: &T, track: bool) -> T {
        let c = self.g.c;
        if track {
            self.g.w(var)
        } else {
            self.g.w(&c.detach(var))
        }
    }
    fn lin(&self, x: &T, var: &T, rows: u64, out: u64, track: bool) -> T {
        let c = self.g.c;
        let w = self.w(var, track);
        c.matmul(x, &c.transpose(&w), rows * out)
    }
    fn qkv(&self, l: usize, x: &T, track: bool) -> (T, T, T) {
        let (c, lv, n) = (self.g.c, &self.vars.layers[l], self.n);
        let h = self.g.rms_norm(x, &self.w(&lv[ATTN_NORM], track), n);
        let q = c.reshape(&self.lin(&h, &lv[Q], n, self.q, track));
        let k = c.reshape(&self.lin(&h, &lv[K], n, self.kv, track));
        let v = c.reshape(&self.lin(&h, &lv[V], n, self.kv, track));
        let q = self.g.rope(&q, &self.cos, &self.sin);
        let k = self.g.rope(&k, &self.cos, &self.sin);
        (q, k, v)
    }
    fn attend(&self, b: (u64, u64, u64, u64), q: &T, k: &T, v: &T) -> T {
        let c = self.g.c;
        let (q0, q1, k0, _) = b;
        let (r, kl) = (q1 - q0, q1 - k0);
        let (nh, nkv) = (self.cfg.n_heads as u64, self.cfg.n_kv_heads as u64);
        let rep = nh / nkv;
        let e = q.elem;
        let q = c.contiguous_copy(&c.transpose(q));
        let kv_heads = |x: &T| -> T {
            let x = c.transpose(x);
            if rep == 1 {
                return c.contiguous_copy(&x);
            }
            c.reshape_copy(&c.broadcast_as(&c.reshape(&x), x.numel * rep))
        };
        let (k, v) = (kv_heads(k), kv_heads(v));
        let att = c.affine(&c.matmul(&q, &c.transpose(&k), nh * r * kl));
        let att = {
            let mask = c.leaf(r * kl, e);
            self.g.bcast(Binary::Add, &att, &mask)
        };
        let att = self.g.softmax(&att, nh * r);
        c.reshape_copy(&c.transpose(&c.matmul(&att, &v, r * self.q)))
    }
    fn attention(&self, q: &T, k: &T, v: &T) -> T {
        let c = self.g.c;
        let (hq, hkv) = (self.q, self.kv);
        let mut out = Vec::with_capacity(self.blocks.len());
        for &b in &self.blocks {
            let (q0, q1, k0, _) = b;
            let qb = c.narrow(q, q0 * hq, (q1 - q0) * hq);
            let kb = c.narrow(k, k0 * hkv, (q1 - k0) * hkv);
            let vb = c.narrow(v, k0 * hkv, (q1 - k0) * hkv);
            out.push(self.attend(b, &qb, &kb, &vb));
        }
        let refs: Vec<&T> = out.iter().collect();
        c.cat(&refs)
    }
    fn out_ffn(&self, l: usize, x: &T, o: &T, track: bool) -> T {
        let (c, lv, n) = (self.g.c, &self.vars.layers[l], self.n);
        let x = c.add(x, &self.lin(o, &lv[O], n, self.d, track));
        let h = self.g.rms_norm(&x, &self.w(&lv[FFN_NORM], track), n);
        let gate = c.unary(Unary::Silu, &self.lin(&h, &lv[GATE], n, self.f, track));
        let up = self.lin(&h, &lv[UP], n, self.f, track);
        let ff = self.lin(&c.mul(&gate, &up), &lv[DOWN], n, self.d, track);
        drop((gate, up, h));
        c.add(&x, &ff)
    }
    fn layer(&self, l: usize, x: &T) -> T {
        let (q, k, v) = self.qkv(l, x, false);
        let o = self.attention(&q, &k, &v);
        drop((q, k, v));
        self.out_ffn(l, x, &o, false)
    }
    fn layer_backward(&self, l: usize, x: &T, gy: &T, sink: &mut Sink) -> T {
        let c = self.g.c;
        let lv = &self.vars.layers[l];
        let xv = c.var_from(x);
        let (q, k, v) = self.qkv(l, &xv, true);
        let (qd, kd, vd) = (c.detach(&q), c.detach(&k), c.detach(&v));
        let ov = c.var_from(&self.attention(&qd, &kd, &vd));
        let g = {
            let y = self.out_ffn(l, &xv, &ov, true);
            let prod = c.mul(&y, &c.detach(gy));
            drop(y);
            let s = c.sum_keepdim(&prod, 1);
            drop(prod);
            c.backward(&s)
        };
        for i in [O, FFN_NORM, GATE, UP, DOWN] {
            sink.take(&lv[i], g[&lv[i].id()].clone());
        }
        let go = g[&ov.id()].clone();
        let gx_tail = g[&xv.id()].clone();
        drop(g);
        let (mut dq, mut dk, mut dv) = (Vec::new(), Vec::new(), Vec::new());
        let (mut acc_k, mut acc_v): (Option<T>, Option<T>) = (None, None);
        let mut cur_s0 = u64::MAX;
        let (hq, hkv) = (self.q, self.kv);
        for &b in &self.blocks {
            let (q0, q1, k0, s0) = b;
            if s0 != cur_s0 {
                dk.extend(acc_k.take());
                dv.extend(acc_v.take());
                cur_s0 = s0;
            }
            let (r, kl) = (q1 - q0, q1 - k0);
            let qb = c.var_from(&c.narrow(&qd, q0 * hq, r * hq));
            let kb = c.var_from(&c.narrow(&kd, k0 * hkv, kl * hkv));
            let vb = c.var_from(&c.narrow(&vd, k0 * hkv, kl * hkv));
            let gb = {
                let ob = self.attend(b, &qb, &kb, &vb);
                let prod = c.mul(&ob, &c.narrow(&go, q0 * hq, r * hq));
                drop(ob);
                let s = c.sum_keepdim(&prod, 1);
                drop(prod);
                c.backward(&s)
            };
            dq.push(gb[&qb.id()].clone());
            let (off, len) = (k0 - s0, q1 - s0);
            for (acc, var) in [(&mut acc_k, &kb), (&mut acc_v, &vb)] {
                let gkv = c.pad_rows(&gb[&var.id()], off * hkv);
                *acc = Some(match acc.take() {
                    None => gkv,
                    Some(a) => {
                        let a2 = c.pad_rows(&a, len * hkv - a.numel);
                        c.add(&a2, &gkv)
                    }
                });
            }
        }
        dk.extend(acc_k.take());
        dv.extend(acc_v.take());
        let cat = |t: Vec<T>| {
            let refs: Vec<&T> = t.iter().collect();
            c.cat(&refs)
        };
        let (gq, gk, gv) = (cat(dq), cat(dk), cat(dv));
        let total = {
            let a = c.sum_keepdim(&c.mul(&q, &gq), 1);
            let b = c.sum_keepdim(&c.mul(&k, &gk), 1);
            let ab = c.add(&a, &b);
            drop((a, b));
            let cc = c.sum_keepdim(&c.mul(&v, &gv), 1);
            c.add(&ab, &cc)
        };
        let g = c.backward(&total);
        for i in [ATTN_NORM, Q, K, V] {
            sink.take(&lv[i], g[&lv[i].id()].clone());
        }
        let gx_head = g[&xv.id()].clone();
        c.add(&gx_tail, &gx_head)
    }
}
