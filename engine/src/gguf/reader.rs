//! The GGUF reader. Every count and length in the header is compared with the
//! bytes that remain *before* anything is allocated, so a lying header costs
//! an error, never a huge allocation; all offset arithmetic is checked.

use std::collections::HashSet;

use super::{value_type as vt, Gguf, Value, ALIGNMENT_KEY, DEFAULT_ALIGNMENT};
use crate::error::{Error, Result};
use crate::quant::DType;
use crate::tensor::TensorRef;

/// ggml's `GGML_MAX_DIMS`.
pub(crate) const MAX_DIMS: usize = 4;

/// Nested arrays are legal GGUF but no real file nests deeply; the cap keeps
/// a hostile file from overflowing the stack through recursion.
const MAX_ARRAY_DEPTH: usize = 8;

/// Smallest possible metadata entry: empty key (8) + type (4) + one-byte value.
const MIN_KV_BYTES: usize = 8 + 4 + 1;
/// Smallest possible tensor info: empty name (8) + n_dims (4) + one dim (8)
/// + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 8 + 4 + 8;

const HEADER: &str = "GGUF header";

/// Bytes of one fixed-size value of type `ty`.
fn fixed_size(ty: u32) -> Option<usize> {
    Some(match ty {
        vt::U8 | vt::I8 | vt::BOOL => 1,
        vt::U16 | vt::I16 => 2,
        vt::U32 | vt::I32 | vt::F32 => 4,
        vt::U64 | vt::I64 | vt::F64 => 8,
        _ => return None,
    })
}

/// The fewest bytes one value of type `ty` can occupy, used to bound array
/// counts by the bytes left.
fn min_size(ty: u32) -> Option<usize> {
    match ty {
        vt::STRING => Some(8),
        vt::ARRAY => Some(4 + 8),
        other => fixed_size(other),
    }
}

/// Decodes one fixed-size value; `b.len() == fixed_size(ty)`.
fn decode_fixed(ty: u32, b: &[u8]) -> std::result::Result<Value, String> {
    let mut a = [0u8; 8];
    a[..b.len()].copy_from_slice(b);
    let [b0, b1, b2, b3, ..] = a;
    let w32 = [b0, b1, b2, b3];
    Ok(match ty {
        vt::U8 => Value::U8(b0),
        vt::I8 => Value::I8(b0 as i8),
        vt::BOOL => match b0 {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            other => return Err(format!("bool byte is {other}, expected 0 or 1")),
        },
        vt::U16 => Value::U16(u16::from_le_bytes([b0, b1])),
        vt::I16 => Value::I16(i16::from_le_bytes([b0, b1])),
        vt::U32 => Value::U32(u32::from_le_bytes(w32)),
        vt::I32 => Value::I32(i32::from_le_bytes(w32)),
        vt::F32 => Value::F32(f32::from_le_bytes(w32)),
        vt::U64 => Value::U64(u64::from_le_bytes(a)),
        vt::I64 => Value::I64(i64::from_le_bytes(a)),
        vt::F64 => Value::F64(f64::from_le_bytes(a)),
        other => return Err(format!("value type {other} is not a fixed-size type")),
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::format(
                what,
                self.pos as u64,
                format!(
                    "needs {n} bytes but only {} remain (file truncated?)",
                    self.remaining()
                ),
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A `u64` count or length, which must be at most `remaining / unit`
    /// (each item takes at least `unit` bytes): checked before allocating.
    fn count(&mut self, unit: usize, what: &str, name: &str) -> Result<usize> {
        let at = self.pos as u64;
        let n = self.u64(what)?;
        let fits = self.remaining() / unit.max(1);
        match usize::try_from(n) {
            Ok(n) if n <= fits => Ok(n),
            _ => Err(Error::format(
                what,
                at,
                format!(
                    "{name} is {n} but only {} bytes remain (at least {unit} per item)",
                    self.remaining()
                ),
            )),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos as u64;
        let len = self.count(1, what, "string length")?;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|e| Error::format(what, at, format!("string is not valid UTF-8 ({e})")))
    }

    /// One value of type `ty`; `depth` counts enclosing arrays.
    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value> {
        let at = self.pos;
        if let Some(size) = fixed_size(ty) {
            let b = self.take(size, what)?;
            return decode_fixed(ty, b).map_err(|r| Error::format(what, at as u64, r));
        }
        match ty {
            vt::STRING => Ok(Value::String(self.string(what)?)),
            vt::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::format(
                        what,
                        at as u64,
                        format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
                    ));
                }
                let elem_at = self.pos as u64;
                let elem_ty = self.u32(what)?;
                let unit = min_size(elem_ty).ok_or_else(|| {
                    Error::format(
                        what,
                        elem_at,
                        format!("unknown array element type {elem_ty}"),
                    )
                })?;
                let n = self.count(unit, what, "array count")?;
                // `count` bounded `n` by the bytes left, so this allocation is
                // at most a small multiple of the file size.
                let mut items = Vec::with_capacity(n);
                if let Some(size) = fixed_size(elem_ty) {
                    let start = self.pos;
                    let b = self.take(n * size, what)?;
                    for (i, chunk) in b.chunks_exact(size).enumerate() {
                        let v = decode_fixed(elem_ty, chunk).map_err(|r| {
                            Error::format(
                                what,
                                (start + i * size) as u64,
                                format!("element {i}: {r}"),
                            )
                        })?;
                        items.push(v);
                    }
                } else {
                    for _ in 0..n {
                        items.push(self.value(elem_ty, what, depth + 1)?);
                    }
                }
                Ok(Value::Array(items))
            }
            other => Err(Error::format(
                what,
                at as u64,
                format!("unknown value type {other}"),
            )),
        }
    }
}

/// A tensor info as read, before its data is located.
struct TensorInfo {
    name: String,
    dtype: DType,
    dims: Vec<usize>,
    /// Relative to the data section.
    offset: u64,
    /// Where the info starts, for errors.
    info_at: u64,
}

/// Magic, version, tensor count and metadata count.
const HEADER_BYTES: usize = 4 + 4 + 8 + 8;

/// Versions above this are not a future GGUF but garbage: the format has
/// had three versions in its first years.
const MAX_PLAUSIBLE_VERSION: u32 = 255;

pub(super) fn parse(bytes: &[u8]) -> Result<Gguf> {
    let mut c = Cursor { bytes, pos: 0 };

    // ---- header ----
    let magic = c.take(4, HEADER)?;
    if magic != b"GGUF" {
        return Err(Error::format(
            HEADER,
            0,
            format!(
                "magic is {:?}, expected \"GGUF\" (not a GGUF file)",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    // A header cut short is a damaged file, whatever its version field says.
    if bytes.len() < HEADER_BYTES {
        return Err(Error::format(
            HEADER,
            bytes.len() as u64,
            format!(
                "the file ends after {} bytes, inside the {HEADER_BYTES}-byte header (truncated)",
                bytes.len()
            ),
        ));
    }
    let version = c.u32(HEADER)?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Error::unsupported(
                "GGUF version",
                "1 (only versions 2 and 3 are read; re-convert the model with a current llama.cpp)",
            ))
        }
        v if (1..=3).contains(&v.swap_bytes()) => {
            return Err(Error::unsupported(
                "GGUF byte order",
                format!(
                    "big-endian (version {} read byte-swapped); only little-endian files are read",
                    v.swap_bytes()
                ),
            ))
        }
        // A later version of the format is a real file we cannot read; a
        // number far beyond any version is damage (or text after "GGUF").
        v if v <= MAX_PLAUSIBLE_VERSION => {
            return Err(Error::unsupported(
                "GGUF version",
                format!("{v} (only versions 2 and 3 are read)"),
            ))
        }
        v => {
            return Err(Error::format(
                HEADER,
                4,
                format!("version {v} is not a GGUF version (damaged file, or not GGUF)"),
            ))
        }
    }
    let tensor_count_at = c.pos as u64;
    let tensor_count = c.u64(HEADER)?;
    let kv_count = c.count(MIN_KV_BYTES, HEADER, "metadata count")?;

    // ---- metadata ----
    let mut metadata = Vec::with_capacity(kv_count);
    let mut value_offsets = Vec::with_capacity(kv_count);
    let mut keys = HashSet::with_capacity(kv_count);
    for i in 0..kv_count {
        let entry_at = c.pos as u64;
        let key = c.string(&format!("GGUF metadata entry #{i} key"))?;
        let what = format!("GGUF metadata key '{key}'");
        let ty_at = c.pos as u64;
        let ty = c.u32(&what)?;
        if min_size(ty).is_none() {
            return Err(Error::format(
                what,
                ty_at,
                format!("unknown value type {ty}"),
            ));
        }
        let value_at = c.pos as u64;
        let value = c.value(ty, &what, 0)?;
        if !keys.insert(key.clone()) {
            return Err(Error::format(what, entry_at, "duplicate key"));
        }
        metadata.push((key, value));
        value_offsets.push(value_at);
    }

    let alignment = match metadata.iter().position(|(k, _)| k == ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(i) => {
            let v = &metadata[i].1;
            let what = format!("GGUF metadata key '{ALIGNMENT_KEY}'");
            match v.as_usize() {
                Some(a) if a.is_power_of_two() => a,
                Some(a) => {
                    return Err(Error::format(
                        what,
                        value_offsets[i],
                        format!("alignment {a} is not a power of two"),
                    ))
                }
                None => {
                    return Err(Error::format(
                        what,
                        value_offsets[i],
                        format!(
                            "expected a non-negative integer, found {} {v:?}",
                            v.type_name()
                        ),
                    ))
                }
            }
        }
    };

    // ---- tensor infos ----
    let tensor_count = match usize::try_from(tensor_count) {
        Ok(n) if n <= c.remaining() / MIN_TENSOR_INFO_BYTES => n,
        _ => {
            return Err(Error::format(
                HEADER,
                tensor_count_at,
                format!(
                    "tensor count is {tensor_count} but only {} bytes of tensor infos remain",
                    c.remaining()
                ),
            ))
        }
    };
    let mut infos = Vec::with_capacity(tensor_count);
    let mut names = HashSet::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let info_at = c.pos as u64;
        let name = c.string(&format!("GGUF tensor info #{i} name"))?;
        let what = format!("GGUF tensor info '{name}'");
        if !names.insert(name.clone()) {
            return Err(Error::format(what, info_at, "duplicate tensor name"));
        }
        let n_dims_at = c.pos as u64;
        let n_dims = c.u32(&what)?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(Error::format(
                what,
                n_dims_at,
                format!("n_dims is {n_dims}, expected 1..={MAX_DIMS}"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let dim_at = c.pos as u64;
            let dim = c.u64(&what)?;
            let dim = usize::try_from(dim).map_err(|_| {
                Error::format(
                    &what,
                    dim_at,
                    format!("dimension {d} is {dim}, too large for this platform"),
                )
            })?;
            dims.push(dim);
        }
        let type_at = c.pos;
        let type_id = c.u32(&what)?;
        let dtype = match DType::from_ggml_id(type_id) {
            Some(t) if t.is_weight_type() => t,
            other => {
                let why = match other {
                    Some(_) => ", an activation-only format",
                    None => "",
                };
                return Err(Error::unsupported(
                    "tensor type",
                    format!(
                        "{} (id {type_id}) in tensor '{name}' (type field at byte {type_at}){why}",
                        DType::ggml_name(type_id)
                    ),
                ));
            }
        };
        let offset = c.u64(&what)?;
        infos.push(TensorInfo {
            name,
            dtype,
            dims,
            offset,
            info_at,
        });
    }

    // ---- tensor data ----
    let infos_end = c.pos;
    let data_offset = match infos_end.checked_next_multiple_of(alignment) {
        Some(d) if d <= bytes.len() => d,
        // llama.cpp writes vocabulary-only files without the final padding.
        _ if infos.is_empty() => bytes.len(),
        _ => {
            return Err(Error::format(
                "GGUF tensor data",
                infos_end as u64,
                format!(
                    "the data section (tensor infos end at {infos_end}, aligned to {alignment}) starts past the end of the file ({} bytes)",
                    bytes.len()
                ),
            ))
        }
    };

    let mut tensors = Vec::with_capacity(infos.len());
    for info in infos {
        let t = locate(info, alignment, data_offset, bytes.len())?;
        tensors.push(t);
    }

    Ok(Gguf {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
    })
}

/// Checks a tensor's shape, alignment and bounds and makes its `TensorRef`.
fn locate(
    info: TensorInfo,
    alignment: usize,
    data_offset: usize,
    file_len: usize,
) -> Result<TensorRef> {
    let TensorInfo {
        name,
        dtype,
        dims,
        offset,
        info_at,
    } = info;
    let what = format!("GGUF tensor info '{name}'");
    let err = |reason: String| Error::format(&what, info_at, reason);

    // Checked apart from `n_bytes`: block formats store fewer bytes than
    // elements, so the byte size can fit where `TensorRef::n_elements` overflows.
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| err(format!("dims {dims:?} overflow the element count")))?;
    let row_bytes = dtype.row_bytes(dims[0]).ok_or_else(|| {
        err(format!(
            "dims[0] = {} is not a multiple of the {} block length {}",
            dims[0],
            dtype.name(),
            dtype.block_len()
        ))
    })?;
    let n_bytes = dims[1..]
        .iter()
        .try_fold(row_bytes, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            err(format!(
                "dims {dims:?} of {} overflow the byte size",
                dtype.name()
            ))
        })?;

    if offset % alignment as u64 != 0 {
        return Err(err(format!(
            "data offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    let start = usize::try_from(offset)
        .ok()
        .and_then(|o| o.checked_add(data_offset));
    let end = start.and_then(|s| s.checked_add(n_bytes));
    match (start, end) {
        (Some(start), Some(end)) if end <= file_len => Ok(TensorRef {
            name,
            dtype,
            dims,
            shard: 0,
            offset: start,
            n_bytes,
        }),
        _ => Err(err(format!(
            "data ({n_bytes} bytes of {} at data offset {offset}, absolute {}) extends past the end of the file ({file_len} bytes)",
            dtype.name(),
            offset as u128 + data_offset as u128,
        ))),
    }
}
