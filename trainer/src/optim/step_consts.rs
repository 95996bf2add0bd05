//! The scalars of one tensor's AdamW update, shared by the CPU's fused
//! update (`fused.rs`) and the GPU's kernel launch (`device.rs`).

/// The scalars of one tensor's update.
#[derive(Clone, Copy, Debug)]
pub struct StepConsts {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Bias corrections `1 - beta^t`.
    pub c1: f32,
    pub c2: f32,
    pub lr: f32,
    /// `1 - lr * weight_decay` for matrices, 1 for vectors.
    pub decay: f32,
    /// Multiplies the gradient (global-norm clipping), 1 without.
    pub grad_scale: f32,
    /// Random bits for stochastic rounding: `mix64(key + element)`.
    pub key: u64,
}
