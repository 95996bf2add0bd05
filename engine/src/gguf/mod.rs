//! GGUF v2/v3 (little-endian): the reader ([`Gguf::parse`]), typed metadata
//! accessors, and a v3 writer ([`GgufWriter`]) for `quantize` and test fixtures.
//!
//! Layout of a file:
//!
//! ```text
//! "GGUF" u32 version, u64 tensor_count, u64 kv_count
//! kv_count x   (string key, u32 value type, value)
//! tensor_count x (string name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset)
//! padding to `general.alignment` (default 32)
//! tensor data; each tensor's offset is relative to here and a multiple of the alignment
//! ```
//!
//! Strings are `u64 length + UTF-8 bytes`; arrays are `u32 element type + u64
//! count + elements`. Tensors stay in the caller's bytes (zero-copy): a
//! [`TensorRef`] is an absolute offset and a length, both checked against the
//! file. Metadata is owned.

mod reader;
#[cfg(test)]
mod tests;
mod writer;

pub use writer::GgufWriter;

use crate::error::{Error, Result};
use crate::tensor::TensorRef;

/// `general.alignment` when the key is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;

/// The metadata key that sets the alignment of the tensor data.
pub const ALIGNMENT_KEY: &str = "general.alignment";

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

/// GGUF's `gguf_type` ids for metadata values.
pub(crate) mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

impl Value {
    /// GGUF's value type id for this value.
    pub fn type_id(&self) -> u32 {
        use value_type as t;
        match self {
            Value::U8(_) => t::U8,
            Value::I8(_) => t::I8,
            Value::U16(_) => t::U16,
            Value::I16(_) => t::I16,
            Value::U32(_) => t::U32,
            Value::I32(_) => t::I32,
            Value::U64(_) => t::U64,
            Value::I64(_) => t::I64,
            Value::F32(_) => t::F32,
            Value::F64(_) => t::F64,
            Value::Bool(_) => t::BOOL,
            Value::String(_) => t::STRING,
            Value::Array(_) => t::ARRAY,
        }
    }

    /// The type's name, for error messages ("u32", "array of string", ...).
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(a) => match a.first() {
                Some(first) => format!("array of {}", first.type_name()),
                None => "empty array".to_string(),
            },
            other => type_id_name(other.type_id()).to_string(),
        }
    }

    /// Any integer type, if the value is an integer that fits in an `i128`
    /// (all of them); the other integer accessors narrow from here.
    fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Any integer type whose value fits in a `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_integer().and_then(|v| u32::try_from(v).ok())
    }
    /// Any integer type whose value fits in a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_integer().and_then(|v| u64::try_from(v).ok())
    }
    /// Any integer type whose value fits in a `usize`.
    pub fn as_usize(&self) -> Option<usize> {
        self.as_integer().and_then(|v| usize::try_from(v).ok())
    }
    /// Any integer type whose value fits in an `i32`.
    pub fn as_i32(&self) -> Option<i32> {
        self.as_integer().and_then(|v| i32::try_from(v).ok())
    }
    /// Any integer type whose value fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_integer().and_then(|v| i64::try_from(v).ok())
    }
    /// `F32`, or `F64` rounded to the nearest `f32`.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }
    /// `F32` or `F64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// GGUF's name for a value type id (for error messages).
pub(crate) fn type_id_name(id: u32) -> &'static str {
    use value_type as t;
    match id {
        t::U8 => "u8",
        t::I8 => "i8",
        t::U16 => "u16",
        t::I16 => "i16",
        t::U32 => "u32",
        t::I32 => "i32",
        t::F32 => "f32",
        t::BOOL => "bool",
        t::STRING => "string",
        t::ARRAY => "array",
        t::U64 => "u64",
        t::I64 => "i64",
        t::F64 => "f64",
        _ => "unknown",
    }
}

macro_rules! impl_from_for_value {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(v)
            }
        })*
    };
}
impl_from_for_value!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => F32, f64 => F64, bool => Bool, String => String,
);

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_string())
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Value {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}

/// A Rust type that a metadata value can be read as, with a reason when it
/// cannot (wrong type, out of range, a bad array element).
pub trait FromValue<'a>: Sized {
    fn from_value(v: &'a Value) -> std::result::Result<Self, String>;
}

fn wrong_type(expected: &str, v: &Value) -> String {
    format!("expected {expected}, found {}", v.type_name())
}

/// Integers: any integer type is accepted when its value fits.
macro_rules! impl_from_value_int {
    ($($t:ty => $as:ident),* $(,)?) => {
        $(impl FromValue<'_> for $t {
            fn from_value(v: &Value) -> std::result::Result<Self, String> {
                match v.as_integer() {
                    None => Err(wrong_type("an integer", v)),
                    Some(i) => v.$as().ok_or_else(|| {
                        format!("value {i} ({}) does not fit in {}", v.type_name(), stringify!($t))
                    }),
                }
            }
        })*
    };
}
impl_from_value_int!(u32 => as_u32, u64 => as_u64, usize => as_usize, i32 => as_i32, i64 => as_i64);

impl FromValue<'_> for f32 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        v.as_f32().ok_or_else(|| wrong_type("f32 or f64", v))
    }
}
impl FromValue<'_> for f64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        v.as_f64().ok_or_else(|| wrong_type("f32 or f64", v))
    }
}
impl FromValue<'_> for bool {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        v.as_bool().ok_or_else(|| wrong_type("bool", v))
    }
}
impl<'a> FromValue<'a> for &'a str {
    fn from_value(v: &'a Value) -> std::result::Result<Self, String> {
        v.as_str().ok_or_else(|| wrong_type("string", v))
    }
}
impl<'a> FromValue<'a> for &'a [Value] {
    fn from_value(v: &'a Value) -> std::result::Result<Self, String> {
        v.as_array().ok_or_else(|| wrong_type("array", v))
    }
}
impl<'a, T: FromValue<'a>> FromValue<'a> for Vec<T> {
    fn from_value(v: &'a Value) -> std::result::Result<Self, String> {
        let items = v.as_array().ok_or_else(|| wrong_type("array", v))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| T::from_value(item).map_err(|e| format!("array element {i}: {e}")))
            .collect()
    }
}

/// A parsed GGUF file. Tensor offsets are absolute within the parsed bytes.
#[derive(Debug)]
pub struct Gguf {
    pub version: u32,
    pub alignment: usize,
    /// Byte offset of the tensor data section: a multiple of `alignment`,
    /// except in a file without tensors that ends before its padding, where
    /// it is the file length.
    pub data_offset: usize,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order, each bounds-checked against the file.
    pub tensors: Vec<TensorRef>,
}

impl Gguf {
    /// Parses the header, metadata and tensor infos of a GGUF v2/v3 file and
    /// checks every tensor's type, alignment and bounds against `bytes`.
    ///
    /// Never panics, whatever the header claims, and allocates in proportion
    /// to `bytes.len()`: at worst one 32-byte `Value` per byte of a `u8` array.
    pub fn parse(bytes: &[u8]) -> Result<Gguf> {
        reader::parse(bytes)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key` read as `T`; a missing key and a wrong type are
    /// different errors, both naming the key.
    pub fn get_as<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<T> {
        match self.get(key) {
            None => Err(Error::metadata(key, "missing from the GGUF metadata")),
            Some(v) => T::from_value(v).map_err(|reason| Error::metadata(key, reason)),
        }
    }

    /// Like [`Gguf::get_as`], but a missing key is `Ok(None)` (for keys with
    /// defaults); a present key of the wrong type is still an error.
    pub fn get_opt<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => T::from_value(v)
                .map(Some)
                .map_err(|reason| Error::metadata(key, reason)),
        }
    }

    /// Any integer type whose value fits.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_as(key)
    }
    /// Any integer type whose value fits.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get_as(key)
    }
    /// Any integer type whose value fits.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        self.get_as(key)
    }
    /// Any integer type whose value fits.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.get_as(key)
    }
    /// `f32`, or `f64` rounded to `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get_as(key)
    }
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.get_as(key)
    }
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get_as(key)
    }
    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        self.get_as(key)
    }
    /// An array of strings (e.g. `tokenizer.ggml.tokens`), borrowed.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.get_as(key)
    }
    /// An array of `f32`/`f64` (e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.get_as(key)
    }
    /// An array of integers that fit in `i32` (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        self.get_as(key)
    }

    /// The tensor called `name`, if the file has one.
    pub fn tensor(&self, name: &str) -> Option<&TensorRef> {
        self.tensors.iter().find(|t| t.name == name)
    }
}
