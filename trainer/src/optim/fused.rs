//! The AdamW update of one tensor in one pass over its data: for each block
//! of [`BLOCK`] values the moments are loaded (dequantised), updated with
//! the gradient, stored (requantised), and the weight is updated from the
//! new f32 moments, while the block sits in L1. The old candle-ops update
//! made about 16 element-wise passes with a temporary tensor each.
//!
//! On the CPU it runs inside a candle [`InplaceOp2`] over the weight's own
//! storage (no copy of the weight); on a GPU the same arithmetic runs in
//! the kernel `adamw.cu` over state in device memory (`super::device`).

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp2, Layout};
use half::bf16;

use super::bf16_rounding::{mix64, stochastic};
use super::blockwise8::BLOCK;
use super::moments::MomentBuf;
use super::step_consts::StepConsts;

/// One tensor's optimizer state.
pub struct TensorState {
    pub m: MomentBuf,
    pub v: MomentBuf,
    /// The f32 master weight (bf16 parameters with `--master` only).
    pub master: Option<Vec<f32>>,
    /// On a GPU: the state in device memory, stepped by the GPU kernel
    /// (`m` and `v` above are then empty and `master` is `None`).
    pub device: Option<super::device::DeviceState>,
}

/// The weight being updated, as its storage holds it.
pub enum Weights<'a> {
    F32(&'a mut [f32]),
    Bf16(&'a mut [bf16]),
}

/// The gradient, f32 or bf16.
pub enum Grads<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

/// The whole update of one tensor. Returns `false` if the lengths disagree
/// (the caller checked shapes, so this is a bug guard, not user input).
pub fn adamw_tensor(w: Weights, g: Grads, st: &mut TensorState, k: &StepConsts) -> bool {
    let n = match &w {
        Weights::F32(x) => x.len(),
        Weights::Bf16(x) => x.len(),
    };
    let gn = match &g {
        Grads::F32(x) => x.len(),
        Grads::Bf16(x) => x.len(),
    };
    if gn != n
        || st.m.len() != n
        || st.v.len() != n
        || st.master.as_ref().is_some_and(|m| m.len() != n)
    {
        return false;
    }
    let (mut w, g) = (w, g);
    let (mut m, mut v, mut gb) = ([0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK]);
    // Distinct streams of random bits for m, v and the weight.
    let (key_m, key_v) = (mix64(k.key ^ 0x6d), mix64(k.key ^ 0x76));
    for b in 0..n.div_ceil(BLOCK) {
        let s = b * BLOCK;
        let len = BLOCK.min(n - s);
        let (m, v, gb) = (&mut m[..len], &mut v[..len], &mut gb[..len]);
        match &g {
            Grads::F32(x) => gb.copy_from_slice(&x[s..s + len]),
            Grads::Bf16(x) => {
                for (o, y) in gb.iter_mut().zip(&x[s..s + len]) {
                    *o = y.to_f32();
                }
            }
        }
        st.m.load_block(b, m);
        st.v.load_block(b, v);
        for j in 0..len {
            let gj = gb[j] * k.grad_scale;
            m[j] = k.beta1 * m[j] + (1.0 - k.beta1) * gj;
            v[j] = k.beta2 * v[j] + (1.0 - k.beta2) * gj * gj;
        }
        st.m.store_block(b, m, key_m);
        st.v.store_block(b, v, key_v);
        // The step from the exact new moments (bitsandbytes does the same:
        // quantisation error enters the next step, not this one).
        for j in 0..len {
            gb[j] = (m[j] / k.c1) / ((v[j] / k.c2).sqrt() + k.eps);
        }
        let upd = &gb[..len];
        match (&mut w, st.master.as_mut()) {
            (Weights::F32(x), _) => {
                for (x, u) in x[s..s + len].iter_mut().zip(upd) {
                    *x = *x * k.decay - k.lr * u;
                }
            }
            (Weights::Bf16(x), Some(master)) => {
                for ((x, mw), u) in x[s..s + len]
                    .iter_mut()
                    .zip(&mut master[s..s + len])
                    .zip(upd)
                {
                    *mw = *mw * k.decay - k.lr * u;
                    *x = bf16::from_f32(*mw);
                }
            }
            (Weights::Bf16(x), None) => {
                let key = k.key.wrapping_add(s as u64);
                for (j, (x, u)) in x[s..s + len].iter_mut().zip(upd).enumerate() {
                    let new = x.to_f32() * k.decay - k.lr * u;
                    *x = stochastic(new, mix64(key.wrapping_add(j as u64)));
                }
            }
        }
    }
    true
}

/// [`adamw_tensor`] as a candle in-place op on the weight's storage, the
/// gradient its one source. The state sits in a `RefCell` because candle
/// hands the op out as `&self`.
pub struct FusedAdamW<'a> {
    pub state: RefCell<&'a mut TensorState>,
    pub consts: StepConsts,
}

fn contiguous<'a, T>(data: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("fused AdamW: the {what} is not contiguous"),
    }
}

impl InplaceOp2 for FusedAdamW<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let g = match gs {
            CpuStorage::F32(x) => Grads::F32(contiguous(x, gl, "gradient")?),
            CpuStorage::BF16(x) => Grads::Bf16(contiguous(x, gl, "gradient")?),
            other => candle_core::bail!("fused AdamW: gradient of dtype {:?}", other.dtype()),
        };
        let Some((a, b)) = dst_l.contiguous_offsets() else {
            candle_core::bail!("fused AdamW: the weight is not contiguous")
        };
        let w = match dst {
            CpuStorage::F32(x) => Weights::F32(&mut x[a..b]),
            CpuStorage::BF16(x) => Weights::Bf16(&mut x[a..b]),
            other => candle_core::bail!(
                "fused AdamW: weight of dtype {:?} (f32 or bf16)",
                other.dtype()
            ),
        };
        let mut st = self.state.borrow_mut();
        if !adamw_tensor(w, g, &mut st, &self.consts) {
            candle_core::bail!("fused AdamW: weight, gradient and moments differ in length");
        }
        Ok(())
    }
}
