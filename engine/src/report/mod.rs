//! `main-score report`: what a curator reads in a minute about a scored
//! data set (DESIGN.md §5), as data ([`ReportData`], the JSON contract with
//! the browser annotation tool and the Python package) and as one
//! self-contained HTML page ([`render_html`]).
//!
//! [`ReportParams`] says what to show (defaults from
//! [`ReportParams::default`]); a [`ReportBuilder`] takes the scored JSONL
//! one line at a time and [`ReportBuilder::finish`] gives the
//! [`ReportData`]; [`report_file`] does both for a file (and reads its
//! provenance). Memory is bounded whatever the record count:
//!
//! - counts are exact over every record: records, quadrants, histogram
//!   bars, duplicates (up to [`ReportParams::max_distinct`] distinct texts),
//!   the share a `--min` filter keeps;
//! - quantiles, Spearman's correlations, a `--keep-top` cut and the summary
//!   table use every record while there are at most
//!   [`ReportParams::exact_cap`], and a uniform sample of that many beyond
//!   (`exact: false`, and a note says so); the histograms' ranges come from
//!   those first records (see [`histogram`]);
//! - the dots of the scatters and the examples come from a uniform sample of
//!   [`ReportParams::dots`] records; near-duplicates are searched in a
//!   uniform sample of [`ReportParams::near_sample`] records.
//!
//! Nothing here touches the file system except [`report_file`] (feature
//! `std-fs`), so the module builds for wasm32 too.

mod builder;
mod data;
pub mod duplicates;
pub mod examples;
#[cfg(feature = "std-fs")]
mod file;
pub mod filter;
pub mod histogram;
pub mod html;
pub mod lines;
pub mod record;
pub mod reservoir;

pub use builder::ReportBuilder;
pub use data::*;
pub use duplicates::{DuplicateGroups, Group};
pub use examples::{Example, Shown};
#[cfg(feature = "std-fs")]
pub use file::{provenance_beside, report_file};
pub use filter::{rules_of_provenance, Rule};
pub use histogram::Histogram;
pub use html::render_html;
pub use record::N_FIELDS;

/// Bumped when [`ReportData`]'s shape changes meaning.
pub const REPORT_VERSION: u32 = 1;

/// The fields with a histogram, a row in `stats` and a column in `sample`:
/// the summary's scores, then `structural` and the two lengths.
pub const REPORT_FIELDS: &[&str] = &[
    "alignment",
    "fwd_pmi",
    "rev_pmi",
    "fwd_pmi_total",
    "rev_pmi_total",
    "semantic",
    "ifd",
    "structural",
    "response_tokens",
    "instruction_tokens",
];

/// What a report shows and how much memory it may use (the defaults:
/// [`ReportParams::default`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ReportParams {
    /// The filter to mark; empty: none (or, in [`report_file`], the one the
    /// scored file's provenance records).
    pub rules: Vec<Rule>,
    /// Percentiles (0..=100) whose pairs are shown: 5, 50, 95.
    pub percentiles: Vec<f64>,
    /// The score whose percentiles pick the examples; `None`: the first
    /// rule's field, else `alignment`.
    pub examples_by: Option<String>,
    /// Dots of the scatters (a uniform sample): 2,000.
    pub dots: usize,
    /// Records whose numbers are kept for exact quantiles and correlations;
    /// beyond, a uniform sample of this many: 200,000 (about 140 bytes each).
    pub exact_cap: usize,
    /// Records searched for near-duplicates (a uniform sample): 5,000.
    pub near_sample: usize,
    /// Characters of each text kept for the near-duplicate search: 1,000.
    pub near_chars: usize,
    /// Distinct texts tracked per kind for exact duplicates: 1,000,000
    /// (about 25 bytes each).
    pub max_distinct: usize,
    /// The longest line read, in bytes: 64 MiB; a longer one is an error.
    pub max_line_bytes: usize,
    /// Characters of each example text shown: 300.
    pub example_chars: usize,
    /// Tokens of an example's heat map: 256.
    pub example_tokens: usize,
    /// Weakest conversation turns listed: 10.
    pub weakest_turns: usize,
    /// Duplicate groups listed per kind: 5.
    pub groups_listed: usize,
    /// Bars per histogram: 40.
    pub bins: usize,
    /// The samples' seed: the same file gives the same report.
    pub seed: u64,
}

impl Default for ReportParams {
    fn default() -> ReportParams {
        ReportParams {
            rules: Vec::new(),
            percentiles: vec![5.0, 50.0, 95.0],
            examples_by: None,
            dots: 2_000,
            exact_cap: 200_000,
            near_sample: 5_000,
            near_chars: 1_000,
            max_distinct: 1_000_000,
            max_line_bytes: 64 << 20,
            example_chars: 300,
            example_tokens: 256,
            weakest_turns: 10,
            groups_listed: 5,
            bins: histogram::BINS,
            seed: 0x4d41_494e,
        }
    }
}

#[cfg(test)]
mod tests;
