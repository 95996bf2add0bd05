//! The GPU path against the CPU: every kernel and the whole packed forward
//! pass, through `emulator::Emulator` (kernels.cu compiled as C++) here, and
//! on a real GPU (device 0) when `MAIN_GPU_TESTS=1` (`scripts/check-gpu`,
//! which builds with `--features cuda` and runs these one at a time).
//!
//! On a GPU each test runs in a process of its own (`scripts/check-gpu
//! tests` calls the test binary once per test with `--exact`): a kernel
//! that faults (an illegal address) leaves its CUDA context unusable for
//! every later call, so tests sharing one process (one context, opened
//! once by `device`) would all fail after the first fault. One process per
//! test keeps a fault to the test that caused it.

use std::sync::Arc;

use super::backend::{Arg, Backend, Buf, Elem};
use super::emulator::Emulator;
use super::forward::{decode_into, GpuModel};
use super::{GpuSide, GpuView};
use crate::error::Error;
use crate::logprob::head_logprobs;
use crate::matmul::{Precision, Weight};
use crate::model::{Model, Runtime};
use crate::quant::{dequantize_row, quantize_row, DType};

const GIB: usize = 1 << 30;

fn emulator(limit: usize) -> Arc<dyn Backend> {
    Arc::new(Emulator::new(limit))
}

/// Whether these tests run on a real GPU (`MAIN_GPU_TESTS=1`).
fn on_gpu() -> bool {
    std::env::var_os("MAIN_GPU_TESTS").is_some_and(|v| v == "1")
}

/// The device under test: GPU 0 with `MAIN_GPU_TESTS=1` (opened once per
/// process: compiling the kernels takes seconds), else an emulator of
/// `limit` bytes.
fn device(limit: usize) -> Arc<dyn Backend> {
    if !on_gpu() {
        return emulator(limit);
    }
    #[cfg(feature = "cuda")]
    {
        static GPU: std::sync::OnceLock<Arc<dyn Backend>> = std::sync::OnceLock::new();
        GPU.get_or_init(|| {
            Arc::new(super::driver::CudaDevice::open(0).unwrap_or_else(|e| panic!("{e}")))
        })
        .clone()
    }
    #[cfg(not(feature = "cuda"))]
    panic!("MAIN_GPU_TESTS=1 needs a build with --features cuda")
}

/// How far packing may move a view's numbers: nowhere on the emulator;
/// on a GPU cuBLAS may pick another kernel (another summation order) for
/// another batch shape.
fn packing_tolerance(p: Precision) -> f64 {
    match (on_gpu(), p) {
        (false, _) => 0.0,
        (true, Precision::Bf16) => 5e-3,
        (true, _) => 1e-5,
    }
}

/// A fixture file: under `$MAIN_FIXTURES` (as scripts/fetch-fixtures and
/// scripts/check-gpu name it), else the checkout's fixtures/. Missing, the
/// test is skipped, or fails with `MAIN_REQUIRE_FIXTURES=1`.
fn fixture(rel: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("MAIN_FIXTURES").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
        std::path::PathBuf::from,
    );
    let p = dir.join(rel);
    if p.exists() {
        Some(p)
    } else if std::env::var_os("MAIN_REQUIRE_FIXTURES").is_some_and(|v| v == "1") {
        // scripts/check-gpu: a missing fixture is a failure, not a pass.
        panic!("{} is missing (MAIN_REQUIRE_FIXTURES=1)", p.display())
    } else {
        eprintln!(
            "skipped: {} is missing (run scripts/fetch-fixtures)",
            p.display()
        );
        None
    }
}

/// Deterministic values in about [-2, 2] with some outliers.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 33) as f32 / (1u64 << 31) as f32;
            let v = 4.0 * u - 2.0;
            if i % 97 == 0 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

fn bf16_round(v: f32) -> f32 {
    let u = v.to_bits();
    let r = u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16;
    f32::from_bits(r << 16)
}

// One file per part of the GPU path: the kernels one by one, the forward
// pass and its memory, batched generation, the libraries it loads, the
// whole scorer.
mod forward;
mod generation;
mod kernels;
mod libraries;
mod scorer;
