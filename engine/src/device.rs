//! Where the forward pass runs: the CPU (SIMD kernels, `model`) or an NVIDIA
//! GPU (`cuda`, built with the `cuda` feature). Parsed from the spelling
//! every interface shares: `cpu`, `cuda` (GPU 0) or `cuda:N`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::matmul::Precision;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    #[default]
    Cpu,
    /// The GPU with this ordinal (as CUDA numbers them).
    Cuda(usize),
}

impl Device {
    /// The precision a device runs when none is asked for: the CPU's
    /// [`Precision::default`], `bf16` on a GPU.
    pub fn default_precision(self) -> Precision {
        match self {
            Device::Cpu => Precision::default(),
            Device::Cuda(_) => Precision::Bf16,
        }
    }

    /// The precision a run on this device uses: `asked`, or the device's
    /// [`Device::default_precision`] when none is asked, refused (an
    /// `invalid argument 'precision'` error) when the device cannot run it.
    /// The one place every interface resolves its precision: the CLI,
    /// libmain, Python, the browser and the trainer's scoring.
    pub fn resolve_precision(self, asked: Option<Precision>) -> Result<Precision> {
        let p = asked.unwrap_or_else(|| self.default_precision());
        self.check_precision(p)?;
        Ok(p)
    }

    /// Whether this device runs `p`: `exact`, `fast`, `int8` on the CPU;
    /// `bf16`, `exact` on a GPU.
    pub fn check_precision(self, p: Precision) -> Result<()> {
        let ok = match self {
            Device::Cpu => p != Precision::Bf16,
            Device::Cuda(_) => matches!(p, Precision::Bf16 | Precision::Exact),
        };
        if ok {
            return Ok(());
        }
        let runs = match self {
            Device::Cpu => "exact, fast or int8",
            Device::Cuda(_) => "bf16 (its default) or exact",
        };
        Err(Error::invalid_argument(
            "precision",
            format!("{} does not run on {self}; it runs {runs}", p.name()),
        ))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Device> {
        let bad = || {
            Error::invalid_argument(
                "device",
                format!("{s:?}: expected cpu, cuda or cuda:N (N a GPU number)"),
            )
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse::<usize>().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (s, d) in [
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
        ] {
            assert_eq!(s.parse::<Device>().unwrap(), d);
        }
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""] {
            let e = bad.parse::<Device>().unwrap_err().to_string();
            assert!(e.contains("expected cpu, cuda or cuda:N"), "{e}");
        }
    }

    #[test]
    fn precisions_per_device() {
        assert_eq!(Device::Cuda(0).default_precision(), Precision::Bf16);
        assert_ne!(Device::Cpu.default_precision(), Precision::Bf16);
        assert!(Device::Cpu.check_precision(Precision::Bf16).is_err());
        assert!(Device::Cuda(0).check_precision(Precision::Fast).is_err());
        let e = Device::Cuda(0)
            .check_precision(Precision::Int8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("int8 does not run on cuda:0"), "{e}");
        assert!(Device::Cuda(0).check_precision(Precision::Exact).is_ok());
    }

    #[test]
    fn precision_resolved_per_device() {
        for d in [Device::Cpu, Device::Cuda(1)] {
            assert_eq!(d.resolve_precision(None).unwrap(), d.default_precision());
            assert_eq!(
                d.resolve_precision(Some(Precision::Exact)).unwrap(),
                Precision::Exact
            );
        }
        let e = Device::Cpu
            .resolve_precision(Some(Precision::Bf16))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid argument 'precision': bf16 does not run on cpu; it runs exact, fast or int8"
        );
        assert!(Device::Cuda(0)
            .resolve_precision(Some(Precision::Fast))
            .is_err());
    }
}
