//! The fused AdamW against an f64 reference AdamW, and its edge cases.

use candle_core::{DType, Device, Tensor, Var};

use super::*;
use crate::model::Param;

#[test]
fn adamw_first_step_moves_each_weight_by_lr() {
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
fn bad_calls_are_clear_errors() {
    let var = Var::from_vec(vec![1f32, 2.0], 2, &Device::Cpu).unwrap();
    let params = vec![Param {
        name: "w".into(),
        var,
    }];
    let mut opt = AdamW::new(&params, AdamWParams::default()).unwrap();
    let g = Tensor::from_vec(vec![1f32, 2.0, 3.0], 3, &Device::Cpu).unwrap();
    let e = opt
        .update_one(0, &params[0], &g, 0.1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("begin_step"), "{e}");
    opt.begin_step();
    let e = opt
        .update_one(0, &params[0], &g, 0.1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'w'") && e.contains("[3]"), "{e}");
    let e = opt
        .update_one(5, &params[0], &g, 0.1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("parameter 5"), "{e}");
}

/// The small problem: a noisy separable quadratic over `N` weights,
/// `grad_i = a_i (w_i - t_i) + noise(step, i)`, with curvatures `a_i` over
/// two decades, in one matrix (weight decay applies) and one vector.
const N: usize = 600;

fn uniform(i: u64) -> f64 {
    (bf16_rounding::mix64(i) >> 11) as f64 / (1u64 << 53) as f64
}

fn problem() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let a: Vec<f64> = (0..N)
        .map(|i| 10f64.powf(2.0 * uniform(i as u64) - 1.0))
        .collect();
    let t: Vec<f64> = (0..N).map(|i| uniform(1000 + i as u64) - 0.5).collect();
    let w0: Vec<f64> = (0..N)
        .map(|i| 0.1 * (uniform(2000 + i as u64) - 0.5))
        .collect();
    (a, t, w0)
}

fn grad(a: &[f64], t: &[f64], w: &[f64], step: usize) -> Vec<f64> {
    (0..N)
        .map(|i| a[i] * (w[i] - t[i]) + 0.3 * (uniform(((step as u64) << 20) ^ i as u64) - 0.5))
        .collect()
}

/// AdamW in f64, the textbook formula, as the oracle.
struct Reference {
    m: Vec<f64>,
    v: Vec<f64>,
    step: i32,
}

impl Reference {
    fn step(&mut self, w: &mut [f64], g: &[f64], lr: f64, wd: f64, matrix_len: usize) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        self.step += 1;
        let (c1, c2) = (1.0 - b1.powi(self.step), 1.0 - b2.powi(self.step));
        for i in 0..w.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            let u = (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + eps);
            let decay = if i < matrix_len { 1.0 - lr * wd } else { 1.0 };
            w[i] = w[i] * decay - lr * u;
        }
    }
}

/// Runs `steps` steps of the fused AdamW (weights in `dtype`) and of the
/// reference, each on its own trajectory of the same problem from the same
/// start (the weights as stored, so bf16's rounding of the start is not
/// counted); returns the final RMS weight difference divided by the RMS
/// distance the reference weights moved.
fn relative_drift(moments: MomentsKind, dtype: DType, master: bool, steps: usize) -> f64 {
    let (a, t, w0) = problem();
    let rows = 2;
    let matrix_len = N - 40;
    let (lr, wd) = (2e-3, 0.1);
    let dev = Device::Cpu;
    let mk = |v: &[f64], shape: &[usize]| {
        let x: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Var::from_tensor(
            &Tensor::from_vec(x, shape, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap()
    };
    let params = vec![
        Param {
            name: "blk.0.ffn_up.weight".into(),
            var: mk(&w0[..matrix_len], &[rows, matrix_len / rows]),
        },
        Param {
            name: "blk.0.ffn_norm.weight".into(),
            var: mk(&w0[matrix_len..], &[N - matrix_len]),
        },
    ];
    let mut opt = AdamW::new(
        &params,
        AdamWParams {
            weight_decay: wd,
            moments,
            master,
            seed: 7,
            ..Default::default()
        },
    )
    .unwrap();
    let mut reference = Reference {
        m: vec![0.0; N],
        v: vec![0.0; N],
        step: 0,
    };
    let read = || -> Vec<f64> {
        params
            .iter()
            .flat_map(|p| {
                p.var
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            })
            .collect()
    };
    let start = read();
    let mut w_ref = start.clone();
    for step in 0..steps {
        let w = read();
        let g = grad(&a, &t, &w, step);
        let g_ref = grad(&a, &t, &w_ref, step);
        let gt = |r: std::ops::Range<usize>, shape: &[usize]| {
            let x: Vec<f32> = g[r].iter().map(|&x| x as f32).collect();
            Tensor::from_vec(x, shape, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        let grads = [
            gt(0..matrix_len, &[rows, matrix_len / rows]),
            gt(matrix_len..N, &[N - matrix_len]),
        ];
        opt.update(&params, &grads, lr).unwrap();
        reference.step(&mut w_ref, &g_ref, lr, wd, matrix_len);
    }
    let w = read();
    let rms = |f: &dyn Fn(usize) -> f64| (0..N).map(|i| f(i).powi(2)).sum::<f64>().sqrt();
    rms(&|i| w[i] - w_ref[i]) / rms(&|i| w_ref[i] - start[i])
}

/// 400 steps at lr 2e-3 on the noisy quadratic; the final RMS distance to
/// the f64 reference relative to the RMS distance travelled. Measured
/// (2026-12-07): f32 4.1e-6, bf16 moments 1.9e-3, 8-bit moments 1.8e-2,
/// bf16 weights + f32 master 1.6e-3, bf16 weights (stochastic rounding)
/// 1.6e-2, 8-bit moments + bf16 weights 2.3e-2. The bounds sit about 1.5-2x
/// above: a real regression (a lost update, a frozen moment) breaks them.
#[test]
fn fused_adamw_tracks_an_f64_reference() {
    let cases = [
        (MomentsKind::F32, DType::F32, false, 2e-5),
        (MomentsKind::Bf16, DType::F32, false, 5e-3),
        (MomentsKind::Bit8, DType::F32, false, 3e-2),
        (MomentsKind::F32, DType::BF16, true, 5e-3),
        (MomentsKind::F32, DType::BF16, false, 3e-2),
        (MomentsKind::Bit8, DType::BF16, false, 4e-2),
    ];
    let mut report = String::new();
    let mut failed = false;
    for (moments, dtype, master, bound) in cases {
        let d = relative_drift(moments, dtype, master, 400);
        report += &format!("{moments:?} {dtype:?} master={master}: {d:.2e} (bound {bound:.0e})\n");
        failed |= d.is_nan() || d > bound;
    }
    eprintln!("{report}");
    assert!(!failed, "{report}");
}
