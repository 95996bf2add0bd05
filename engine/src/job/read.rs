//! Reading the input: one JSONL record per line, its text kept as it came
//! (the output splices into it) and what it holds parsed.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::conversation::Turn;
use crate::error::{Error, Result};
use crate::pairs::{self, Format, RecordError, Sample};

use super::params::is_stdio;

/// The input's lines: standard input for `-`, else the file.
pub fn open_input(path: &Path) -> Result<Box<dyn BufRead>> {
    Ok(if is_stdio(path) {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(BufReader::new(
            File::open(path).map_err(|e| Error::io(path, e))?,
        ))
    })
}

/// The JSON text of one input line, `None` for a blank one.
pub fn record_text(buf: &[u8], line_index: usize) -> Result<Option<&str>, RecordError> {
    let text = std::str::from_utf8(buf).map_err(|e| RecordError {
        line: line_index + 1,
        reason: format!(
            "not valid UTF-8 (bad byte at column {})",
            e.valid_up_to() + 1
        ),
    })?;
    // Editors on Windows start files with a byte-order mark, which JSON forbids.
    let text = if line_index == 0 {
        text.trim_start_matches('\u{feff}')
    } else {
        text
    };
    let text = text.trim_end();
    Ok((!text.trim_start().is_empty()).then_some(text))
}

/// What the record `text` on 0-based line `line_index` holds.
pub fn parse_record(text: &str, line_index: usize, format: &Format) -> Result<Sample, RecordError> {
    let (record, sample) = pairs::parse_sample_line(text, line_index + 1, format)?;
    // A second "alignment" key would make the output ambiguous JSON.
    if record.contains_key("alignment") {
        return Err(RecordError {
            line: line_index + 1,
            reason: "the record already has an \"alignment\" key (scored before?)".into(),
        });
    }
    Ok(sample)
}

/// One eligible input record: its text (`None` when already in the output
/// from an earlier run), its 1-based input line number and what it holds.
pub(crate) struct Entry {
    pub line: Option<String>,
    pub line_no: usize,
    pub sample: Sample,
}

/// The scored turns of a sample: a pair is one.
pub(crate) fn turns_of(sample: &Sample) -> Vec<Turn<'_>> {
    match sample {
        Sample::Pair(p) => vec![Turn::of_pair(p)],
        Sample::Conversation(c) => c.turns().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_and_a_byte_order_mark() {
        assert_eq!(record_text(b"  \n", 3).unwrap(), None);
        assert_eq!(
            record_text("\u{feff}{}\n".as_bytes(), 0).unwrap(),
            Some("{}")
        );
        let e = record_text(b"{\"a\xff\"}", 4).unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.reason.contains("column 4"), "{}", e.reason);
    }

    #[test]
    fn a_scored_record_is_refused() {
        let text = r#"{"instruction":"a","output":"b","alignment":{}}"#;
        let e = parse_record(text, 0, &Format::Auto).unwrap_err();
        assert!(e.reason.contains("already has"), "{}", e.reason);
    }
}
