//! The whole-graph path (`--recompute false`) replayed: `model.rs`'s
//! forward and candle's backward over one micro-batch, op by op.

use main_engine::config::Config;

use super::autograd::{Binary, Ctx, Unary, T};
use super::ops::Builder;
use super::BatchShape;

/// One layer's weights, `p` bytes per element.
struct LayerVars {
    attn_norm: T,
    q: T,
    k: T,
    v: T,
    o: T,
    ffn_norm: T,
    gate: T,
    up: T,
    down: T,
}

fn layer_vars(ctx: &Ctx, c: &Config, p: u64) -> LayerVars {
    let (d, f) = (c.d_model as u64, c.d_ff as u64);
    let q = (c.n_heads * c.head_dim) as u64;
    let kv = (c.n_kv_heads * c.head_dim) as u64;
    LayerVars {
        attn_norm: ctx.var(d, p),
        q: ctx.var(q * d, p),
        k: ctx.var(kv * d, p),
        v: ctx.var(kv * d, p),
        o: ctx.var(d * q, p),
        ffn_norm: ctx.var(d, p),
        gate: ctx.var(f * d, p),
        up: ctx.var(f * d, p),
        down: ctx.var(d * f, p),
    }
}

/// Replays `sft`'s backward of one micro-batch of the whole-graph path
/// over `base` bytes held outside it: (peak, activations, bytes the
/// gradient store holds after backward beyond the weights' gradients).
pub(super) fn replay_whole_graph(
    c: &Config,
    tied: bool,
    e: u64,
    p: u64,
    b: BatchShape,
    base: u64,
) -> (u64, u64, u64) {
    let ctx = Ctx::default();
    let _held = ctx.hold(base);
    let g = Builder { c: &ctx, e };
    let (bs, t) = (b.n_seq as u64, b.seq_len as u64);
    let n = bs * t;
    let nt = b.n_targets as u64;
    let (d, hd, v, f) = (
        c.d_model as u64,
        c.head_dim as u64,
        c.vocab_size as u64,
        c.d_ff as u64,
    );
    let (nh, nkv) = (c.n_heads as u64, c.n_kv_heads as u64);
    let (q, kv) = (nh * hd, nkv * hd);
    // Every weight once, as TrainModel holds them.
    let embd = ctx.var(v * d, p);
    let layers: Vec<LayerVars> = (0..c.n_layers).map(|_| layer_vars(&ctx, c, p)).collect();
    let out_norm = ctx.var(d, p);
    let head = if tied {
        embd.clone()
    } else {
        ctx.var(v * d, p)
    };
    let weights_end = ctx.live();

    let loss = {
        let _ids = ctx.leaf(n, 4);
        let mut x = ctx.index_select(&g.w(&embd), n, d);
        let cos = ctx.leaf(t * hd, e);
        let sin = ctx.leaf(t * hd, e);
        let mask = ctx.leaf(t * t, e);
        let s = bs * nh * t * t;
        for lv in &layers {
            let h = g.rms_norm(&x, &lv.attn_norm, n);
            let qh = g.heads(&g.linear(&h, &lv.q, n, q));
            let kh = g.heads(&g.linear(&h, &lv.k, n, kv));
            let vh = g.heads(&g.linear(&h, &lv.v, n, kv));
            let qr = g.rope(&qh, &cos, &sin);
            let kr = g.rope(&kh, &cos, &sin);
            let kr = g.repeat_kv(&kr, nh / nkv);
            let vr = g.repeat_kv(&vh, nh / nkv);
            let att = ctx.affine(&ctx.matmul(&qr, &ctx.transpose(&kr), s));
            let att = g.bcast(Binary::Add, &att, &mask);
            let att = g.softmax(&att, bs * nh * t);
            let o = ctx.matmul(&att, &vr, n * q);
            let o = ctx.reshape_copy(&ctx.transpose(&o));
            x = ctx.add(&x, &g.linear(&o, &lv.o, n, d));
            let h = g.rms_norm(&x, &lv.ffn_norm, n);
            let gate = ctx.unary(Unary::Silu, &g.linear(&h, &lv.gate, n, f));
            let up = g.linear(&h, &lv.up, n, f);
            let down = g.linear(&ctx.mul(&gate, &up), &lv.down, n, d);
            x = ctx.add(&x, &down);
        }
        let hidden = g.rms_norm(&x, &out_norm, n);
        let rows = ctx.index_select(&hidden, nt, d);
        let logits = ctx.matmul(&rows, &ctx.transpose(&g.w(&head)), nt * v);
        let logits = ctx.to_dtype(&logits, 4);
        let lsm = g.log_softmax(&logits, nt);
        let lp = ctx.reshape(&ctx.gather(&lsm, nt)); // squeeze
        let w = ctx.leaf(nt, 4);
        let weighted = ctx.mul(&lp, &w);
        let sum = ctx.sum_keepdim(&weighted, 1);
        ctx.affine(&ctx.unary(Unary::Neg, &sum)) // / grad_accum
    };
    let activations = ctx.live() - weights_end;
    let grads = ctx.backward(&loss);
    let peak = ctx.peak();
    let store = ctx.live() - weights_end - activations;
    drop(grads);
    drop(loss);
    (peak, activations, store)
}
