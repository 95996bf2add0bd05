//! # main-trainer
//!
//! Full fine-tuning of LLaMA/Mistral models on candle and the MAIN pipeline
//! (DESIGN.md §6). The engine supplies the tokenizer, chat templates, the
//! training views (DESIGN.md §2), the scorer, generation and GGUF writing;
//! candle supplies only what needs gradients.

pub mod align;
pub mod checkpoint;
pub mod data;
pub mod device;
#[cfg(feature = "nccl")]
pub mod dist;
pub mod error;
pub mod export;
pub mod head;
pub mod json_float;
pub mod layerwise;
pub mod model;
pub mod optim;
pub mod pack;
pub mod pipeline;
pub mod plan;
pub mod remote;
pub mod sft;
pub mod tensor_file;
pub mod train_config;

pub use error::{Error, Result};
