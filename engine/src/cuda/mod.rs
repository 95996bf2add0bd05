//! The GPU path (DESIGN.md §4b): the same forward pass and fused scorer as
//! the CPU, on an NVIDIA GPU, with no ML framework.
//!
//! - [`backend`]: the device as a small trait; `driver` is the real GPU
//!   (feature `cuda`: cudarc's driver API, NVRTC, cuBLAS, loaded at run
//!   time), `emulator` runs the same kernels on the CPU in tests.
//! - `kernels.cu`: the CUDA C kernels, compiled by NVRTC at load;
//!   `adamw.cu`: the trainer's fused AdamW update.
//! - [`forward`]: weights on the device, the packed forward pass and the
//!   decode step.
//! - [`decode`]: batched generation's model on the GPU (KV caches in device
//!   memory), driven by `generate::generate_batch_with`.
//! - [`GpuSide`] (here): many views of one model packed without padding
//!   into batches sized to the device's free memory, continuing a prompt
//!   prefix computed once; what `scorer::Scorer` calls on a GPU.

pub mod backend;
pub mod decode;
#[cfg(feature = "cuda")]
pub mod driver;
// Tests load models from files and build the emulator with the host's C++
// compiler: native builds with file access only.
#[cfg(all(test, feature = "std-fs", not(target_arch = "wasm32")))]
pub mod emulator;
pub mod forward;
#[cfg(all(test, feature = "std-fs", not(target_arch = "wasm32")))]
mod tests;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::matmul::Precision;
use crate::model::Model;
use backend::{Backend, Buf};
use forward::GpuModel;

/// The kernel source, compiled at load for the device's architecture.
pub const KERNEL_SOURCE: &str = include_str!("kernels.cu");

/// The fused AdamW update of one tensor (`adamw.cu`): the trainer's
/// optimizer on a GPU (`main_trainer::optim::device`), compiled by NVRTC
/// with [`NVRTC_OPTIONS`] like the scorer's kernels; kept here with the
/// other CUDA ops so NVRTC's checks cover it.
pub const ADAMW_SOURCE: &str = include_str!("adamw.cu");

/// NVRTC's options besides `--gpu-architecture`, and why each is there.
/// The kernels are tested against the CPU's IEEE f32 arithmetic, the weight
/// decoders bit for bit, and the emulator (tests only) translates this same
/// list into its C++ compiler's flags, so what is tested is what NVRTC builds:
///
/// - `--fmad=false`: NVRTC's default contracts `a * b + c` into one fused
///   multiply-add, rounded once; the CPU rounds the product and then the
///   sum (Q4_1 `q * d + m`, Q4_K / Q5_K `d1 * q - m1`, RoPE, RMSNorm,
///   SwiGLU, the attention's running sums), so a contracted decoder differs
///   from the CPU in the last bit of about one weight in three. A kernel
///   that wants a fused multiply-add must ask for it (`__fmaf_rn`), which
///   this option leaves alone.
/// - `--ftz=false`, `--prec-div=true`, `--prec-sqrt=true`: no flush of
///   subnormals to zero, IEEE-rounded division and square root, as the CPU.
pub const NVRTC_OPTIONS: &[&str] = &[
    "--std=c++17",
    "--fmad=false",
    "--ftz=false",
    "--prec-div=true",
    "--prec-sqrt=true",
];

/// Every `extern "C"` kernel of `kernels.cu`: loaded at start, so a missing
/// one fails at load rather than mid-run.
pub const KERNELS: &[&str] = &[
    "dequant_q4_0_f32",
    "dequant_q4_0_bf16",
    "dequant_q4_1_f32",
    "dequant_q4_1_bf16",
    "dequant_q8_0_f32",
    "dequant_q8_0_bf16",
    "dequant_q4_k_f32",
    "dequant_q4_k_bf16",
    "dequant_q5_k_f32",
    "dequant_q5_k_bf16",
    "dequant_q6_k_f32",
    "dequant_q6_k_bf16",
    "dequant_f32_f32",
    "dequant_f32_bf16",
    "dequant_f16_f32",
    "dequant_f16_bf16",
    "dequant_bf16_f32",
    "dequant_bf16_bf16",
    "embed_f32",
    "embed_bf16",
    "add_rmsnorm_f32",
    "add_rmsnorm_bf16",
    "rope",
    "attention_f32",
    "attention_bf16",
    "attention_decode_f32",
    "attention_decode_bf16",
    "append_rows",
    "swiglu_f32",
    "swiglu_bf16",
    "gather_rows_f32",
    "gather_rows_bf16",
    "logsumexp_init",
    "logsumexp_chunk",
];

/// Opens GPU `ordinal`: loads the CUDA libraries, checks the architecture
/// and compiles the kernels for it. Without the `cuda` feature, or without
/// a driver or GPU, a clear error (never a panic).
pub fn open(ordinal: usize) -> Result<Arc<dyn Backend>> {
    #[cfg(feature = "cuda")]
    {
        Ok(Arc::new(driver::CudaDevice::open(ordinal)?))
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(no_cuda(ordinal))
    }
}

/// The CUDA libraries GPU `ordinal` would use, as `(what, file)` lines:
/// each found under cudarc's names in cudarc's order, and the file it is
/// (from `/proc/self/maps`). What `main-score inspect --device cuda` prints
/// first; an error naming the library when one is missing or mixed.
pub fn libraries(ordinal: usize) -> Result<Vec<(String, String)>> {
    #[cfg(feature = "cuda")]
    {
        Ok(driver::check_libraries(&format!("cuda:{ordinal}"))?
            .into_iter()
            .map(|l| (l.what.to_string(), format!("{} (as {})", l.path, l.name)))
            .collect())
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(no_cuda(ordinal))
    }
}

/// Opens GPU `ordinal` (compiling the kernels) and returns its name and
/// the files of every CUDA library the process then holds (the driver,
/// NVRTC and its builtins, cuBLAS, cuBLASLt), as `(what, value)` lines.
pub fn device_report(ordinal: usize) -> Result<Vec<(String, String)>> {
    #[cfg(feature = "cuda")]
    {
        let gpu = driver::CudaDevice::open(ordinal)?;
        let mut out = vec![("device".to_string(), gpu.name().to_string())];
        for (prefix, path) in driver::loaded_library_files() {
            out.push((format!("loaded {prefix}"), path));
        }
        Ok(out)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(no_cuda(ordinal))
    }
}

#[cfg(not(feature = "cuda"))]
fn no_cuda(ordinal: usize) -> Error {
    Error::gpu(
        format!("cuda:{ordinal}"),
        "opening the GPU",
        "this build has no GPU support; build with `--features cuda` \
         (cargo build --release --features cuda)",
    )
}

/// `out[i] = log p(ids[i] | ids[..i])` on GPU `ordinal` (`out[0]` is
/// `None`), as `logprob::sequence_logprobs` computes on the CPU. The text
/// runs as one sequence; batches are split only by memory.
pub fn sequence_logprobs(
    model: &Model,
    ordinal: usize,
    precision: Precision,
    ids: &[u32],
) -> Result<Vec<Option<f64>>> {
    model.check_tokens(ids)?;
    if ids.len() < 2 {
        return Ok(ids.iter().map(|_| None).collect());
    }
    let mut side = GpuSide::new(open(ordinal)?, model, precision, &[])?;
    let lps = side.run(&[GpuView {
        ids,
        n_prompt: 1,
        shared: 0,
    }])?;
    let mut out = vec![None];
    out.extend(lps.into_iter().flatten().map(Some));
    Ok(out)
}

/// Most tokens in one packed batch, however much memory is free: beyond
/// this, larger batches no longer make the matrix products faster.
pub const MAX_BATCH_TOKENS: usize = 65_536;

/// Vocabulary ids per chunk of the fused log-softmax.
pub const HEAD_CHUNK: usize = 8192;

/// One view to score: its token ids, how many of them are prompt, and how
/// many leading ones the shared prefix covers (`shared < n_prompt`).
#[derive(Clone, Copy, Debug)]
pub struct GpuView<'a> {
    pub ids: &'a [u32],
    pub n_prompt: usize,
    pub shared: usize,
}

/// One model on the GPU with its precomputed prompt prefix.
pub struct GpuSide {
    model: GpuModel,
    /// `(layers, n_prefix, S)` f32 QKV rows of the shared prompt.
    prefix: Buf,
    n_prefix: usize,
    /// Upper bound on tokens per batch, lowered when the device runs out of
    /// memory mid-run; `None` until the first batch sizes it.
    cap: Option<usize>,
}

impl GpuSide {
    /// Uploads `model` and runs it once on `prefix_ids`.
    pub fn new(
        gpu: Arc<dyn Backend>,
        model: &Model,
        precision: Precision,
        prefix_ids: &[u32],
    ) -> Result<GpuSide> {
        let mut model = GpuModel::upload(gpu.clone(), model, precision)?;
        let p = prefix_ids.len();
        let s = model.qkv_width();
        let layers = model.config.n_layers;
        let prefix = Buf::new(&gpu, layers * p * s * 4, "allocating the prompt prefix")?;
        if p > 0 {
            let ids: Vec<i32> = prefix_ids.iter().map(|&t| t as i32).collect();
            let pos: Vec<i32> = (0..p as i32).collect();
            model.forward(&ids, &pos, &vec![0; p], None, 0, Some(&prefix))?;
        }
        Ok(GpuSide {
            model,
            prefix,
            n_prefix: p,
            cap: None,
        })
    }

    /// The model on the device (batched generation runs on it too).
    pub fn gpu_model(&mut self) -> &mut GpuModel {
        &mut self.model
    }

    /// At most this many tokens per batch (tests: to compare packings).
    pub fn set_max_batch_tokens(&mut self, n: usize) {
        self.cap = Some(n.max(1));
    }

    /// Tokens per batch that fit the device's free memory, with a chunk of
    /// head logits (`HEAD_CHUNK` ids per target row) beside each token.
    /// The chunk is fixed, not sized to memory, so a view's numbers never
    /// depend on what else was in its batch.
    fn sizes(&mut self) -> Result<(usize, usize)> {
        let free = self.model.backend().free_memory()?;
        // Leave room for cuBLAS workspaces and the allocator's rounding.
        let usable = free.saturating_sub((256usize << 20).min(free / 8));
        let chunk = HEAD_CHUNK.min(self.model.config.vocab_size);
        let per_token = self.model.bytes_per_token() + chunk * 4;
        let fit = (usable / per_token).clamp(1, MAX_BATCH_TOKENS);
        Ok((self.cap.map_or(fit, |c| c.min(fit)), chunk))
    }

    /// Target log-probs of every view, in order. Views are packed greedily
    /// into batches; when the device runs out of memory the batch is split
    /// and the cap lowered for the rest of the run.
    pub fn run(&mut self, views: &[GpuView]) -> Result<Vec<Vec<f64>>> {
        let mut out = Vec::with_capacity(views.len());
        let mut start = 0;
        while start < views.len() {
            let (budget, chunk) = self.sizes()?;
            let mut end = start;
            let mut n_new = 0;
            while end < views.len() {
                let add = views[end].ids.len() - views[end].shared;
                if end > start && n_new + add > budget {
                    break;
                }
                n_new += add;
                end += 1;
            }
            match self.run_batch(&views[start..end], chunk) {
                Ok(lps) => {
                    out.extend(lps);
                    start = end;
                }
                Err(Error::GpuOutOfMemory { .. }) if end - start > 1 => {
                    self.cap = Some((n_new / 2).max(1));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn run_batch(&mut self, views: &[GpuView], chunk: usize) -> Result<Vec<Vec<f64>>> {
        let (mut tokens, mut pos, mut first) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rows, mut targets) = (Vec::new(), Vec::new());
        for v in views {
            assert!(
                v.shared < v.n_prompt && v.n_prompt <= v.ids.len(),
                "GpuView: bad split"
            );
            if v.shared > self.n_prefix {
                return Err(Error::invalid_argument("shared", "longer than the prefix"));
            }
            let base = tokens.len();
            for (i, &t) in v.ids[v.shared..].iter().enumerate() {
                tokens.push(t as i32);
                pos.push((v.shared + i) as i32);
                first.push(base as i32);
            }
            for p in v.n_prompt - 1..v.ids.len() - 1 {
                rows.push((base + p - v.shared) as i32);
                targets.push(v.ids[p + 1]);
            }
        }
        let hidden = self.model.forward(
            &tokens,
            &pos,
            &first,
            Some(&self.prefix),
            self.n_prefix,
            None,
        )?;
        let lps = self.model.head_logprobs(&hidden, &rows, &targets, chunk)?;
        Ok(crate::logprob::split_runs(
            &lps,
            views.iter().map(|v| v.ids.len() - v.n_prompt),
        ))
    }
}
