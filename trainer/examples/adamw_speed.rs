//! The fused AdamW update against the candle-ops update it replaced (the
//! peer, kept here verbatim in substance: ~16 element-wise tensor ops per
//! tensor), side by side on one tensor, printing ms per update and the
//! ratio. `cargo run --release -p main-trainer --example adamw_speed [N]`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use main_trainer::model::Param;
use main_trainer::optim::{AdamW, AdamWParams, MomentsKind};

/// The previous implementation's update of one tensor (candle ops, f32).
fn candle_ops_update(w: &Var, m: &mut Tensor, v: &mut Tensor, g: &Tensor, t: i32, lr: f64) {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    let m2 = ((&*m * b1).unwrap() + (g * (1.0 - b1)).unwrap()).unwrap();
    let v2 = ((&*v * b2).unwrap() + (g.sqr().unwrap() * (1.0 - b2)).unwrap()).unwrap();
    let denom = ((&v2 / c2).unwrap().sqrt().unwrap() + eps).unwrap();
    let update = ((&m2 / c1).unwrap() / denom).unwrap();
    let new = ((w.as_tensor() * 1.0).unwrap() - (update * lr).unwrap()).unwrap();
    w.set(&new).unwrap();
    *m = m2;
    *v = v2;
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 24);
    let reps = 10;
    let dev = Device::Cpu;
    let g = Tensor::randn(0f32, 1e-3, (n / 1024, 1024), &dev).unwrap();
    let w0 = Tensor::randn(0f32, 0.02, (n / 1024, 1024), &dev).unwrap();

    let w = Var::from_tensor(&w0).unwrap();
    let (mut m, mut v) = (w0.zeros_like().unwrap(), w0.zeros_like().unwrap());
    candle_ops_update(&w, &mut m, &mut v, &g, 1, 1e-4);
    let t0 = Instant::now();
    for t in 0..reps {
        candle_ops_update(&w, &mut m, &mut v, &g, t + 2, 1e-4);
    }
    let peer = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
    println!("candle ops (f32 moments):        {peer:8.2} ms per update of {n} values");

    for (moments, dtype) in [
        (MomentsKind::F32, DType::F32),
        (MomentsKind::Bf16, DType::BF16),
        (MomentsKind::Bit8, DType::BF16),
    ] {
        let params = vec![Param {
            name: "w".into(),
            var: Var::from_tensor(&w0.to_dtype(dtype).unwrap()).unwrap(),
        }];
        let gd = g.to_dtype(dtype).unwrap();
        let mut opt = AdamW::new(
            &params,
            AdamWParams {
                moments,
                ..Default::default()
            },
        )
        .unwrap();
        opt.update(&params, std::slice::from_ref(&gd), 1e-4)
            .unwrap();
        let t0 = Instant::now();
        for _ in 0..reps {
            opt.update(&params, std::slice::from_ref(&gd), 1e-4)
                .unwrap();
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
        println!(
            "fused, {:>4} moments, {:?} weights: {ms:8.2} ms  ({:.2}x the candle-ops update)",
            moments.name(),
            dtype,
            peer / ms
        );
    }
}
