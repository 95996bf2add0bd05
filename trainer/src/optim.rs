//! AdamW with linear warm-up and cosine decay, global-norm gradient
//! clipping. Written here (not candle-nn's) because a checkpoint must hold
//! the moments and the step to resume exactly.

use candle_core::Tensor;

use crate::error::{CandleExt, Result};
use crate::model::Param;

#[derive(Clone, Debug)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

pub struct AdamW {
    pub params: AdamWParams,
    /// Updates done so far (bias correction uses it).
    pub step: usize,
    /// First and second moments, one per model parameter, f32.
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(model_params: &[Param], params: AdamWParams) -> Result<AdamW> {
        let zeros = |p: &Param| p.var.as_tensor().zeros_like().op("adam state");
        Ok(AdamW {
            params,
            step: 0,
            m: model_params.iter().map(zeros).collect::<Result<_>>()?,
            v: model_params.iter().map(zeros).collect::<Result<_>>()?,
        })
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to
    /// `model_params[i]`. Weight decay skips vectors (norm weights).
    pub fn update(&mut self, model_params: &[Param], grads: &[Tensor], lr: f64) -> Result<()> {
        self.begin_step();
        for (i, (param, g)) in model_params.iter().zip(grads).enumerate() {
            self.update_one(i, param, g, lr)?;
        }
        Ok(())
    }

    /// Starts an optimizer step: the bias corrections of the
    /// [`AdamW::update_one`] calls that follow use the new step count.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// Updates parameter `i` (`param`, its gradient `grad`) within the step
    /// begun by [`AdamW::begin_step`]: the optimizer step can then run
    /// inside backward, one tensor at a time, as gradients arrive.
    pub fn update_one(&mut self, i: usize, param: &Param, grad: &Tensor, lr: f64) -> Result<()> {
        let p = &self.params;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - p.beta1.powi(t), 1.0 - p.beta2.powi(t));
        let g = grad;
        let m = ((&self.m[i] * p.beta1).op("adam m")? + (g * (1.0 - p.beta1)).op("adam m")?)
            .op("adam m")?;
        let v = ((&self.v[i] * p.beta2).op("adam v")?
            + (g.sqr().op("adam v")? * (1.0 - p.beta2)).op("adam v")?)
        .op("adam v")?;
        let denom = ((&v / c2).op("adam")?.sqrt().op("adam")? + p.eps).op("adam")?;
        let update = ((&m / c1).op("adam")? / denom).op("adam")?;
        let w = param.var.as_tensor();
        let decay = if w.rank() >= 2 {
            1.0 - lr * p.weight_decay
        } else {
            1.0
        };
        let new = ((w * decay).op("adam")? - (update * lr).op("adam")?).op("adam")?;
        param.var.set(&new).op("adam set")?;
        self.m[i] = m;
        self.v[i] = v;
        Ok(())
    }
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay
/// to `peak * min_ratio` at `total`. `step` counts from 0.
pub fn lr_at(step: usize, total: usize, warmup: usize, peak: f64, min_ratio: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    peak * (min_ratio + (1.0 - min_ratio) * cosine)
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm`
/// (0: no clipping); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sum = 0f64;
    for g in grads.iter() {
        sum += g
            .sqr()
            .and_then(|s| s.sum_all())
            .and_then(|s| s.to_dtype(candle_core::DType::F64))
            .and_then(|s| s.to_scalar::<f64>())
            .op("grad norm")?;
    }
    let norm = sum.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * scale).op("clip")?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let lr = |s| lr_at(s, 100, 10, 1e-3, 0.1);
        assert!((lr(0) - 1e-4).abs() < 1e-12);
        assert!((lr(9) - 1e-3).abs() < 1e-12);
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!(lr(50) < lr(20) && lr(50) > lr(90));
        assert!((lr(100) - 1e-4).abs() < 1e-12);
    }

    #[test]
    fn adamw_first_step_moves_each_weight_by_lr() {
        use candle_core::{Device, Var};
        let var = Var::from_vec(vec![1f32, -2.0, 3.0, 0.5], (2, 2), &Device::Cpu).unwrap();
        let params = vec![Param {
            name: "w".into(),
            var,
        }];
        let mut opt = AdamW::new(&params, AdamWParams::default()).unwrap();
        let g = Tensor::from_vec(vec![0.5f32, -0.1, 2.0, 0.0], (2, 2), &Device::Cpu).unwrap();
        opt.update(&params, &[g], 0.1).unwrap();
        let w: Vec<f32> = params[0].var.flatten_all().unwrap().to_vec1().unwrap();
        // Bias-corrected Adam's first step is lr * sign(g) (0 for g = 0).
        let want = [0.9f32, -1.9, 2.9, 0.5];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{w:?} vs {want:?}");
        }
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        use candle_core::Device;
        let mut g = vec![
            Tensor::from_vec(vec![3f32, 0.0], 2, &Device::Cpu).unwrap(),
            Tensor::from_vec(vec![4f32], 1, &Device::Cpu).unwrap(),
        ];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-9);
        let n2 = clip_grad_norm(&mut g, 0.0).unwrap();
        assert!((n2 - 1.0).abs() < 1e-5);
    }
}
