//! Hugging Face checkpoints: `config.json` + `model.safetensors` (or a sharded
//! index), F32/F16/BF16, LLaMA and Mistral tensor names mapped to GGUF names.
//! (Owned by the safetensors work item: not written yet.)
