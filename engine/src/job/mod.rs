//! The scoring job (DESIGN.md §1, §5): what `main-score score`, Python's
//! `score_jsonl` and libmain's `main_score_jsonl` share, so the three write
//! the same bytes. Behind the file-system feature.
//!
//! JSONL records in, each record out unchanged plus an `"alignment"`
//! object: [`JobParams`] says what to do, [`run()`] does it and reports each
//! [`JobEvent`] to a progress callback (which may stop it), and returns a
//! [`JobReport`]. The steps, one file each: [`read`] the input records and
//! [`shard`] them, [`batch`] them (with negatives), score and [`splice`]
//! the scores into each record, write through a resumable `sink` whose
//! [`provenance`] guards against mixing runs, read `scored` records back,
//! [`filter`] them, and [`report`] the summary.

pub mod batch;
pub mod filter;
pub mod generate;
pub mod params;
pub mod progress;
pub mod provenance;
pub mod read;
pub mod report;
pub mod run;
pub(crate) mod scored;
pub mod shard;
pub(crate) mod sink;
pub mod splice;

pub use batch::{fill_for_negatives, score_pairs_in_batches};
pub use params::{scored_path, JobParams};
pub use progress::{no_progress, JobEvent};
pub use provenance::provenance_path;
pub use report::JobReport;
pub use run::{run, Progress};
pub use shard::Shard;
pub use splice::{splice_alignment, RecordScore};
