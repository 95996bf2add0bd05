//! AdamW with linear warm-up and cosine decay, global-norm gradient
//! clipping. Written here (not candle-nn's) because a checkpoint must hold
//! the moments and the step to resume exactly, and because the moments and
//! weights may be kept in less than f32 (issue 19):
//!
//! - `moments`: the moment buffers, f32, bf16 or 8-bit blockwise
//!   (`blockwise8`, bitsandbytes' dynamic map);
//! - `fused`: one tensor's whole update in one pass over its data;
//! - `bf16_rounding`: stochastic rounding, so bf16 weights without an f32
//!   master still take updates far below bf16's spacing;
//! - `grad_norm`: the global gradient norm with one host sync per step;
//! - `schedule`: the learning rate.
//!
//! On the CPU the moments live in plain Rust buffers and the update runs
//! over the weight's own storage. On a GPU they live in device memory
//! beside the weight (`device`) and the update is one launch of the fused
//! kernel `adamw.cu` per tensor, the CPU's arithmetic to the bit.

pub mod bf16_rounding;
pub mod blockwise8;
pub mod device;
mod fused;
mod grad_norm;
pub mod moments;
mod schedule;
mod step_consts;
#[cfg(test)]
mod tests;

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor};

use crate::error::{CandleExt, Error, Result};
use crate::model::Param;

use fused::FusedAdamW;
pub use fused::TensorState;
pub use grad_norm::{clip_grad_norm, clip_scale, global_grad_norm, sum_squares};
pub use moments::{MomentBuf, MomentsKind};
pub use schedule::lr_at;
use step_consts::StepConsts;

#[derive(Clone, Debug)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// How the moments are stored.
    pub moments: MomentsKind,
    /// Keep an f32 master copy of bf16 weights (ignored for f32 weights,
    /// which are their own master).
    pub master: bool,
    /// Seeds the stochastic rounding of bf16 weights and moments.
    pub seed: u64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            moments: MomentsKind::F32,
            master: false,
            seed: 0,
        }
    }
}

pub struct AdamW {
    pub params: AdamWParams,
    /// Updates begun so far (bias correction uses it).
    pub step: usize,
    /// Moments (and master weight) of each model parameter, in its order.
    pub state: Vec<TensorState>,
    /// Multiplies every gradient in [`AdamW::update_one`]: global-norm
    /// clipping sets it before a step ([`clip_scale`]); 1 otherwise.
    pub grad_scale: f64,
    /// The 8-bit maps on the GPU (state on a GPU only).
    maps: Option<device::DeviceMaps>,
}

impl AdamW {
    pub fn new(model_params: &[Param], params: AdamWParams) -> Result<AdamW> {
        let mut state = Vec::with_capacity(model_params.len());
        let mut maps = None;
        for p in model_params {
            let w = p.var.as_tensor();
            if w.device().is_cuda() {
                if maps.is_none() {
                    maps = Some(device::DeviceMaps::new(w.device())?);
                }
                state.push(TensorState {
                    m: MomentBuf::zeros(params.moments, 0, true),
                    v: MomentBuf::zeros(params.moments, 0, false),
                    master: None,
                    device: Some(device::DeviceState::zeros(
                        params.moments,
                        w,
                        params.master,
                    )?),
                });
                continue;
            }
            let n = w.elem_count();
            let master = if params.master && w.dtype() != DType::F32 {
                let values = w
                    .flatten_all()
                    .and_then(|x| x.to_dtype(DType::F32))
                    .and_then(|x| x.to_vec1::<f32>())
                    .op("master weight")?;
                Some(values)
            } else {
                None
            };
            state.push(TensorState {
                m: MomentBuf::zeros(params.moments, n, true),
                v: MomentBuf::zeros(params.moments, n, false),
                master,
                device: None,
            });
        }
        Ok(AdamW {
            params,
            step: 0,
            state,
            grad_scale: 1.0,
            maps,
        })
    }

    /// Bytes of optimizer state (moments and master copies).
    pub fn state_bytes(&self) -> usize {
        self.state
            .iter()
            .map(|s| {
                self.params.moments.bytes(s.m.len())
                    + s.master.as_ref().map_or(0, |m| 4 * m.len())
                    + s.device.as_ref().map_or(0, |d| d.bytes())
            })
            .sum()
    }

    /// Starts an optimizer step: every [`AdamW::update_one`] until the next
    /// call belongs to it (same bias correction, same random bits).
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// Updates parameter `i` (`param` = `model.params[i]`) with its
    /// gradient, in one fused pass; the gradient may be dropped as soon as
    /// this returns. Weight decay skips vectors (norm weights).
    pub fn update_one(&mut self, i: usize, param: &Param, grad: &Tensor, lr: f64) -> Result<()> {
        if self.step == 0 {
            return Err(Error::invalid(
                "optimizer",
                "update_one called before begin_step",
            ));
        }
        let n_state = self.state.len();
        let st = self.state.get_mut(i).ok_or_else(|| {
            Error::invalid(
                "optimizer",
                format!(
                    "parameter {i} ('{}') but the optimizer has {n_state}",
                    param.name
                ),
            )
        })?;
        let w = param.var.as_tensor();
        if grad.dims() != w.dims() {
            return Err(Error::invalid(
                "gradient",
                format!(
                    "'{}' has shape {:?}, its gradient {:?}",
                    param.name,
                    w.dims(),
                    grad.dims()
                ),
            ));
        }
        let state_len = match &st.device {
            Some(d) => d.m.elem_count(),
            None => st.m.len(),
        };
        if state_len != w.elem_count() {
            return Err(Error::invalid(
                "optimizer",
                format!(
                    "parameter {i} is '{}', not the tensor its state was made for",
                    param.name
                ),
            ));
        }
        let p = &self.params;
        let t = self.step as i32;
        let decay = if w.rank() >= 2 {
            1.0 - lr * p.weight_decay
        } else {
            1.0
        };
        let consts = StepConsts {
            beta1: p.beta1 as f32,
            beta2: p.beta2 as f32,
            eps: p.eps as f32,
            c1: (1.0 - p.beta1.powi(t)) as f32,
            c2: (1.0 - p.beta2.powi(t)) as f32,
            lr: lr as f32,
            decay: decay as f32,
            grad_scale: self.grad_scale as f32,
            key: bf16_rounding::tensor_key(p.seed, self.step, i),
        };
        let what = format!("AdamW update of '{}'", param.name);
        if let Some(d) = &st.device {
            let maps = self.maps.as_ref().ok_or_else(|| {
                Error::invalid("optimizer", "state on the GPU without the 8-bit maps")
            })?;
            let grad = match grad.dtype() {
                DType::F32 | DType::BF16 => grad.clone(),
                _ => grad.to_dtype(DType::F32).op(&what)?,
            };
            return device::step(w, &grad, d, maps, p.moments, &consts);
        }
        let cpu = Device::Cpu;
        let grad = match grad.dtype() {
            DType::F32 | DType::BF16 => grad.to_device(&cpu),
            _ => grad.to_dtype(DType::F32).and_then(|g| g.to_device(&cpu)),
        }
        .and_then(|g| g.contiguous())
        .op(&what)?;
        let op = FusedAdamW {
            state: RefCell::new(st),
            consts,
        };
        if w.device().is_cpu() {
            w.inplace_op2(&grad, &op).op(&what)?;
        } else {
            // A device without a kernel here (neither the CPU nor CUDA):
            // through host memory.
            let host = w.to_device(&cpu).op(&what)?;
            host.inplace_op2(&grad, &op).op(&what)?;
            let back = host.to_device(w.device()).op(&what)?;
            param.var.set(&back).op(&what)?;
        }
        Ok(())
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to
    /// `model_params[i]`: [`AdamW::begin_step`], then
    /// [`AdamW::update_one`] for each.
    pub fn update(&mut self, model_params: &[Param], grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != model_params.len() {
            return Err(Error::invalid(
                "gradients",
                format!("{} for {} parameters", grads.len(), model_params.len()),
            ));
        }
        self.begin_step();
        for (i, (param, g)) in model_params.iter().zip(grads).enumerate() {
            self.update_one(i, param, g, lr)?;
        }
        Ok(())
    }
}
