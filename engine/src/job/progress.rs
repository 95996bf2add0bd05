//! What a running job tells its caller, as it happens: the skins draw a
//! progress bar, print notes and may stop the job (returning
//! `ControlFlow::Break`), which then ends after the batch it is writing, so
//! the output stays a clean checkpoint that the same job resumes.

use std::path::Path;

use crate::error::Error;

/// One event of a running job, passed to its progress callback.
#[derive(Debug)]
pub enum JobEvent<'a> {
    /// The output held a trailing partial line, left by an interrupted run,
    /// and `bytes` of it were cut off.
    DroppedPartialLine { output: &'a Path, bytes: u64 },
    /// The output already holds `records` records of this job: the run
    /// continues after them.
    Resuming { output: &'a Path, records: usize },
    /// The models are loaded and scoring begins; `total`: the records left
    /// to score (`None` for stdin, which cannot be read twice).
    Started { total: Option<usize> },
    /// A batch was written: `done` records scored by this run so far.
    Scored { done: usize, total: Option<usize> },
    /// An invalid record was skipped (`skip_invalid`); the error names its
    /// file and line.
    Skipped { error: &'a Error },
}

/// The progress callback of a job that needs none.
pub fn no_progress(_: &JobEvent) -> std::ops::ControlFlow<()> {
    std::ops::ControlFlow::Continue(())
}
