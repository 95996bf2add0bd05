//! What a finished (or stopped) job did: the counts and the summary that
//! every skin shows.

use std::path::PathBuf;

use crate::summary::{Summary, SummaryRow};

/// The outcome of [`super::run()`].
#[derive(Clone, Debug)]
pub struct JobReport {
    /// Where every scored record is: the output, or its `.scored.jsonl`
    /// stage when filtering (`-`: stdout).
    pub scored: PathBuf,
    /// Records scored by this run.
    pub scored_now: usize,
    /// Records that were in the output before (a resumed run).
    pub resumed: usize,
    /// Invalid records skipped (`skip_invalid`).
    pub invalid: usize,
    /// With filters: the records kept in the output (`None` without
    /// filters, or when the job was stopped before they ran).
    pub kept: Option<usize>,
    /// The progress callback stopped the job: the output holds the records
    /// scored so far and the same job resumes it.
    pub stopped: bool,
    /// The scores of every record in `scored`, old and new.
    pub summary: Summary,
}

impl JobReport {
    /// Records in `scored`: those from before and those scored now.
    pub fn records(&self) -> usize {
        self.summary.count()
    }

    /// The summary table: quantiles of the main scores and their rank
    /// correlation with response length.
    pub fn rows(&self) -> Vec<SummaryRow> {
        self.summary.rows()
    }
}
