//! Hugging Face checkpoints: `config.json` + `model.safetensors` (or a sharded
//! `model.safetensors.index.json`), F32/F16/BF16, LLaMA and Mistral tensor
//! names mapped to GGUF's canonical names, zero-copy into the file bytes.
//!
//! HF weights keep their rows as HF stores them, so RoPE pairs dimensions
//! `(i, i + head_dim/2)` ([`crate::config::RopeStyle::Halves`]); GGUF files had their Q/K
//! rows permuted by llama.cpp's converter so that pairs are adjacent. Loading
//! never copies: the forward pass applies the matching RoPE style. Exporting a
//! GGUF model to HF ([`write_dir`]) undoes the permutation ([`unpermute_qk`]).
//!
//! One file per concept: `config` (`config.json` both ways), `names` (HF
//! and GGUF tensor names, the shapes the config implies), `container` (the
//! safetensors header and its errors), `load`, `writer` and `permute` (Q/K
//! rows between HF and GGUF order).

mod config;
mod container;
mod load;
mod names;
mod permute;
#[cfg(test)]
mod tests;
mod writer;

pub use container::MAX_HEADER_BYTES;
pub use load::load_bytes;
#[cfg(feature = "std-fs")]
pub use load::load_dir;
pub use permute::{permute_qk, unpermute_qk};
pub use writer::write_bytes;
pub use writer::ShardOptions;
#[cfg(feature = "std-fs")]
pub use writer::{write_dir, write_dir_sharded, write_dir_sharded_from, TensorSource};
