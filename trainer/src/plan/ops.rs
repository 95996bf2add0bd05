//! `model.rs`'s forward ops on the memory replay, one call per candle
//! call: shared by the whole-graph replay ([`super::whole_graph`]) and the
//! layerwise one ([`super::layerwise`]).

use super::autograd::{Binary, Ctx, Unary, T};

/// `model.rs`'s forward ops on the replay, one call per candle call.
pub(super) struct Builder<'a> {
    pub(super) c: &'a Ctx,
    /// Compute bytes per element.
    pub(super) e: u64,
}

impl Builder<'_> {
    /// A weight in the compute dtype (`TrainModel::w`): the f32 master
    /// itself, or its cast.
    pub(super) fn w(&self, var: &T) -> T {
        self.c.to_dtype(var, self.e)
    }
    /// `x.matmul(w.t())` of `rows` rows into `out` columns.
    pub(super) fn linear(&self, x: &T, var: &T, rows: u64, out: u64) -> T {
        let w = self.w(var);
        self.c.matmul(x, &self.c.transpose(&w), rows * out)
    }
    /// `broadcast_*`: the smaller side becomes a broadcast view first.
    pub(super) fn bcast(&self, b: Binary, l: &T, r: &T) -> T {
        let n = l.numel.max(r.numel);
        let l = if l.numel < n {
            self.c.broadcast_as(l, n)
        } else {
            l.clone()
        };
        let r = if r.numel < n {
            self.c.broadcast_as(r, n)
        } else {
            r.clone()
        };
        self.c.binary(b, &l, &r)
    }
    /// `model::rms_norm` over `rows` rows.
    pub(super) fn rms_norm(&self, x: &T, w: &T, rows: u64) -> T {
        let c = self.c;
        let x32 = c.to_dtype(x, 4);
        let ms = c.affine(&c.sum_keepdim(&c.unary(Unary::Sqr, &x32), rows)); // mean
        let r = c.unary(Unary::Recip, &c.unary(Unary::Sqrt, &c.affine(&ms))); // + eps
        let y = c.to_dtype(&self.bcast(Binary::Mul, &x32, &r), x.elem);
        self.bcast(Binary::Mul, &y, &self.w(w))
    }
    /// `model::rope` on a contiguous `(B, heads, T, hd)` tensor.
    pub(super) fn rope(&self, x: &T, cos: &T, sin: &T) -> T {
        let c = self.c;
        let half = x.numel / 2;
        let x1 = c.narrow(x, 0, half);
        let x2 = c.narrow(x, half, half);
        let rotated = c.cat(&[&c.unary(Unary::Neg, &x2), &x1]);
        c.add(
            &self.bcast(Binary::Mul, x, cos),
            &self.bcast(Binary::Mul, &rotated, sin),
        )
    }
    /// candle_nn::ops::softmax (the generic form model.rs calls).
    pub(super) fn softmax(&self, x: &T, rows: u64) -> T {
        let c = self.c;
        let max = c.max_keepdim(x, rows);
        let diff = self.bcast(Binary::Sub, x, &max);
        let num = c.unary(Unary::Exp, &diff);
        let den = c.sum_keepdim(&num, rows);
        self.bcast(Binary::Div, &num, &den)
    }
    pub(super) fn log_softmax(&self, x: &T, rows: u64) -> T {
        let c = self.c;
        let max = c.max_keepdim(x, rows);
        let diff = self.bcast(Binary::Sub, x, &max);
        let sum_exp = c.sum_keepdim(&c.unary(Unary::Exp, &diff), rows);
        self.bcast(Binary::Sub, &diff, &c.unary(Unary::Log, &sum_exp))
    }
    /// (rows, heads * hd) -> (B, heads, T, hd): reshape and transpose are
    /// views, `contiguous` copies.
    pub(super) fn heads(&self, y: &T) -> T {
        let c = self.c;
        c.contiguous_copy(&c.transpose(&c.reshape(y)))
    }
    /// `model::repeat_kv`: unsqueeze (view), expand (view), reshape of the
    /// strided result (copy).
    pub(super) fn repeat_kv(&self, y: &T, rep: u64) -> T {
        if rep == 1 {
            return y.clone();
        }
        let c = self.c;
        c.reshape_copy(&c.broadcast_as(&c.reshape(y), y.numel * rep))
    }
}
