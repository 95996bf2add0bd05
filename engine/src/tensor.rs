//! Where weights live: byte storage (a memory map on native, a caller's buffer
//! on wasm) and `TensorRef`s, zero-copy views into it that both loaders
//! (`gguf`, `safetensors`) produce under GGUF's canonical tensor names.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::quant::DType;

/// Immutable bytes holding one model file (or one shard).
pub enum Storage {
    #[cfg(feature = "std-fs")]
    Mmap(memmap2::Mmap),
    Bytes(Arc<[u8]>),
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        match self {
            #[cfg(feature = "std-fs")]
            Storage::Mmap(m) => m,
            Storage::Bytes(b) => b,
        }
    }

    /// Memory-maps a file read-only.
    #[cfg(feature = "std-fs")]
    pub fn map(path: &std::path::Path) -> Result<Storage> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; like every mmap user we assume the file
        // is not truncated or rewritten by another process while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Storage::Mmap(map))
    }
}

/// A tensor inside a `Storage`, dims in ggml order: `dims[0]` is the
/// contiguous (innermost) dimension, so a weight matrix `[n_out, n_in]` has
/// `dims == [n_in, n_out]`.
#[derive(Clone, Debug)]
pub struct TensorRef {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<usize>,
    /// Index of the shard (`Storage`) holding the bytes.
    pub shard: usize,
    /// Byte offset of the first element within the shard.
    pub offset: usize,
    /// Byte length, already checked against dims and dtype.
    pub n_bytes: usize,
}

impl TensorRef {
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// All tensors of a model, keyed by canonical (GGUF) name, with their storage.
pub struct TensorStore {
    pub shards: Vec<Storage>,
    pub tensors: HashMap<String, TensorRef>,
}

impl TensorStore {
    pub fn get(&self, name: &str) -> Result<&TensorRef> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::tensor(name, "missing from the model file"))
    }

    /// The bytes of a tensor. Bounds were checked when the `TensorRef` was made.
    pub fn data(&self, t: &TensorRef) -> &[u8] {
        &self.shards[t.shard].bytes()[t.offset..t.offset + t.n_bytes]
    }

    /// Checks that a tensor exists with the expected dims (ggml order).
    pub fn expect(&self, name: &str, dims: &[usize]) -> Result<&TensorRef> {
        let t = self.get(name)?;
        if t.dims != dims {
            return Err(Error::tensor(
                name,
                format!("has shape {:?}, the config implies {:?}", t.dims, dims),
            ));
        }
        Ok(t)
    }
}
