//! The global gradient norm with one host synchronisation per step: each
//! tensor's sum of squares stays on the device, the sums are added there,
//! and only the total is read back (the old code read every tensor's sum,
//! one sync per tensor). Clipping then scales the gradients inside the
//! fused update ([`super::AdamW::grad_scale`]) instead of in a pass of its own.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use crate::error::{CandleExt, Result};

/// Sum of squares of a CPU tensor in f64, in one read of its storage.
struct SumSquares;

impl CustomOp1 for SumSquares {
    fn name(&self) -> &'static str {
        "sum-squares"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn sum<T: Copy>(x: &[T], l: &Layout, f: impl Fn(T) -> f64) -> candle_core::Result<f64> {
            match l.contiguous_offsets() {
                Some((a, b)) => Ok(x[a..b]
                    .iter()
                    .map(|&v| {
                        let v = f(v);
                        v * v
                    })
                    .sum()),
                None => candle_core::bail!("sum-squares: the gradient is not contiguous"),
            }
        }
        let total = match s {
            CpuStorage::F32(x) => sum(x, l, |v| v as f64)?,
            CpuStorage::BF16(x) => sum(x, l, |v| v.to_f64())?,
            CpuStorage::F16(x) => sum(x, l, |v| v.to_f64())?,
            CpuStorage::F64(x) => sum(x, l, |v| v)?,
            other => candle_core::bail!("sum-squares: gradient of dtype {:?}", other.dtype()),
        };
        Ok((CpuStorage::F64(vec![total]), Shape::from(())))
    }
}

/// `sum(g^2)` of one gradient as a scalar tensor on its device (f64 on the
/// CPU, f32 elsewhere: no f64 reductions on every GPU).
pub fn sum_squares(g: &Tensor) -> Result<Tensor> {
    if g.device().is_cpu() {
        let g = g.contiguous().op("grad norm")?;
        g.apply_op1_no_bwd(&SumSquares).op("grad norm")
    } else {
        g.to_dtype(DType::F32)
            .and_then(|g| g.sqr())
            .and_then(|g| g.sum_all())
            .op("grad norm")
    }
}

/// The L2 norm of all `grads` together, read back once.
pub fn global_grad_norm(grads: &[Tensor]) -> Result<f64> {
    let Some(first) = grads.first() else {
        return Ok(0.0);
    };
    let mut total = sum_squares(first)?;
    for g in &grads[1..] {
        total = (total + sum_squares(g)?).op("grad norm")?;
    }
    let total = total
        .to_dtype(DType::F64)
        .and_then(|t| t.to_scalar::<f64>())
        .op("grad norm")?;
    Ok(total.sqrt())
}

/// The factor that brings a global norm `norm` down to `max_norm` (1 when
/// it is already within, or `max_norm` is 0: no clipping).
pub fn clip_scale(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm`
/// (0: no clipping); returns the norm before clipping. For callers that
/// need clipped gradients themselves; the trainer passes [`clip_scale`] to
/// the optimizer instead.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_grad_norm(grads)?;
    let scale = clip_scale(norm, max_norm);
    if scale != 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * scale).op("clip")?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut g = vec![
            Tensor::from_vec(vec![3f32, 0.0], 2, &Device::Cpu).unwrap(),
            Tensor::from_vec(vec![4f32], 1, &Device::Cpu).unwrap(),
        ];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-9);
        let n2 = clip_grad_norm(&mut g, 0.0).unwrap();
        assert!((n2 - 1.0).abs() < 1e-5);
    }

    #[test]
    fn norm_of_mixed_dtypes_and_layouts_matches_f64() {
        let a =
            Tensor::from_vec(vec![1f32, -2.0, 3.0, 0.5, 7.0, -1.5], (2, 3), &Device::Cpu).unwrap();
        // A transposed (non-contiguous) view and a bf16 copy.
        let b = a.t().unwrap();
        let c = a.to_dtype(DType::BF16).unwrap();
        let want: f64 = 3.0 * [1.0f64, 4.0, 9.0, 0.25, 49.0, 2.25].iter().sum::<f64>();
        let n = global_grad_norm(&[a, b, c]).unwrap();
        assert!((n - want.sqrt()).abs() < 1e-12, "{n} vs {}", want.sqrt());
        assert_eq!(global_grad_norm(&[]).unwrap(), 0.0);
    }
}
