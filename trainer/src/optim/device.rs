//! AdamW on the GPU: the moments (and the f32 master weights) live in the
//! weight's device memory, and each tensor's update is one launch of the
//! fused kernel `main_engine::cuda::ADAMW_SOURCE` (`engine/src/cuda/
//! adamw.cu`, compiled by NVRTC with the engine's IEEE options: no
//! contraction, IEEE division and square root), the CPU's
//! `fused::adamw_tensor` step for step
//! (`tests/adamw_kernel.rs` holds the two equal bit for bit, the kernel
//! built as C++ for the host). No copy of a weight, gradient or moment
//! crosses to the host during training; checkpoints read and write the
//! device tensors one at a time (`checkpoint.rs`).

use candle_core::{DType, Device, Tensor};

use super::blockwise8::{signed_map, unsigned_map, zero_code, BLOCK};
use super::moments::MomentsKind;
use super::step_consts::StepConsts;
#[cfg(not(feature = "cuda"))]
use crate::error::Error;
use crate::error::{CandleExt, Result};

/// One tensor's optimizer state on its device.
pub struct DeviceState {
    /// First and second moments: f32 or bf16 in the weight's shape, or the
    /// 8-bit codes (one byte per value, flat).
    pub m: Tensor,
    pub v: Tensor,
    /// The 8-bit blocks' scales (one f32 per [`BLOCK`] values).
    pub m_absmax: Option<Tensor>,
    pub v_absmax: Option<Tensor>,
    /// The f32 master copy (bf16 weights with `--master`).
    pub master: Option<Tensor>,
}

/// The 8-bit maps on one device, uploaded once.
pub struct DeviceMaps {
    pub signed: Tensor,
    pub unsigned: Tensor,
}

impl DeviceMaps {
    pub fn new(device: &Device) -> Result<DeviceMaps> {
        let up = |m: &[f32; 256]| Tensor::from_slice(m, 256, device).op("upload the 8-bit maps");
        Ok(DeviceMaps {
            signed: up(signed_map())?,
            unsigned: up(unsigned_map())?,
        })
    }
}

impl DeviceState {
    /// Zero moments (and a master copy of `w` when asked) on `w`'s device.
    pub fn zeros(kind: MomentsKind, w: &Tensor, master: bool) -> Result<DeviceState> {
        let dev = w.device();
        let n = w.elem_count();
        let what = "AdamW state on the device";
        let (m, v, m_absmax, v_absmax) = match kind {
            MomentsKind::F32 | MomentsKind::Bf16 => {
                let dt = if kind == MomentsKind::F32 {
                    DType::F32
                } else {
                    DType::BF16
                };
                let z = || Tensor::zeros(w.dims(), dt, dev).op(what);
                (z()?, z()?, None, None)
            }
            MomentsKind::Bit8 => {
                let codes = |map| Tensor::full(zero_code(map), n, dev).op(what);
                let scales = || Tensor::zeros(n.div_ceil(BLOCK), DType::F32, dev).op(what);
                (
                    codes(signed_map())?,
                    codes(unsigned_map())?,
                    Some(scales()?),
                    Some(scales()?),
                )
            }
        };
        let master = if master && w.dtype() != DType::F32 {
            Some(w.to_dtype(DType::F32).op(what)?.copy().op(what)?)
        } else {
            None
        };
        Ok(DeviceState {
            m,
            v,
            m_absmax,
            v_absmax,
            master,
        })
    }

    /// Bytes of device memory it holds.
    pub fn bytes(&self) -> usize {
        [&self.m, &self.v]
            .into_iter()
            .chain(self.m_absmax.as_ref())
            .chain(self.v_absmax.as_ref())
            .chain(self.master.as_ref())
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}

/// The update of weight `w` (f32 or bf16, on a CUDA device) with `grad`.
pub fn step(
    w: &Tensor,
    grad: &Tensor,
    st: &DeviceState,
    maps: &DeviceMaps,
    kind: MomentsKind,
    k: &StepConsts,
) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        let grad = if grad.is_contiguous() && grad.layout().start_offset() == 0 {
            grad.clone()
        } else {
            grad.copy().op("gradient for the AdamW kernel")?
        };
        let op = cuda::Launch {
            st,
            maps,
            kind,
            k: *k,
        };
        w.inplace_op2(&grad, &op).op("AdamW kernel")
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (w, grad, st, maps, kind, k);
        Err(Error::invalid(
            "optimizer",
            "AdamW state on a GPU in a build without the cuda feature",
        ))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::OnceLock;

    use candle_core::backend::BackendStorage;
    use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
    use candle_core::{CudaStorage, InplaceOp2, Layout, Storage, Tensor};

    use main_engine::cuda::{ADAMW_SOURCE, NVRTC_OPTIONS};

    use super::{DeviceMaps, DeviceState, MomentsKind, StepConsts, BLOCK};

    pub struct Launch<'a> {
        pub st: &'a DeviceState,
        pub maps: &'a DeviceMaps,
        pub kind: MomentsKind,
        pub k: StepConsts,
    }

    /// The PTX of `adamw.cu`, compiled once per process.
    fn ptx() -> candle_core::Result<&'static str> {
        static PTX: OnceLock<Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            let opts = CompileOptions {
                options: NVRTC_OPTIONS.iter().map(|o| o.to_string()).collect(),
                ..Default::default()
            };
            compile_ptx_with_opts(ADAMW_SOURCE, opts)
                .map(|p| p.to_src())
                .map_err(|e| format!("NVRTC cannot compile adamw.cu: {e:?}"))
        })
        .as_ref()
        .map(|s| s.as_str())
        .map_err(|e| candle_core::Error::Msg(e.clone()))
    }

    /// A tensor's device storage, checked contiguous from offset 0.
    fn storage<'t>(
        t: &'t Tensor,
        what: &str,
    ) -> candle_core::Result<impl std::ops::Deref<Target = Storage> + 't> {
        let (s, l) = t.storage_and_layout();
        if l.contiguous_offsets() != Some((0, t.elem_count())) {
            candle_core::bail!("AdamW kernel: the {what} is not contiguous from its start");
        }
        if !matches!(&*s, Storage::Cuda(_)) {
            candle_core::bail!("AdamW kernel: the {what} is not on the GPU");
        }
        Ok(s)
    }

    fn cuda(s: &Storage) -> &CudaStorage {
        match s {
            Storage::Cuda(c) => c,
            _ => unreachable!("checked by `storage`"),
        }
    }

    impl InplaceOp2 for Launch<'_> {
        fn name(&self) -> &'static str {
            "adamw-kernel"
        }

        fn cpu_fwd(
            &self,
            _: &mut candle_core::CpuStorage,
            _: &Layout,
            _: &candle_core::CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<()> {
            candle_core::bail!("AdamW kernel: the weight is on the CPU (optim::fused steps it)")
        }

        fn cuda_fwd(
            &self,
            w: &mut CudaStorage,
            wl: &Layout,
            g: &CudaStorage,
            gl: &Layout,
        ) -> candle_core::Result<()> {
            use candle_core::DType;
            let n = wl.shape().elem_count();
            if wl.contiguous_offsets() != Some((0, n)) || gl.contiguous_offsets() != Some((0, n)) {
                candle_core::bail!("AdamW kernel: weight or gradient not contiguous");
            }
            let st = self.st;
            let (m, v) = (
                storage(&st.m, "first moment")?,
                storage(&st.v, "second moment")?,
            );
            let m_abs = st
                .m_absmax
                .as_ref()
                .map(|t| storage(t, "scales"))
                .transpose()?;
            let v_abs = st
                .v_absmax
                .as_ref()
                .map(|t| storage(t, "scales"))
                .transpose()?;
            let master = st
                .master
                .as_ref()
                .map(|t| storage(t, "master"))
                .transpose()?;
            let sm = storage(&self.maps.signed, "map")?;
            let um = storage(&self.maps.unsigned, "map")?;
            let dev = w.device.clone();
            let func = dev.get_or_load_custom_func("adamw_step", "main_trainer_adamw", ptx()?)?;
            let w_kind: i32 = match (w.dtype(), master.is_some()) {
                (DType::F32, _) => 0,
                (DType::BF16, false) => 1,
                (DType::BF16, true) => 2,
                (other, _) => candle_core::bail!("AdamW kernel: weight of dtype {other:?}"),
            };
            let g_kind: i32 = match g.dtype() {
                DType::F32 => 0,
                DType::BF16 => 1,
                other => candle_core::bail!("AdamW kernel: gradient of dtype {other:?}"),
            };
            let m_kind: i32 = match self.kind {
                MomentsKind::F32 => 0,
                MomentsKind::Bf16 => 1,
                MomentsKind::Bit8 => 2,
            };
            let null = 0u64;
            let n64 = n as u64;
            let k = &self.k;
            let n_blocks = n.div_ceil(BLOCK) as u32;
            let threads = 128u32;
            let cfg = LaunchConfig {
                grid_dim: (n_blocks.div_ceil(threads), 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = func.builder();
            match w.dtype() {
                DType::F32 => b.arg(w.as_cuda_slice_mut::<f32>()?),
                _ => b.arg(w.as_cuda_slice_mut::<half::bf16>()?),
            };
            b.arg(&w_kind);
            match &master {
                Some(s) => b.arg(cuda(s).as_cuda_slice::<f32>()?),
                None => b.arg(&null),
            };
            match g.dtype() {
                DType::F32 => b.arg(g.as_cuda_slice::<f32>()?),
                _ => b.arg(g.as_cuda_slice::<half::bf16>()?),
            };
            b.arg(&g_kind);
            match self.kind {
                MomentsKind::F32 => {
                    b.arg(cuda(&m).as_cuda_slice::<f32>()?);
                    b.arg(cuda(&v).as_cuda_slice::<f32>()?)
                }
                MomentsKind::Bf16 => {
                    b.arg(cuda(&m).as_cuda_slice::<half::bf16>()?);
                    b.arg(cuda(&v).as_cuda_slice::<half::bf16>()?)
                }
                MomentsKind::Bit8 => {
                    b.arg(cuda(&m).as_cuda_slice::<u8>()?);
                    b.arg(cuda(&v).as_cuda_slice::<u8>()?)
                }
            };
            match (&m_abs, &v_abs) {
                (Some(a), Some(c)) => {
                    b.arg(cuda(a).as_cuda_slice::<f32>()?);
                    b.arg(cuda(c).as_cuda_slice::<f32>()?)
                }
                _ => {
                    b.arg(&null);
                    b.arg(&null)
                }
            };
            b.arg(&m_kind);
            b.arg(cuda(&sm).as_cuda_slice::<f32>()?);
            b.arg(cuda(&um).as_cuda_slice::<f32>()?);
            b.arg(&n64);
            for x in [
                &k.beta1,
                &k.beta2,
                &k.eps,
                &k.c1,
                &k.c2,
                &k.lr,
                &k.decay,
                &k.grad_scale,
            ] {
                b.arg(x);
            }
            b.arg(&k.key);
            // SAFETY: the arguments are the kernel's parameters in order and
            // type (pointers to buffers of `n` values of the kinds passed
            // beside them, the scales one per block of 256, the maps 256
            // floats); a thread touches only its own block of 256 values.
            unsafe { b.launch(cfg) }
                .map_err(|e| candle_core::Error::Msg(format!("AdamW kernel launch: {e:?}")))?;
            Ok(())
        }
    }
}
