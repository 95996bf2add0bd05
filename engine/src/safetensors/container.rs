//! The safetensors container, read by the `safetensors` crate (fuzzed
//! upstream); where its errors do not say which tensor or byte is wrong,
//! ours do:
//!
//! ```text
//! [u64 LE: header length N][N bytes: JSON header][data section]
//! header: { "__metadata__": {..}, "<name>": { "dtype": "F32", "shape": [out, in],
//!           "data_offsets": [begin, end] }, .. }   offsets relative to the data section
//! ```

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensorError};
use safetensors::SafeTensors;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A header larger than this is a corrupt or hostile file, not a model: real
/// checkpoints need a few hundred bytes per tensor. (The `safetensors`
/// crate's own limit, named in our messages.)
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor of a shard's header, bounds already checked.
pub(super) struct Entry {
    pub(super) dtype: Dtype,
    /// HF order: `shape[0]` is the outermost dimension.
    pub(super) shape: Vec<usize>,
    pub(super) shard: usize,
    /// Absolute byte offset within the shard.
    pub(super) offset: usize,
    pub(super) n_bytes: usize,
}

/// Parses one shard's header with the `safetensors` crate into `index` (HF
/// name -> entry): the crate checks that the tensors tile the data section
/// exactly and match their shapes and dtypes.
pub(super) fn index_shard(
    label: &str,
    shard: usize,
    bytes: &[u8],
    index: &mut HashMap<String, Entry>,
) -> Result<()> {
    let (header_len, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| container_error(label, bytes, e))?;
    let data_start = 8 + header_len;
    for (name, info) in metadata.tensors() {
        let (begin, end) = info.data_offsets;
        let entry = Entry {
            dtype: info.dtype,
            shape: info.shape.clone(),
            shard,
            offset: data_start + begin,
            n_bytes: end - begin,
        };
        if index.insert(name.clone(), entry).is_some() {
            return Err(Error::tensor(
                name,
                format!("in {label}: appears in more than one shard"),
            ));
        }
    }
    Ok(())
}

/// The crate's error as ours, naming the file, byte offset or tensor that
/// is wrong: where the crate's message does not say (a tensor's offsets or
/// size, a bad entry of the header), the header is read again to find it.
fn container_error(label: &str, bytes: &[u8], e: SafeTensorError) -> Error {
    let file_len = bytes.len() as u64;
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    match (e, header_len) {
        (SafeTensorError::HeaderTooSmall, _) | (_, None) => Error::format(
            label,
            0,
            format!("file is {file_len} bytes, too short for the 8-byte header length"),
        ),
        (SafeTensorError::HeaderTooLarge, Some(n)) => Error::format(
            label,
            0,
            format!("header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"),
        ),
        (SafeTensorError::InvalidHeaderLength, Some(n)) => Error::format(
            label,
            0,
            format!(
                "header length {n} runs past the end of the file ({file_len} bytes): \
                 the file is truncated or not safetensors"
            ),
        ),
        (SafeTensorError::InvalidHeader(utf8), _) => Error::format(
            label,
            8 + utf8.valid_up_to() as u64,
            "header is not UTF-8 (not a valid JSON header)",
        ),
        (e, Some(n)) => {
            let header = &bytes[8..8 + n as usize];
            let data_len = file_len - 8 - n;
            find_bad_entry(label, header, n, data_len).unwrap_or_else(|| match e {
                SafeTensorError::InvalidHeaderDeserialization(e) => Error::format(
                    label,
                    8,
                    format!("header is not a valid JSON safetensors header: {e}"),
                ),
                SafeTensorError::InvalidOffset(name) => Error::tensor(
                    name,
                    format!(
                        "in {label}: data_offsets leave a gap or overlap another tensor \
                         (tensors must tile the data section from byte 0)"
                    ),
                ),
                SafeTensorError::MetadataIncompleteBuffer => Error::format(
                    label,
                    8 + n,
                    format!(
                        "the tensors do not end where the {data_len}-byte data section does \
                         (a truncated or padded file)"
                    ),
                ),
                other => Error::format(label, 8, other.to_string()),
            })
        }
    }
}

/// The first header entry that is malformed, lies outside the data section
/// or disagrees with its shape, as an error naming it; `None` when every
/// entry is sound (the fault is elsewhere).
fn find_bad_entry(label: &str, header: &[u8], header_len: u64, data_len: u64) -> Option<Error> {
    let header: Map<String, Value> = match serde_json::from_slice(header) {
        Ok(h) => h,
        Err(e) => {
            return Some(Error::format(
                label,
                8,
                format!("header is not a valid JSON object: {e}"),
            ))
        }
    };
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |reason: String| Some(Error::tensor(name, format!("in {label}: {reason}")));
        let Some(info) = info.as_object() else {
            return bad(format!("header entry is not an object: {info}"));
        };
        let Some(dtype) = info.get("dtype").and_then(Value::as_str) else {
            return bad("header entry has no string 'dtype'".into());
        };
        let Ok(parsed) = serde_json::from_value::<Dtype>(Value::from(dtype)) else {
            return bad(format!("dtype '{dtype}' is not a safetensors dtype"));
        };
        let shape = info
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<usize>>>()
            });
        let Some(shape) = shape else {
            return bad("header entry has no integer array 'shape'".into());
        };
        let (begin, end) = match info.get("data_offsets").and_then(Value::as_array) {
            Some(o) if o.len() == 2 => match (o[0].as_u64(), o[1].as_u64()) {
                (Some(b), Some(e)) => (b, e),
                _ => return bad(format!("data_offsets {o:?} are not integers")),
            },
            _ => return bad("header entry has no 2-element 'data_offsets'".into()),
        };
        if begin > end || end > data_len {
            return bad(format!(
                "data_offsets [{begin}, {end}] lie outside the data section \
                 ({data_len} bytes after the {header_len}-byte header)"
            ));
        }
        let n_bits = shape
            .iter()
            .try_fold(parsed.bitsize(), |acc, &d| acc.checked_mul(d));
        let Some(n_bits) = n_bits else {
            return bad(format!("shape {shape:?} overflows"));
        };
        let n_bytes = end - begin;
        if n_bits % 8 != 0 || (n_bits / 8) as u64 != n_bytes {
            return bad(format!(
                "data_offsets [{begin}, {end}] hold {n_bytes} bytes, \
                 but shape {shape:?} of {dtype} needs {}",
                n_bits.div_ceil(8)
            ));
        }
    }
    None
}
