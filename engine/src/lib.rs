//! # main-engine
//!
//! A no-framework inference engine for the LLaMA family that computes exact
//! per-token log-probabilities, the foundation of MAIN's alignment scores.
//!
//! Data flows one way: bytes -> [`gguf`] / [`safetensors`] -> [`model::Model`]
//! (config + weights, immutable, shareable across threads) -> forward pass ->
//! [`logprob`] (fused LM head + log-softmax + gather).

#[cfg(feature = "std-fs")]
pub mod atomic_write;
pub mod config;
pub mod conversation;
pub mod convert;
pub mod cuda;
pub mod device;
pub mod error;
pub mod generate;
pub mod gguf;
#[cfg(feature = "std-fs")]
pub mod job;
pub mod kernels;
pub mod kv_cache;
pub mod lanes;
pub mod logprob;
pub mod matmul;
pub mod model;
pub mod pairs;
pub mod prompt;
pub mod quant;
pub mod rank;
pub mod report;
pub mod safetensors;
pub mod sample;
pub mod score;
pub mod scorer;
pub mod stats;
pub mod summary;
pub mod template;
pub mod tensor;
pub mod threads;
pub mod tokenizer;
pub mod views;

pub use device::Device;
pub use error::{Error, Result};
