//! The report's data: the JSON contract with the page's renderer, the
//! browser annotation tool and the Python package (`--json` writes it).

use serde::Serialize;

use super::duplicates::DuplicateGroups;
use super::examples::Example;
use super::filter::Rule;
use super::histogram::Histogram;

/// Everything a report shows, serialized as the JSON the page embeds
/// (`<script type="application/json" id="main-report-data">`), `--json`
/// writes and Python's `report_summary` returns. NaN is written as `null`.
#[derive(Clone, Debug, Serialize)]
pub struct ReportData {
    pub report_version: u32,
    /// The file as the user named it (or what a skin calls its source).
    pub source: String,
    /// Scored records read (blank lines are not records).
    pub records: u64,
    /// Of them, pairs and conversations, and the conversations' turns.
    pub pairs: u64,
    pub conversations: u64,
    pub turns: u64,
    /// Records flagged `truncated`.
    pub truncated: u64,
    /// Whether quantiles, correlations and a `--keep-top` cut used every
    /// record (at most `exact_cap` of them) or a uniform sample of `exact_cap`.
    pub exact: bool,
    pub exact_cap: u64,
    /// [`REPORT_FIELDS`].
    pub fields: Vec<String>,
    pub filter: Option<FilterData>,
    /// One per [`REPORT_FIELDS`] entry.
    pub histograms: Vec<Histogram>,
    /// One per [`REPORT_FIELDS`] entry.
    pub stats: Vec<FieldStats>,
    /// The run summary of `main-score score`: one row per summary field.
    pub summary: Vec<SummaryRowData>,
    pub quadrants: Quadrants,
    pub sample: Sample,
    pub examples: ExamplesData,
    pub duplicates: DuplicatesData,
    pub conversations_detail: ConversationsData,
    /// The scored file's provenance file as it is (model, options, input
    /// hash, filter), if one sits beside it.
    pub provenance: Option<serde_json::Value>,
    /// What a reader must know: samples, caps, caveats.
    pub notes: Vec<String>,
}

/// The filter marked (JSON: `{"rules", "source", "thresholds", "kept",
/// "of", "share", "exact"}`).
#[derive(Clone, Debug, Serialize)]
pub struct FilterData {
    pub rules: Vec<Rule>,
    /// "options" (the report's arguments) or "provenance".
    pub source: String,
    /// One line per rule to draw on its field's histogram.
    pub thresholds: Vec<Threshold>,
    /// Records the filter keeps, of `of`, and the share.
    pub kept: u64,
    pub of: u64,
    pub share: f64,
    /// `false`: estimated on the exact cap's sample.
    pub exact: bool,
}

/// A threshold line (JSON: `{"field", "value", "keep", "share"}`, `keep`
/// "above" or "below": the side kept, the value itself included; `share`:
/// the records this rule alone keeps, of all).
#[derive(Clone, Debug, Serialize)]
pub struct Threshold {
    pub field: String,
    pub value: f64,
    pub keep: String,
    pub share: f64,
}

/// A field's numbers (JSON: `{"field", "count", "missing", "min", "max",
/// "mean", "percentiles": [[p, value]...], "rho_length", "length_warning"}`);
/// `count`, `missing`, `min`, `max`, `mean` over every record.
#[derive(Clone, Debug, Serialize)]
pub struct FieldStats {
    pub field: String,
    pub count: u64,
    pub missing: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// At `ReportParams::percentiles`, plus 10 and 90 (numpy's linear rule).
    pub percentiles: Vec<(f64, Option<f64>)>,
    /// Spearman's rank correlation with `response_tokens`.
    pub rho_length: Option<f64>,
    /// The summary's warning when the score mostly measures length.
    pub length_warning: Option<String>,
}

/// A row of the run summary (JSON: `{"field", "p10", "p50", "p90",
/// "rho_length", "warning"}`).
#[derive(Clone, Debug, Serialize)]
pub struct SummaryRowData {
    pub field: String,
    pub p10: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub rho_length: Option<f64>,
    pub warning: Option<String>,
}

/// Records by the signs of `fwd_pmi` and `rev_pmi`, over every record.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Quadrants {
    /// fwd > 0 and rev > 0: aligned.
    pub aligned: u64,
    /// fwd <= 0 < rev: the response ignores the instruction.
    pub ignores_instruction: u64,
    /// rev <= 0 < fwd: the instruction is not recoverable from the response.
    pub not_recoverable: u64,
    /// both <= 0: both directions weak.
    pub both_weak: u64,
    /// Either number missing.
    pub missing: u64,
}

/// The dots (JSON: `{"size", "of", "columns", "rows"}`): each row is
/// `[line, kept, ...one value per REPORT_FIELDS entry]`, `kept` true,
/// false or null (no filter).
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub size: u64,
    pub of: u64,
    pub columns: Vec<String>,
    pub rows: Vec<serde_json::Value>,
}

/// JSON: `{"field", "items": [Example...]}`.
#[derive(Clone, Debug, Serialize)]
pub struct ExamplesData {
    pub field: String,
    pub items: Vec<Example>,
}

/// JSON: `{"exact": {"instruction", "response", "pair"}, "exact_complete",
/// "near": {"sample", "of", "jaccard", "instruction", "response"}}`.
#[derive(Clone, Debug, Serialize)]
pub struct DuplicatesData {
    pub exact: ExactDuplicatesData,
    /// `false`: more than `max_distinct` distinct texts, and duplicates of
    /// the later ones were not counted.
    pub exact_complete: bool,
    pub near: NearDuplicatesData,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExactDuplicatesData {
    pub instruction: DuplicateGroups,
    pub response: DuplicateGroups,
    /// Instruction and response both the same.
    pub pair: DuplicateGroups,
}

#[derive(Clone, Debug, Serialize)]
pub struct NearDuplicatesData {
    /// Records searched, of all.
    pub sample: u64,
    pub of: u64,
    pub jaccard: f64,
    pub instruction: DuplicateGroups,
    pub response: DuplicateGroups,
}

/// JSON: `{"count", "turns", "weakest": [WeakTurn...]}`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConversationsData {
    pub count: u64,
    pub turns: u64,
    /// The weakest turns of all conversations, lowest alignment first.
    pub weakest: Vec<WeakTurn>,
}

/// A conversation turn (JSON: `{"line", "turn", "n_turns", "alignment",
/// "fwd_pmi", "rev_pmi", "response_tokens", "turn_alignments", "user",
/// "assistant"}`).
#[derive(Clone, Debug, Serialize)]
pub struct WeakTurn {
    pub line: u64,
    pub turn: usize,
    pub n_turns: usize,
    pub alignment: f64,
    pub fwd_pmi: f64,
    pub rev_pmi: f64,
    pub response_tokens: f64,
    /// Every turn's alignment, in order.
    pub turn_alignments: Vec<f64>,
    pub user: String,
    pub assistant: String,
}

impl ReportData {
    /// The JSON of `main-score report --json` and Python's `report_summary`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("report data serializes")
    }
}
