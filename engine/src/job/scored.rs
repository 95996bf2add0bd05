//! Reading scored records back (a resumed output, the filters' stage): the
//! `"alignment"` object of each line, nothing else.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The object of a written record that the summary and the filters read.
#[derive(Deserialize)]
struct ScoredRecord {
    alignment: ScoredFields,
}

/// A record's `"alignment"` object: its scores by name (`null` where the
/// scorer produced a NaN) and `"line"`, its 1-based input line (absent in
/// outputs of older versions).
#[derive(Deserialize)]
pub(crate) struct ScoredFields(serde_json::Map<String, serde_json::Value>);

impl ScoredFields {
    pub fn number(&self, name: &str) -> Option<f64> {
        self.0.get(name).and_then(serde_json::Value::as_f64)
    }

    pub fn line(&self) -> Option<usize> {
        self.0
            .get("line")
            .and_then(serde_json::Value::as_u64)
            .map(|n| n as usize)
    }
}

/// The `"alignment"` object of `line`, line `line_no` of `path`.
pub(crate) fn read_scored(line: &[u8], path: &Path, line_no: usize) -> Result<ScoredFields> {
    serde_json::from_slice::<ScoredRecord>(line)
        .map(|r| r.alignment)
        .map_err(|e| {
            Error::record(
                path.display().to_string(),
                line_no,
                format!("not a record written by main-score score ({e}); remove the file or choose another --output"),
            )
        })
}
