//! The data set view's binding (issue 23): a file written by `main-score
//! score`, summarised by the engine's [`ReportBuilder`] (the data that
//! `main-score report` draws), and each record's line, byte range, texts and
//! scores, which the page's threshold, table and export need.
//!
//! The skin splits the file into lines and translates types and errors; the
//! engine reads each line (the report's own reader, [`ScoredLine`]) and
//! computes every statistic.

use std::ops::Range;

use main_engine::report::record::ScoredLine;
use main_engine::report::{ReportBuilder, ReportData, ReportParams, Rule};
use main_engine::score::SCORE_FIELDS;
use serde::Serialize;
use serde_json::Value;
use wasm_bindgen::prelude::*;

use crate::WasmError;

/// wasm32 has 4 GiB of address space: the file is copied in once, and its
/// records' texts and numbers kept once more.
const MAX_FILE_BYTES: usize = 1 << 30;

/// The table's view of every record, in file order: one entry per record
/// in each array (columns: 10,000 records cross to JS as a few arrays).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Records {
    /// 1-based line number in this file.
    file_line: Vec<usize>,
    /// The record's own line (its `"line"`, the input line it was scored
    /// from; else its line here): what the report's dots and examples name.
    line: Vec<u64>,
    /// Byte offset of the line in the file.
    start: Vec<usize>,
    /// One past the line's last byte, its `\n` included when it has one:
    /// `bytes[start..end]` is the line exactly as it was.
    end: Vec<usize>,
    /// The scored pair's texts; for a conversation, the turn its scores are
    /// of (the weakest).
    instruction: Vec<String>,
    response: Vec<String>,
    truncated: Vec<bool>,
    /// Each score field (`SCORE_FIELDS` order, snake_case as in the file)
    /// that at least one record has; `null` where a record has no value.
    fields: Vec<Field>,
}

#[derive(Serialize, Debug)]
struct Field {
    name: &'static str,
    values: Vec<Option<f64>>,
}

impl Records {
    fn new() -> Records {
        Records {
            file_line: Vec::new(),
            line: Vec::new(),
            start: Vec::new(),
            end: Vec::new(),
            instruction: Vec::new(),
            response: Vec::new(),
            truncated: Vec::new(),
            fields: SCORE_FIELDS
                .iter()
                .map(|name| Field {
                    name,
                    values: Vec::new(),
                })
                .collect(),
        }
    }

    fn add(&mut self, r: &ScoredLine, file_line: usize, range: Range<usize>) {
        let (instruction, response) = r.shown_exchange().cloned().unwrap_or_default();
        self.file_line.push(file_line);
        self.line.push(r.line);
        self.start.push(range.start);
        self.end.push(range.end);
        self.instruction.push(instruction);
        self.response.push(response);
        self.truncated.push(r.truncated);
        for (field, &v) in self.fields.iter_mut().zip(&r.values) {
            field.values.push((!v.is_nan()).then_some(v));
        }
    }

    /// Leaves out the fields no record has (`contrastive` without negatives).
    fn finish(mut self) -> Records {
        self.fields.retain(|f| f.values.iter().any(Option::is_some));
        self
    }
}

/// Each line of `bytes` as (1-based number, byte range with its `\n`).
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, Range<usize>)> + '_ {
    let mut start = 0;
    let mut line_no = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| start + i + 1);
        line_no += 1;
        let item = (line_no, start..end);
        start = end;
        Some(item)
    })
}

/// What the page may set (JSON; every key optional): `source` (the file's
/// name, in the report and in errors), `dots`, `bins`, `percentiles`, `min`
/// (`{field: value}`: a threshold to mark) and `provenance` (the scored
/// file's `.provenance.json`, which a page cannot find beside the file as
/// `main-score report` does: shown, and its filter marked unless `min` is given).
#[derive(Debug)]
struct Params {
    report: ReportParams,
    source: String,
    provenance: Option<Value>,
}

fn params_of(json: &str) -> Result<Params, WasmError> {
    let bad = |reason: String| WasmError::Option {
        name: "params",
        reason,
    };
    let object = match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(o)) => o,
        Ok(other) => return Err(bad(format!("expected a JSON object, found {other}"))),
        Err(e) => return Err(bad(format!("invalid JSON: {e}"))),
    };
    let mut params = ReportParams::default();
    let mut source = "data set".to_string();
    let mut provenance = None;
    let whole = |key: &str, v: &Value, hi: u64| -> Result<usize, WasmError> {
        v.as_u64()
            .filter(|n| (1..=hi).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| bad(format!("{key}: {v} is not a whole number in [1, {hi}]")))
    };
    for (key, v) in &object {
        match key.as_str() {
            "source" => {
                source = v
                    .as_str()
                    .ok_or_else(|| bad(format!("source: {v} is not a string")))?
                    .to_string()
            }
            "dots" => params.dots = whole(key, v, 100_000)?,
            "bins" => params.bins = whole(key, v, 1_000)?,
            "percentiles" => {
                params.percentiles = v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|p| p.as_f64().filter(|p| (0.0..=100.0).contains(p)))
                            .collect::<Option<Vec<f64>>>()
                    })
                    .ok_or_else(|| {
                        bad(format!("percentiles: {v} is not an array of numbers in [0, 100]"))
                    })?
            }
            "min" => {
                let rules = v
                    .as_object()
                    .ok_or_else(|| bad(format!("min: {v} is not an object {{field: value}}")))?;
                for (field, x) in rules {
                    let value = x
                        .as_f64()
                        .ok_or_else(|| bad(format!("min.{field}: {x} is not a number")))?;
                    params.rules.push(Rule::Min {
                        field: field.clone(),
                        value,
                    });
                }
            }
            "provenance" => {
                if !v.is_object() {
                    return Err(bad(format!(
                        "provenance: expected the JSON object of a .provenance.json file, found {v}"
                    )));
                }
                provenance = Some(v.clone());
            }
            _ => {
                return Err(bad(format!(
                    "unknown key '{key}', expected one of [\"source\", \"dots\", \"bins\", \"percentiles\", \"min\", \"provenance\"]"
                )))
            }
        }
    }
    Ok(Params {
        report: params,
        source,
        provenance,
    })
}

/// The report and the records of the scored file `bytes`.
fn read(bytes: &[u8], params: &Params) -> Result<(ReportData, Records), String> {
    let source = params.source.as_str();
    if bytes.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{source}: {} bytes is more than the {MAX_FILE_BYTES} this page can hold; report it with `main-score report`",
            bytes.len()
        ));
    }
    let mut builder = ReportBuilder::new(&params.report, source).map_err(|e| e.to_string())?;
    if let Some(p) = &params.provenance {
        builder.set_provenance(p.clone());
    }
    let mut records = Records::new();
    for (line_no, range) in lines(bytes) {
        let line = &bytes[range.clone()];
        // The engine's checks and statistics (its error names the source
        // and the line); the table's columns come from the record it parsed.
        builder
            .add_line_seen(line, line_no, |record| {
                records.add(record, line_no, range.clone())
            })
            .map_err(|e| e.to_string())?;
    }
    Ok((builder.finish(), records.finish()))
}

#[wasm_bindgen(typescript_custom_section)]
const TS_DATASET: &'static str = r#"
/** The records of a scored file, one entry per record in each array, in file order. */
export interface DatasetRecords {
  /** 1-based line in the file. */
  fileLine: number[];
  /** The record's own "line" (its input line), as the report's dots name it. */
  line: number[];
  /** The line's bytes in the file: [start, end), its "\n" included. */
  start: number[];
  end: number[];
  /** The pair's texts (a conversation: its weakest turn's). */
  instruction: string[];
  response: string[];
  truncated: boolean[];
  /** Each score field some record has, snake_case; null where a record has none. */
  fields: { name: string; values: (number | null)[] }[];
}
"#;

/// Reads a file written by `main-score score` (its bytes) and returns
/// `{ report, records }`: `report` the engine's `ReportData` (as `main-score
/// report --json` writes it, for `render.js`), `records` the table's columns.
/// `paramsJson`: `'{}'` or some of `source`, `dots`, `bins`, `percentiles`,
/// `min`. The first bad line stops it, and the error names it.
#[wasm_bindgen(js_name = reportData, unchecked_return_type = "{ report: any; records: DatasetRecords }")]
pub fn report_data(bytes: &[u8], params_json: &str) -> Result<JsValue, JsError> {
    let params = params_of(params_json).map_err(JsError::from)?;
    let (report, records) =
        read(bytes, &params).map_err(|e| JsError::from(WasmError::Record(e)))?;
    // Through serde_json: the report reaches render.js exactly as the HTML
    // report embeds it (NaN as null).
    let report = serde_json::to_value(&report)
        .map_err(|e| JsError::new(&format!("cannot convert the report to JSON: {e}")))?;
    #[derive(Serialize)]
    struct Out {
        report: Value,
        records: Records,
    }
    crate::to_js(&Out { report, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{"instruction":"a","input":"","output":"b","alignment":{"alignment":-0.5,"fwd_pmi":1.0,"rev_pmi":-0.5,"line":7}}"#;
    const B: &str = r#"{"prompt":"c","response":"d","alignment":{"alignment":null,"fwd_pmi":2.0,"rev_pmi":0.5}}"#;

    fn params(source: &str) -> Params {
        params_of(&format!("{{\"source\":\"{source}\"}}")).unwrap()
    }

    #[test]
    fn byte_ranges_lines_and_fields() {
        let file = format!("\u{feff}{A}\r\n\n  \n{B}");
        let bytes = file.as_bytes();
        let (report, r) = read(bytes, &params("f.jsonl")).unwrap();
        assert_eq!(report.records, 2);
        assert_eq!(r.file_line, [1, 4]);
        assert_eq!(r.line, [7, 4], "the record's own line, else its line here");
        assert_eq!(
            &bytes[r.start[0]..r.end[0]],
            format!("\u{feff}{A}\r\n").as_bytes()
        );
        assert_eq!(
            &bytes[r.start[1]..r.end[1]],
            B.as_bytes(),
            "the last line has no newline"
        );
        assert_eq!(
            (r.instruction[1].as_str(), r.response[1].as_str()),
            ("c", "d")
        );
        let names: Vec<_> = r.fields.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            ["alignment", "fwd_pmi", "rev_pmi"],
            "fields no record has are left out"
        );
        assert_eq!(r.fields[0].values, [Some(-0.5), None]);
    }

    #[test]
    fn a_conversation_shows_its_weakest_turn() {
        let line = r#"{"messages":[{"role":"user","content":"u1"},{"role":"assistant","content":"a1"},{"role":"user","content":"u2"},{"role":"assistant","content":"a2"}],"alignment":{"alignment":-1.5,"turns":[{"turn":1,"alignment":0.5},{"turn":2,"alignment":-1.5}]}}"#;
        let (_, r) = read(line.as_bytes(), &params("c")).unwrap();
        assert_eq!(
            (r.instruction[0].as_str(), r.response[0].as_str()),
            ("u2", "a2")
        );
    }

    #[test]
    fn errors_name_the_source_and_the_line() {
        for (bad, what) in [
            (r#"{"instruction":"a","output":"b"}"#, "alignment"),
            (&A[..40], "cut short"),
            ("{oops}", "invalid JSON"),
        ] {
            let e = read(
                format!("{A}\n{B}\n{bad}\n").as_bytes(),
                &params("bad.jsonl"),
            )
            .unwrap_err();
            assert!(
                e.contains("bad.jsonl") && e.contains("line 3") && e.contains(what),
                "{e}"
            );
        }
    }

    #[test]
    fn params_are_checked() {
        let p = params_of(r#"{"source":"x.jsonl","dots":10,"min":{"alignment":0.5},"provenance":{"filter":null}}"#).unwrap();
        assert_eq!((p.report.dots, p.source.as_str()), (10, "x.jsonl"));
        assert!(p.provenance.is_some());
        assert_eq!(
            p.report.rules,
            [Rule::Min {
                field: "alignment".into(),
                value: 0.5
            }]
        );
        for (bad, what) in [
            ("[]", "JSON object"),
            (r#"{"dot":1}"#, "unknown key 'dot'"),
            (r#"{"bins":0}"#, "bins"),
            (r#"{"percentiles":[101]}"#, "percentiles"),
            (r#"{"provenance":"p.json"}"#, "provenance"),
        ] {
            let e = params_of(bad).unwrap_err().to_string();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }
}
