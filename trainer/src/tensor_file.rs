//! safetensors files written and read one tensor at a time, so a checkpoint
//! of a 7B model never sits in memory whole beside the state it is written
//! from or read into: writing converts each tensor to bytes only when the
//! `safetensors` crate asks for it; reading parses the header and then
//! reads each tensor's bytes into one reused buffer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use half::bf16;
use safetensors::tensor::Dtype;

use crate::error::{CandleExt, Error, Result};

/// A tensor to write, borrowed from where it lives.
pub enum Blob<'a> {
    /// A candle tensor (any device; copied to the host when written).
    Tensor(&'a Tensor),
    F32(&'a [f32], Vec<usize>),
    Bf16(&'a [bf16], Vec<usize>),
    U8(&'a [u8], Vec<usize>),
}

fn dtype_of(t: DType) -> Dtype {
    match t {
        DType::U8 => Dtype::U8,
        DType::U32 => Dtype::U32,
        DType::I64 => Dtype::I64,
        DType::BF16 => Dtype::BF16,
        DType::F16 => Dtype::F16,
        DType::F64 => Dtype::F64,
        _ => Dtype::F32,
    }
}

fn le_bytes<T: Copy, const K: usize>(x: &[T], f: impl Fn(T) -> [u8; K]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() * K);
    for &v in x {
        out.extend_from_slice(&f(v));
    }
    out
}

impl safetensors::View for &Blob<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Blob::Tensor(t) => dtype_of(Tensor::dtype(t)),
            Blob::F32(..) => Dtype::F32,
            Blob::Bf16(..) => Dtype::BF16,
            Blob::U8(..) => Dtype::U8,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Blob::Tensor(t) => Tensor::dims(t),
            Blob::F32(_, s) | Blob::Bf16(_, s) | Blob::U8(_, s) => s,
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Blob::F32(x, _) => Cow::Owned(le_bytes(x, f32::to_le_bytes)),
            Blob::Bf16(x, _) => Cow::Owned(le_bytes(x, |v: bf16| v.to_bits().to_le_bytes())),
            Blob::U8(x, _) => Cow::Borrowed(x),
            Blob::Tensor(t) => {
                // The View trait cannot fail; a tensor that cannot be read
                // back (a lost device) aborts the write with a panic that
                // names it rather than writing a wrong checkpoint.
                let flat = t.flatten_all().expect("checkpoint: flatten tensor");
                Cow::Owned(match Tensor::dtype(t) {
                    DType::BF16 => {
                        le_bytes(&flat.to_vec1::<bf16>().expect("checkpoint: read"), |v| {
                            v.to_bits().to_le_bytes()
                        })
                    }
                    DType::U8 => flat.to_vec1::<u8>().expect("checkpoint: read"),
                    DType::U32 => le_bytes(
                        &flat.to_vec1::<u32>().expect("checkpoint: read"),
                        u32::to_le_bytes,
                    ),
                    DType::F64 => le_bytes(
                        &flat.to_vec1::<f64>().expect("checkpoint: read"),
                        f64::to_le_bytes,
                    ),
                    _ => le_bytes(
                        &flat
                            .to_dtype(DType::F32)
                            .and_then(|x| x.to_vec1::<f32>())
                            .expect("checkpoint: read"),
                        f32::to_le_bytes,
                    ),
                })
            }
        }
    }

    fn data_len(&self) -> usize {
        let n: usize = self.shape().iter().product();
        n * self.dtype().bitsize() / 8
    }
}

/// Writes `tensors` to `path` (not atomically: checkpoints are written in
/// a temporary folder that is renamed whole).
pub fn write(path: &Path, tensors: &[(String, Blob)]) -> Result<()> {
    let views = tensors.iter().map(|(n, b)| (n.as_str(), b));
    safetensors::serialize_to_file(views, None, path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(e) => Error::io(path, e),
        other => Error::checkpoint(path, format!("cannot write: {other}")),
    })
}

/// One entry of a safetensors header.
#[derive(Clone, Debug)]
pub struct Entry {
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: u64,
    pub end: u64,
}

/// A safetensors file opened for reading tensor by tensor.
pub struct TensorFile {
    path: PathBuf,
    file: File,
    pub entries: HashMap<String, Entry>,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<TensorFile> {
        let bad = |why: String| Error::checkpoint(path, why);
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n)
            .map_err(|_| bad("shorter than a safetensors header".into()))?;
        let n = u64::from_le_bytes(n);
        if n > main_engine::safetensors::MAX_HEADER_BYTES || 8 + n > file_len {
            return Err(bad(format!(
                "header length {n} does not fit the file ({file_len} bytes)"
            )));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header)
            .map_err(|e| Error::io(path, e))?;
        let json: serde_json::Value =
            serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
        let obj = json
            .as_object()
            .ok_or_else(|| bad("header is not a JSON object".into()))?;
        let data_start = 8 + n;
        let mut entries = HashMap::new();
        for (name, info) in obj {
            if name == "__metadata__" {
                continue;
            }
            let dtype = info["dtype"]
                .as_str()
                .ok_or_else(|| bad(format!("'{name}' has no dtype")))?
                .to_string();
            let shape = info["shape"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|d| d.as_u64().map(|d| d as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| bad(format!("'{name}' has no shape")))?;
            let offs = info["data_offsets"]
                .as_array()
                .and_then(|a| Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?)))
                .ok_or_else(|| bad(format!("'{name}' has no data_offsets")))?;
            let (start, end) = (data_start + offs.0, data_start + offs.1);
            if offs.0 > offs.1 || end > file_len {
                return Err(bad(format!(
                    "'{name}' spans bytes {start}..{end} of a {file_len}-byte file"
                )));
            }
            entries.insert(
                name.clone(),
                Entry {
                    dtype,
                    shape,
                    start,
                    end,
                },
            );
        }
        Ok(TensorFile {
            path: path.to_path_buf(),
            file,
            entries,
        })
    }

    /// The entry `name`, checked to be `dtype` with `shape`.
    pub fn entry(&self, name: &str, dtype: &str, shape: &[usize]) -> Result<&Entry> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| Error::checkpoint(&self.path, format!("tensor '{name}' is missing")))?;
        if e.dtype != dtype || e.shape != shape {
            return Err(Error::checkpoint(
                &self.path,
                format!(
                    "tensor '{name}' is {} {:?}, this run needs {dtype} {shape:?}",
                    e.dtype, e.shape
                ),
            ));
        }
        Ok(e)
    }

    /// Reads tensor `name` (checked as in [`TensorFile::entry`]) into `buf`,
    /// which is resized to its byte length and reused between calls.
    pub fn read_into(
        &mut self,
        name: &str,
        dtype: &str,
        shape: &[usize],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let e = self.entry(name, dtype, shape)?.clone();
        let elem = match dtype {
            "F64" | "I64" => 8,
            "F32" | "U32" | "I32" => 4,
            "BF16" | "F16" => 2,
            _ => 1,
        };
        let len = (e.end - e.start) as usize;
        if len != shape.iter().product::<usize>() * elem {
            return Err(Error::checkpoint(
                &self.path,
                format!("tensor '{name}' holds {len} bytes for shape {shape:?}"),
            ));
        }
        buf.resize(len, 0);
        self.file
            .seek(SeekFrom::Start(e.start))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(|err| Error::io(&self.path, err))
    }

    /// Reads tensor `name` as a candle tensor on the CPU.
    pub fn tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        buf: &mut Vec<u8>,
    ) -> Result<Tensor> {
        let st = match dtype {
            DType::BF16 => "BF16",
            DType::F16 => "F16",
            DType::F64 => "F64",
            DType::U32 => "U32",
            DType::U8 => "U8",
            _ => "F32",
        };
        self.read_into(name, st, shape, buf)?;
        Tensor::from_raw_buffer(buf, dtype, shape, &candle_core::Device::Cpu)
            .op(&format!("read '{name}'"))
    }
}

/// Little-endian bytes into `out` (lengths already checked by the reader).
pub fn f32s_into(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

pub fn bf16s_into(bytes: &[u8], out: &mut [bf16]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]]));
    }
}
