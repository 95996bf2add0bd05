//! Tokenizers: Hugging Face `tokenizer.json` (through the `tokenizers` crate)
//! and GGUF vocabularies (byte-level BPE "gpt2" with the model's
//! pre-tokenizer, SentencePiece-style "llama"), tokenizing exactly as llama.cpp.
//! (Owned by the tokenizer work item: not written yet.)
