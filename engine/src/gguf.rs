//! GGUF v2/v3 reader: header, metadata of every value type, tensor infos,
//! alignment and data offsets. Tensors stay in the caller's bytes (zero-copy).
//! (Owned by the GGUF work item: parser not written yet.)

use crate::error::{Error, Result};
use crate::tensor::TensorRef;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

/// A parsed GGUF file. Tensor offsets are absolute within the parsed bytes.
#[derive(Debug)]
pub struct Gguf {
    pub version: u32,
    pub alignment: usize,
    /// Byte offset of the tensor data section.
    pub data_offset: usize,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order, each bounds-checked against the file.
    pub tensors: Vec<TensorRef>,
}

impl Gguf {
    pub fn parse(bytes: &[u8]) -> Result<Gguf> {
        let _ = bytes;
        Err(Error::unsupported("GGUF parser", "not written yet"))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}
