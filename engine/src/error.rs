//! The engine's one error type. Every variant says *what* was wrong and *where*
//! (the tensor, metadata key, file offset or argument), so a user can act on it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model or data file is malformed: wrong magic, truncated, inconsistent.
    #[error("{what} is malformed at byte {offset}: {reason}")]
    Format {
        /// The file or section, e.g. "GGUF header", "tensor info 'blk.0.attn_q.weight'".
        what: String,
        offset: u64,
        reason: String,
    },

    /// A metadata key is missing or has the wrong type/value.
    #[error("metadata key '{key}': {reason}")]
    Metadata { key: String, reason: String },

    /// A tensor is missing, has the wrong shape or type, or lies outside the file.
    #[error("tensor '{name}': {reason}")]
    Tensor { name: String, reason: String },

    /// Something valid but not supported by this engine (an architecture, a tensor type).
    #[error("unsupported {what}: {value}")]
    Unsupported { what: String, value: String },

    /// The tokenizer could not be built or could not encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A chat template failed to compile or render, or raised an exception
    /// (`raise_exception`); the message names the template line.
    #[error("chat template: {0}")]
    Template(String),

    /// A caller passed an argument outside its domain.
    #[error("invalid argument '{name}': {reason}")]
    InvalidArgument { name: String, reason: String },

    /// An input text is invalid (not UTF-8, too long, ...).
    #[error("input text: {0}")]
    Input(String),

    /// A line of a data file (a JSONL record in, a scored record back) is
    /// unusable: the file as the user named it, its 1-based line, and why.
    #[error("input text: {file}, line {line}: {reason}")]
    Record {
        file: String,
        line: usize,
        reason: String,
    },

    /// The GPU could not do `what`: no driver, library or device, an
    /// unsupported architecture, a kernel that failed to compile or launch.
    #[error("GPU {device}: {what}: {reason}")]
    Gpu {
        device: String,
        what: String,
        reason: String,
    },

    /// The GPU ran out of memory while doing `what`.
    #[error("GPU {device}: out of memory while {what} ({bytes} bytes asked, {free} free)")]
    GpuOutOfMemory {
        device: String,
        what: String,
        bytes: usize,
        free: usize,
    },
}

impl Error {
    pub fn format(what: impl Into<String>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Format {
            what: what.into(),
            offset,
            reason: reason.into(),
        }
    }
    pub fn metadata(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Metadata {
            key: key.into(),
            reason: reason.into(),
        }
    }
    pub fn tensor(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.into(),
            reason: reason.into(),
        }
    }
    pub fn unsupported(what: impl Into<String>, value: impl Into<String>) -> Self {
        Error::Unsupported {
            what: what.into(),
            value: value.into(),
        }
    }
    pub fn invalid_argument(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            reason: reason.into(),
        }
    }
    pub fn gpu(
        device: impl Into<String>,
        what: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Gpu {
            device: device.into(),
            what: what.into(),
            reason: reason.into(),
        }
    }
    pub fn record(file: impl Into<String>, line: usize, reason: impl Into<String>) -> Self {
        Error::Record {
            file: file.into(),
            line,
            reason: reason.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
