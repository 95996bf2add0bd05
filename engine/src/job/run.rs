//! Running a job: read the input, skip what the output already holds,
//! batch, score, write, then filter and summarise.
//!
//! Resume: the output itself is the checkpoint (see `job/sink.rs`). On
//! start its complete lines are counted, and that many eligible input
//! records (in this shard, and valid) are skipped, each checked against
//! the input line its record names (see [`super::provenance`]).

use std::io::BufRead;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::scorer::{Scorer, ScorerParams};
use crate::summary::Summary;

use super::batch::{Batcher, Scored};
use super::filter::filter;
use super::params::{is_stdio, JobParams};
use super::progress::JobEvent;
use super::provenance::Filter;
use super::provenance::{record_mismatch, start_afresh, Provenance};
use super::read::{open_input, parse_record, record_text, Entry};
use super::report::JobReport;
use super::shard::count_in_shard;
use super::sink::{Opened, Sink};

/// The progress callback: a `Break` stops the job after the batch it is
/// writing (see [`super::progress`]).
pub type Progress<'a> = dyn FnMut(&JobEvent) -> ControlFlow<()> + 'a;

/// Runs the scoring job `params` describes; `progress` hears each event.
///
/// Errors name what was wrong: an argument, a file, or a record's file and
/// line ([`Error::Record`]). Records scored before a bad record are in the
/// output, and the same job resumes after them.
pub fn run(params: &JobParams, progress: &mut Progress) -> Result<JobReport> {
    params.check()?;
    let staged = params.staged();
    let input_name = params.input_name();

    // The output is checked before the model loads, so a wrong output fails at once.
    let mut summary = Summary::default();
    let Opened {
        sink,
        lines: done_lines,
        dropped,
    } = Sink::open(&staged, &mut summary)?;
    let resumed = done_lines.len();
    let mut job = Job {
        progress,
        sink,
        total: None,
        report: JobReport {
            scored: staged.clone(),
            scored_now: 0,
            resumed,
            invalid: 0,
            kept: None,
            stopped: false,
            summary,
        },
    };
    if dropped > 0 {
        job.emit(&JobEvent::DroppedPartialLine {
            output: &staged,
            bytes: dropped,
        });
    }

    let precision = params.device.resolve_precision(params.precision)?;
    if !is_stdio(&staged) {
        Provenance::of_run(params, precision)?.check_or_start(&staged, resumed)?;
    }
    if resumed > 0 {
        job.emit(&JobEvent::Resuming {
            output: &staged,
            records: resumed,
        });
    }
    if job.report.stopped {
        return Ok(job.report);
    }

    let forward = Arc::new(Model::load(&params.model)?);
    let reverse = params
        .reverse_model
        .as_deref()
        .map(Model::load)
        .transpose()?
        .map(Arc::new);
    let scorer_params = ScorerParams {
        n_threads: params.n_threads,
        max_tokens: params.max_tokens,
        combine: params.combine,
        negatives: params.negatives,
        tokens: params.tokens,
        precision,
        device: params.device,
        ..ScorerParams::default()
    };
    let scorer = Scorer::new(forward, reverse, scorer_params)?;
    // Stdin cannot be read twice, so its total is unknown.
    job.total = if is_stdio(&params.input) {
        None
    } else {
        Some(count_in_shard(&params.input, params.shard)?.saturating_sub(resumed))
    };
    if job.emit(&JobEvent::Started { total: job.total }) {
        return Ok(job.report);
    }

    let mut batcher = Batcher::new(scorer, params.batch, params.negatives);
    let mut reader = open_input(&params.input)?;
    let mut done_lines = done_lines.into_iter();
    let mut to_skip = resumed;
    let mut buf = Vec::new();
    for line_index in 0.. {
        buf.clear();
        if reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(&params.input, e))?
            == 0
        {
            break;
        }
        if !params.shard.holds(line_index) {
            continue;
        }
        let parsed = match record_text(&buf, line_index) {
            Ok(None) => continue,
            Ok(Some(text)) => {
                parse_record(text, line_index, &params.format).map(|sample| (text, sample))
            }
            Err(e) => Err(e),
        };
        match parsed {
            Ok((text, sample)) => {
                // Records already in the output still join their batch, so
                // batches (and the negatives drawn from them) match an
                // uninterrupted run.
                let line = if to_skip > 0 {
                    to_skip -= 1;
                    let done = done_lines.next().unwrap_or(0);
                    if done != line_index + 1 {
                        return Err(record_mismatch(
                            &staged,
                            resumed - to_skip,
                            done,
                            &input_name,
                            line_index + 1,
                        ));
                    }
                    None
                } else {
                    Some(text.to_string())
                };
                let entry = Entry {
                    line,
                    line_no: line_index + 1,
                    sample,
                };
                if let Some(scored) = batcher.push(entry)? {
                    if job.write(scored)? {
                        return Ok(job.report);
                    }
                }
            }
            Err(e) => {
                let error = Error::record(&input_name, e.line, e.reason);
                if !params.skip_invalid {
                    // What came before the bad record is written, so a
                    // fixed input resumes after it.
                    job.write(batcher.flush()?)?;
                    return Err(error);
                }
                job.report.invalid += 1;
                // A stop here leaves the batch unwritten: a partial batch
                // would draw other negatives than the resumed run will.
                if job.emit(&JobEvent::Skipped { error: &error }) {
                    return Ok(job.report);
                }
            }
        }
    }
    job.write(batcher.flush()?)?;
    // A stop asked for at the last batch comes when nothing is left to stop.
    job.report.stopped = false;
    if to_skip > 0 {
        return Err(Error::invalid_argument(
            "--output",
            format!(
                "{} holds {resumed} records but {input_name} has only {} eligible ones: not an output of this input, shard and format; {}",
                staged.display(),
                resumed - to_skip,
                start_afresh(&staged)
            ),
        ));
    }
    if params.filtering() {
        let rules = Filter::new(
            params.keep_top,
            &params.rank_by,
            params.min_alignment,
            &staged,
        );
        job.report.kept = Some(filter(&staged, &params.output, &params.rank_by, rules)?);
    }
    Ok(job.report)
}

/// A running job's output side: where batches go, whom to tell, what to report.
struct Job<'p, 'c> {
    progress: &'p mut Progress<'c>,
    sink: Sink,
    total: Option<usize>,
    report: JobReport,
}

impl Job<'_, '_> {
    /// Tells the caller `event`; true once the caller asked to stop.
    fn emit(&mut self, event: &JobEvent) -> bool {
        self.report.stopped |= (self.progress)(event).is_break();
        self.report.stopped
    }

    /// Writes a scored batch and tells the caller; true once the caller
    /// asked to stop.
    fn write(&mut self, scored: Scored) -> Result<bool> {
        if scored.records.is_empty() {
            return Ok(self.report.stopped);
        }
        self.sink.write_batch(&scored.bytes)?;
        for record in &scored.records {
            self.report.summary.add_score(record.overall());
        }
        self.report.scored_now += scored.records.len();
        let event = JobEvent::Scored {
            done: self.report.scored_now,
            total: self.total,
        };
        Ok(self.emit(&event))
    }
}
