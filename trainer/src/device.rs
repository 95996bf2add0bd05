//! Where training runs: f32 on the CPU; with `--features cuda` and a GPU,
//! bf16 compute with f32 master weights.

use candle_core::{DType, Device};

use crate::error::Result;

/// The best device this build can use, and its compute dtype.
pub fn select() -> Result<(Device, DType)> {
    #[cfg(feature = "cuda")]
    {
        if candle_core::utils::cuda_is_available() {
            let dev = Device::new_cuda(0).map_err(|source| crate::Error::Candle {
                op: "open CUDA device 0".into(),
                source,
            })?;
            return Ok((dev, DType::BF16));
        }
    }
    Ok((Device::Cpu, DType::F32))
}

/// Whether [`select`] picks a GPU (a build with `cuda` on a machine with one).
pub fn gpu_available() -> bool {
    #[cfg(feature = "cuda")]
    {
        candle_core::utils::cuda_is_available()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// Where the pipeline's scorer runs, and in which precision: the GPU (bf16,
/// its default) when training runs on one, else the CPU in exact.
pub fn scoring() -> (main_engine::Device, main_engine::matmul::Precision) {
    #[cfg(feature = "cuda")]
    {
        if candle_core::utils::cuda_is_available() {
            let d = main_engine::Device::Cuda(0);
            return (d, d.default_precision());
        }
    }
    (
        main_engine::Device::Cpu,
        main_engine::matmul::Precision::Exact,
    )
}

/// CPU threads for candle's kernels (0: one per core). candle reads
/// `RAYON_NUM_THREADS` once, so this must run before any tensor work.
pub fn set_threads(n: usize) {
    if n > 0 {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}
