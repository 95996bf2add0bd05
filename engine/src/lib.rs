//! # main-engine
//!
//! A no-framework inference engine for the LLaMA family that computes exact
//! per-token log-probabilities, the foundation of MAIN's alignment scores.
//!
//! Data flows one way: bytes -> [`gguf`] / [`safetensors`] -> [`model::Model`]
//! (config + weights, immutable, shareable across threads) -> forward pass ->
//! [`logprob`] (fused LM head + log-softmax + gather).

pub mod config;
pub mod error;
pub mod gguf;
#[cfg(main_wip)] // enabled once the tokenizer lands
pub mod logprob;
pub mod matmul;
#[cfg(main_wip)] // enabled once the tokenizer lands
pub mod model;
pub mod quant;
pub mod safetensors;
#[cfg(main_wip)] // enabled once the tokenizer lands
pub mod sample;
pub mod tensor;
pub mod threads;
pub mod tokenizer;

pub use error::{Error, Result};
