//! Whether a planned run fits the machine it is about to run on: the
//! plan's peak against the memory the device (and on CUDA the host) has
//! free now. `sft` calls it before loading the model.

use super::{gib, Plan, PlanDevice};
use crate::error::{Error, Result};

/// An error with the plan in it when the run needs more memory than there
/// is: on the CPU, the step's peak or the save's, whichever is larger,
/// against `available` (the host's); on CUDA, the device peak against
/// `available` (the device's) and the save's host memory against
/// `host_available`.
pub fn check_fits(plan: &Plan, available: u64, host_available: u64) -> Result<()> {
    let refuse = |what: &str, need: u64, have: u64| {
        Err(Error::invalid(
            "memory",
            format!(
                "this run needs {:.2} GiB of {what} at its peak and {:.2} GiB is available \
                 (lower --batch-size, --max-tokens or --tokens, or see the memory flags: \
                 --param-dtype, --moments, --step-in-backward)\n{}",
                gib(need),
                gib(have),
                plan.text()
            ),
        ))
    };
    match plan.settings.device {
        PlanDevice::Cpu => {
            let need = plan.total_bytes.max(plan.save_host_bytes);
            if need > available {
                return refuse("memory", need, available);
            }
        }
        PlanDevice::Cuda => {
            if plan.total_bytes > available {
                return refuse("device memory", plan.total_bytes, available);
            }
            let host = plan.save_host_bytes;
            if host > host_available {
                return refuse("host memory", host, host_available);
            }
        }
    }
    Ok(())
}

/// Bytes the device can give this run now: MemAvailable on the CPU
/// ([`host_available`]), the free memory of the CUDA device.
pub fn available(device: &candle_core::Device) -> Result<u64> {
    match device {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(_) => {
            // The context is current: candle opened the device.
            let (free, _total) = candle_core::cuda::cudarc::driver::result::mem_get_info()
                .map_err(|e| {
                    Error::invalid("device", format!("CUDA free memory unknown: {e:?}"))
                })?;
            Ok(free as u64)
        }
        _ => host_available(),
    }
}

/// The host's MemAvailable (`/proc/meminfo`).
pub fn host_available() -> Result<u64> {
    let path = "/proc/meminfo";
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("MemAvailable:")?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
        .ok_or_else(|| Error::invalid(path, "no MemAvailable line"))
}
