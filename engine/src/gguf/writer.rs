//! The GGUF v3 writer, for `quantize`, `main-train export` and test fixtures.
//!
//! Output follows what llama.cpp's `gguf_write_to_file` and the python `gguf`
//! package produce: tensors in the order added, each at an offset that is a
//! multiple of the alignment, and every tensor (the last one too) padded to
//! the alignment, since llama.cpp reads the data section as the padded sum.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;

use super::reader::MAX_DIMS;
use super::{value_type as vt, Value, ALIGNMENT_KEY, DEFAULT_ALIGNMENT};
use crate::error::{Error, Result};
use crate::quant::DType;

/// ggml's `GGML_MAX_NAME`: tensor names must be shorter (it counts the NUL).
const MAX_TENSOR_NAME: usize = 64;

struct PendingTensor<'a> {
    name: String,
    dtype: DType,
    /// ggml order, `dims[0]` innermost.
    dims: Vec<usize>,
    data: Cow<'a, [u8]>,
}

/// Builds a GGUF v3 file in memory (metadata, tensor infos, borrowed or
/// owned tensor data) and writes it in one pass. Everything is validated when
/// added, so [`GgufWriter::write_to`] fails only on I/O.
pub struct GgufWriter<'a> {
    alignment: usize,
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor<'a>>,
    names: HashSet<String>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl<'a> GgufWriter<'a> {
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// The tensor data alignment: 32 unless `general.alignment` was added.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Adds a metadata entry, in order. Arrays must hold one value type and
    /// must not hold arrays (llama.cpp refuses nested arrays); an empty array
    /// is written with element type u8, since `Value` carries no type for it.
    /// `general.alignment` must be a `U32` power of two (llama.cpp reads it
    /// as u32) and sets the alignment of the tensor data.
    pub fn add(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let key = key.into();
        let value = value.into();
        if self.keys.contains(&key) {
            return Err(Error::metadata(key, "added twice to the GGUF writer"));
        }
        check_value(&value).map_err(|reason| Error::metadata(&key, reason))?;
        if key == ALIGNMENT_KEY {
            match value {
                Value::U32(a) if a.is_power_of_two() => self.alignment = a as usize,
                ref other => {
                    return Err(Error::metadata(
                        key,
                        format!("must be a u32 power of two, got {other:?}"),
                    ))
                }
            }
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(())
    }

    /// Adds a tensor with dims in ggml order (`dims[0]` innermost, so a
    /// weight `[n_out, n_in]` is `&[n_in, n_out]`) and its raw encoded bytes,
    /// whose length must match `dtype` and `dims` exactly.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        dims: &[usize],
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<()> {
        let name = name.into();
        let data = data.into();
        if self.names.contains(&name) {
            return Err(Error::tensor(name, "added twice to the GGUF writer"));
        }
        if name.len() >= MAX_TENSOR_NAME {
            return Err(Error::tensor(
                name,
                format!(
                    "name is longer than ggml's limit of {} bytes",
                    MAX_TENSOR_NAME - 1
                ),
            ));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(Error::tensor(
                name,
                format!("has {} dims, expected 1..={MAX_DIMS}", dims.len()),
            ));
        }
        if !dtype.is_weight_type() {
            return Err(Error::unsupported(
                "tensor type",
                format!(
                    "{} in tensor '{name}': an activation-only format",
                    dtype.name()
                ),
            ));
        }
        let n_bytes = dtype
            .row_bytes(dims[0])
            .and_then(|row| dims[1..].iter().try_fold(row, |acc, &d| acc.checked_mul(d)));
        match n_bytes {
            None => {
                return Err(Error::tensor(
                    name,
                    format!(
                        "dims {dims:?} are not whole {} blocks of {} or overflow",
                        dtype.name(),
                        dtype.block_len()
                    ),
                ))
            }
            Some(n) if n != data.len() => {
                return Err(Error::tensor(
                    name,
                    format!(
                        "{} {dims:?} takes {n} bytes but {} were given",
                        dtype.name(),
                        data.len()
                    ),
                ))
            }
            Some(_) => {}
        }
        self.names.insert(name.clone());
        self.tensors.push(PendingTensor {
            name,
            dtype,
            dims: dims.to_vec(),
            data,
        });
        Ok(())
    }

    /// Writes the file; returns the bytes written. The header, metadata and
    /// tensor infos go out in one `write_all`, then each tensor's data, so
    /// `w` needs no buffering of its own.
    pub fn write_to<W: Write>(&self, mut w: W) -> std::io::Result<u64> {
        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        put_u32(&mut head, 3);
        put_u64(&mut head, self.tensors.len() as u64);
        put_u64(&mut head, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            put_str(&mut head, key);
            put_u32(&mut head, value.type_id());
            put_value(&mut head, value);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut head, &t.name);
            put_u32(&mut head, t.dims.len() as u32);
            for &d in &t.dims {
                put_u64(&mut head, d as u64);
            }
            put_u32(&mut head, t.dtype.ggml_id());
            put_u64(&mut head, offset as u64);
            offset = (offset + t.data.len()).next_multiple_of(self.alignment);
        }
        head.resize(head.len().next_multiple_of(self.alignment), 0);
        w.write_all(&head)?;

        let zeros = vec![0u8; self.alignment];
        let mut written = head.len() as u64;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            let pad = t.data.len().next_multiple_of(self.alignment) - t.data.len();
            w.write_all(&zeros[..pad])?;
            written += (t.data.len() + pad) as u64;
        }
        w.flush()?;
        Ok(written)
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = self.write_to(&mut out);
        out
    }
}

/// Rejects arrays the format cannot express or llama.cpp would refuse.
fn check_value(v: &Value) -> std::result::Result<(), String> {
    let Value::Array(items) = v else {
        return Ok(());
    };
    let Some(first) = items.first() else {
        return Ok(());
    };
    if matches!(first, Value::Array(_)) {
        // GGUF allows them and our reader reads them, but llama.cpp's
        // gguf_init refuses the whole file.
        return Err("nested arrays are not written: llama.cpp cannot read them".to_string());
    }
    let ty = first.type_id();
    match items.iter().enumerate().find(|(_, x)| x.type_id() != ty) {
        None => Ok(()),
        Some((i, other)) => Err(format!(
            "array mixes {} (element 0) and {} (element {i}); GGUF arrays hold one type",
            first.type_name(),
            other.type_name()
        )),
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The value's bytes without its type id (arrays carry their element type).
fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            put_u32(out, items.first().map_or(vt::U8, Value::type_id));
            put_u64(out, items.len() as u64);
            for x in items {
                put_value(out, x);
            }
        }
    }
}
