//! The scoring job (DESIGN.md §1, §5): what `main-score score`, Python's
//! `score_jsonl` and libmain's `main_score_jsonl` share. Behind the
//! file-system feature.
//!
//! So far: how a scored record is written ([`splice`]).

pub mod splice;

pub use splice::{splice_alignment, RecordScore};
