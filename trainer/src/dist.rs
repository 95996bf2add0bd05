//! Data-parallel training over several GPUs with NCCL (`--features nccl`),
//! one process per GPU.
//!
//! Each process loads the full model on its GPU (`cuda:<rank>`), takes its
//! own slice of every global micro-batch, and after the backward passes the
//! gradients are averaged over all ranks with an NCCL all-reduce, so every
//! rank applies the same update and the weights stay identical. Rank 0
//! alone writes metrics, checkpoints and the final model.
//!
//! The processes meet through a file: rank 0 creates the NCCL unique id and
//! writes it (atomically) to `MAIN_NCCL_ID`; the other ranks wait for it.
//! Launch (see trainer/README.md):
//! `MAIN_WORLD_SIZE=4 MAIN_RANK=r MAIN_NCCL_ID=/tmp/run.ncclid main-train sft ...`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Device, Layout, Shape, Tensor};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};

use crate::checkpoint::write_atomic;
use crate::error::{CandleExt, Error, Result};
use crate::sft::DataParallel;

/// This process's place in the job, from the environment.
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    pub id_file: PathBuf,
}

impl Launch {
    /// `MAIN_WORLD_SIZE` (> 1 turns data parallelism on), `MAIN_RANK`,
    /// `MAIN_NCCL_ID`; `None` for a single-process run.
    pub fn from_env() -> Result<Option<Launch>> {
        let var = |k: &str| std::env::var(k).ok();
        let Some(world) = var("MAIN_WORLD_SIZE") else {
            return Ok(None);
        };
        let parse = |k: &str, v: &str| {
            v.parse::<usize>()
                .map_err(|_| Error::invalid(k, format!("'{v}' is not a number")))
        };
        let world_size = parse("MAIN_WORLD_SIZE", &world)?;
        if world_size <= 1 {
            return Ok(None);
        }
        let rank = parse(
            "MAIN_RANK",
            &var("MAIN_RANK").ok_or_else(|| Error::invalid("MAIN_RANK", "not set"))?,
        )?;
        if rank >= world_size {
            return Err(Error::invalid(
                "MAIN_RANK",
                format!("{rank} is not below MAIN_WORLD_SIZE {world_size}"),
            ));
        }
        let id_file = var("MAIN_NCCL_ID").map(PathBuf::from).ok_or_else(|| {
            Error::invalid("MAIN_NCCL_ID", "not set (a file path all ranks share)")
        })?;
        Ok(Some(Launch {
            rank,
            world_size,
            id_file,
        }))
    }

    /// The device of this rank.
    pub fn device(&self) -> Result<Device> {
        Device::new_cuda(self.rank).op("open CUDA device of this rank")
    }
}

fn nccl_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::invalid("NCCL", format!("{what}: {e:?}"))
}

/// Rank 0 writes the NCCL id; the others wait up to 10 minutes for it.
fn exchange_id(launch: &Launch) -> Result<Id> {
    if launch.rank == 0 {
        let id = Id::new().map_err(|e| nccl_err("create unique id", e))?;
        let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
        write_atomic(&launch.id_file, &bytes)?;
        return Ok(id);
    }
    let t0 = Instant::now();
    loop {
        if let Ok(bytes) = std::fs::read(&launch.id_file) {
            if bytes.len() == 128 {
                let mut internal = [0 as std::ffi::c_char; 128];
                for (d, s) in internal.iter_mut().zip(&bytes) {
                    *d = *s as std::ffi::c_char;
                }
                return Ok(Id::uninit(internal));
            }
        }
        if t0.elapsed() > Duration::from_secs(600) {
            return Err(Error::io(
                Path::new(&launch.id_file),
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "rank 0 never wrote the NCCL id",
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sums an f32 tensor over all ranks.
struct AllReduce<'a> {
    comm: &'a Comm,
}

impl CustomOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the NCCL all-reduce runs on CUDA tensors only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("the NCCL all-reduce needs a contiguous tensor")
        };
        let dev = s.device().clone();
        let src = s.as_cuda_slice::<f32>()?.slice(start..end);
        // SAFETY: every element of `dst` is written by the all-reduce below
        // before the storage is read.
        let mut dst = unsafe { dev.alloc::<f32>(end - start) }?;
        self.comm
            .all_reduce(&src, &mut dst, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Msg(format!("NCCL all-reduce: {e:?}")))?;
        Ok((CudaStorage::wrap_cuda_slice(dst, dev), l.shape().clone()))
    }
}

/// Joins the job: one NCCL communicator per process.
pub fn join(launch: &Launch, device: &Device) -> Result<DataParallel> {
    let Device::Cuda(cuda) = device else {
        return Err(Error::invalid(
            "device",
            "data parallelism needs a CUDA device",
        ));
    };
    let id = exchange_id(launch)?;
    let comm = Comm::from_rank(cuda.cuda_stream(), launch.rank, launch.world_size, id)
        .map_err(|e| nccl_err("join the communicator", e))?;
    let world = launch.world_size as f64;
    Ok(DataParallel {
        rank: launch.rank,
        world_size: launch.world_size,
        mean: Box::new(move |g: &Tensor| {
            let g = g.contiguous().op("all-reduce input")?;
            let sum = g
                .apply_op1_no_bwd(&AllReduce { comm: &comm })
                .op("NCCL all-reduce")?;
            (sum / world).op("all-reduce mean")
        }),
    })
}
