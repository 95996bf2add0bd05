//! The storage of one AdamW moment of one tensor: f32, bf16 or 8-bit
//! blockwise, read and written a block at a time by the fused update so
//! that a tensor's moments are never expanded to f32 as a whole.

use half::bf16;

use super::bf16_rounding::{mix64, stochastic};
use super::blockwise8::{Blockwise8, BLOCK};
use crate::error::{Error, Result};

/// How AdamW keeps its moments (`--moments`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MomentsKind {
    /// 8 bytes per parameter (m and v).
    #[default]
    #[serde(rename = "f32")]
    F32,
    /// 4 bytes per parameter.
    #[serde(rename = "bf16")]
    Bf16,
    /// About 2.03 bytes per parameter (blockwise, [`super::blockwise8`]).
    #[serde(rename = "8bit")]
    Bit8,
}

impl MomentsKind {
    pub fn parse(s: &str) -> Result<MomentsKind> {
        match s {
            "f32" => Ok(MomentsKind::F32),
            "bf16" => Ok(MomentsKind::Bf16),
            "8bit" => Ok(MomentsKind::Bit8),
            other => Err(Error::invalid(
                "moments",
                format!("'{other}' (expected f32, bf16 or 8bit)"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MomentsKind::F32 => "f32",
            MomentsKind::Bf16 => "bf16",
            MomentsKind::Bit8 => "8bit",
        }
    }

    /// Bytes of both moments of a tensor of `n` values.
    pub fn bytes(self, n: usize) -> usize {
        match self {
            MomentsKind::F32 => 8 * n,
            MomentsKind::Bf16 => 4 * n,
            MomentsKind::Bit8 => 2 * (n + 4 * n.div_ceil(BLOCK)),
        }
    }
}

/// One moment of one tensor.
#[derive(Clone, Debug)]
pub enum MomentBuf {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    Bit8(Blockwise8),
}

impl MomentBuf {
    /// `n` zeros; `signed` picks the 8-bit map (first moment: signed).
    pub fn zeros(kind: MomentsKind, n: usize, signed: bool) -> MomentBuf {
        match kind {
            MomentsKind::F32 => MomentBuf::F32(vec![0.0; n]),
            MomentsKind::Bf16 => MomentBuf::Bf16(vec![bf16::ZERO; n]),
            MomentsKind::Bit8 => MomentBuf::Bit8(Blockwise8::zeros(n, signed)),
        }
    }

    pub fn kind(&self) -> MomentsKind {
        match self {
            MomentBuf::F32(_) => MomentsKind::F32,
            MomentBuf::Bf16(_) => MomentsKind::Bf16,
            MomentBuf::Bit8(_) => MomentsKind::Bit8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MomentBuf::F32(v) => v.len(),
            MomentBuf::Bf16(v) => v.len(),
            MomentBuf::Bit8(q) => q.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Block `b` (values `b * BLOCK ..`) into `out`.
    #[inline]
    pub fn load_block(&self, b: usize, out: &mut [f32]) {
        let (s, n) = (b * BLOCK, out.len());
        match self {
            MomentBuf::F32(v) => out.copy_from_slice(&v[s..s + n]),
            MomentBuf::Bf16(v) => {
                for (o, x) in out.iter_mut().zip(&v[s..s + n]) {
                    *o = x.to_f32();
                }
            }
            MomentBuf::Bit8(q) => q.load_block(b, out),
        }
    }

    /// Writes `values` as block `b`. bf16 moments are rounded
    /// stochastically with the bits `mix64(key + index)`: with
    /// `beta2 = 0.999` a second moment changes by 0.1% a step, below half
    /// of bf16's relative spacing (2^-9), so round-to-nearest would freeze
    /// it (a decaying `v` would never decay).
    #[inline]
    pub fn store_block(&mut self, b: usize, values: &[f32], key: u64) {
        let s = b * BLOCK;
        match self {
            MomentBuf::F32(v) => v[s..s + values.len()].copy_from_slice(values),
            MomentBuf::Bf16(v) => {
                let key = key.wrapping_add(s as u64);
                for (j, (o, &x)) in v[s..s + values.len()].iter_mut().zip(values).enumerate() {
                    *o = stochastic(x, mix64(key.wrapping_add(j as u64)));
                }
            }
            MomentBuf::Bit8(q) => q.store_block(b, values, key),
        }
    }

    /// All values as f32 (tests and inspection only).
    pub fn to_f32(&self) -> Vec<f32> {
        let n = self.len();
        let mut out = vec![0f32; n];
        for b in 0..n.div_ceil(BLOCK) {
            let r = b * BLOCK..((b + 1) * BLOCK).min(n);
            self.load_block(b, &mut out[r]);
        }
        out
    }
}
