//! What the GPU forward pass needs from a device, as one small trait: memory,
//! copies, kernel launches by name, and matrix products. Two implementations:
//! `driver::CudaDevice` (a real GPU through cudarc: the driver API, NVRTC
//! and cuBLAS) and, in tests, `emulator::Emulator` (the same kernel source
//! compiled as C++ and run on the CPU), so everything above this trait is
//! tested on machines without a GPU.

use std::sync::Arc;

use crate::error::{Error, Result};

/// A device address (CUDA's `CUdeviceptr`; a host address in the emulator).
pub type DevPtr = u64;

/// One kernel argument, passed by value as cuLaunchKernel takes them.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(DevPtr),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl Arg {
    /// The argument's bytes in an 8-byte cell (little-endian: a 4-byte
    /// argument read from the cell's address reads its low half).
    pub fn cell(self) -> u64 {
        match self {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::I64(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
        }
    }
}

/// Element type of matrix-product operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    Bf16,
}

impl Elem {
    pub fn bytes(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::Bf16 => 2,
        }
    }

    /// The suffix of the kernels written for this activation type.
    pub fn suffix(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::Bf16 => "bf16",
        }
    }
}

/// `y[t, o] = Σ_i w[o, i] · x[t, i]` for `t < n_tok`, `o < n_out`: row-major
/// `w (n_out, n_in)` and `x (n_tok, n_in)` of type `ab`, f32 accumulation,
/// `y (n_tok, n_out)` f32 with row stride `ldy` (>= n_out).
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub n_out: usize,
    pub n_tok: usize,
    pub n_in: usize,
    pub w: DevPtr,
    pub x: DevPtr,
    pub y: DevPtr,
    pub ldy: usize,
    pub ab: Elem,
}

pub trait Backend: Send + Sync {
    /// "cuda:0 (NVIDIA H200, sm_90)", for messages.
    fn name(&self) -> &str;
    /// `bytes` of uninitialised device memory.
    fn alloc(&self, bytes: usize, what: &str) -> Result<DevPtr>;
    fn free(&self, p: DevPtr);
    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()>;
    /// Waits for the work queued before it, then copies.
    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()>;
    fn copy(&self, dst: DevPtr, src: DevPtr, bytes: usize) -> Result<()>;
    fn memset_zero(&self, dst: DevPtr, bytes: usize) -> Result<()>;
    /// Queues `kernel` on a 1-D grid of `grid` blocks of `block` threads.
    fn launch(&self, kernel: &str, grid: u32, block: u32, args: &[Arg]) -> Result<()>;
    fn gemm(&self, g: &Gemm) -> Result<()>;
    /// Bytes the device could still give us.
    fn free_memory(&self) -> Result<usize>;
    fn sync(&self) -> Result<()>;
}

/// Device memory owned by the forward pass; freed on drop.
pub struct Buf {
    pub ptr: DevPtr,
    pub bytes: usize,
    gpu: Arc<dyn Backend>,
}

impl Buf {
    pub fn new(gpu: &Arc<dyn Backend>, bytes: usize, what: &str) -> Result<Buf> {
        // A zero-byte request still gets a distinct, freeable address.
        let ptr = gpu.alloc(bytes.max(1), what)?;
        Ok(Buf {
            ptr,
            bytes,
            gpu: gpu.clone(),
        })
    }

    /// A buffer holding `data`.
    pub fn from_bytes(gpu: &Arc<dyn Backend>, data: &[u8], what: &str) -> Result<Buf> {
        let b = Buf::new(gpu, data.len(), what)?;
        gpu.upload(b.ptr, data)?;
        Ok(b)
    }

    pub fn from_f32(gpu: &Arc<dyn Backend>, data: &[f32], what: &str) -> Result<Buf> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Buf::from_bytes(gpu, &bytes, what)
    }

    pub fn from_i32(gpu: &Arc<dyn Backend>, data: &[i32], what: &str) -> Result<Buf> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Buf::from_bytes(gpu, &bytes, what)
    }

    /// The address `bytes` into this buffer.
    pub fn at(&self, bytes: usize) -> DevPtr {
        debug_assert!(bytes <= self.bytes);
        self.ptr + bytes as u64
    }

    pub fn arg(&self) -> Arg {
        Arg::Ptr(self.ptr)
    }

    pub fn to_f32(&self, n: usize) -> Result<Vec<f32>> {
        let mut bytes = vec![0u8; n * 4];
        self.gpu.download(self.ptr, &mut bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn to_f64(&self, n: usize) -> Result<Vec<f64>> {
        let mut bytes = vec![0u8; n * 8];
        self.gpu.download(self.ptr, &mut bytes)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
            .collect())
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.gpu.free(self.ptr);
    }
}

/// Blocks of `block` threads covering `n` items, as the 1-D launches need.
pub fn blocks_for(n: usize, block: u32, what: &str, gpu: &dyn Backend) -> Result<u32> {
    let b = n.div_ceil(block as usize);
    u32::try_from(b)
        .ok()
        .filter(|&b| b < i32::MAX as u32)
        .ok_or_else(|| Error::gpu(gpu.name(), what, format!("{n} items need too many blocks")))
}
