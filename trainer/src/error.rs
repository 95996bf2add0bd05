//! The trainer's one error type: what went wrong and where (the file, the
//! config key, the argument, the step).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine refused something (model files, tokenizer, template, scorer).
    #[error("engine: {0}")]
    Engine(#[from] main_engine::Error),

    /// candle failed inside a tensor operation.
    #[error("tensor operation '{op}': {source}")]
    Candle {
        op: String,
        #[source]
        source: candle_core::Error,
    },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A data file has a bad record.
    #[error("{path} line {line}: {reason}")]
    Data {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    /// A command-line argument or config value is invalid.
    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: String, reason: String },

    /// A checkpoint is missing a piece or does not belong to this run.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    /// The external generator (an OpenAI-compatible server) failed.
    #[error("generator {url}, request {request}: {reason}")]
    Generator {
        url: String,
        request: usize,
        reason: String,
    },

    /// Training diverged or produced a non-finite value.
    #[error("step {step}: {reason}")]
    Training { step: usize, reason: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Names the candle operation that failed: `.op("attention")?`.
pub trait CandleExt<T> {
    fn op(self, op: &str) -> Result<T>;
}

impl<T> CandleExt<T> for candle_core::Result<T> {
    fn op(self, op: &str) -> Result<T> {
        self.map_err(|source| Error::Candle {
            op: op.to_string(),
            source,
        })
    }
}
