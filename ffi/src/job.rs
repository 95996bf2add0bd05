//! The scoring job from C: `main_score_jsonl` runs `main_engine::job`, the
//! code `main-score score` and Python's `score_jsonl` run, and writes the
//! same bytes. This file translates the parameters, the events and the
//! report; the job is the engine's.

use std::ffi::{c_char, c_void, CString};
use std::ops::ControlFlow;
use std::path::PathBuf;

use main_engine::job::{self, JobEvent, JobParams, JobReport, Shard};
use main_engine::pairs::Format;
use main_engine::rank::RankBy;
use main_engine::{Device, Error};

use crate::args::{
    combine_value, enum_arg, null, precision_arg, precision_value, str_arg, COMBINES, DEVICES,
};
use crate::error::{guard, main_status};

/// What a `main_job_event` reports (a value for `main_job_event.kind`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum main_job_event_kind {
    /// The output held a partial last line left by an interrupted run;
    /// `bytes` of it were cut off. `text`: the output's path.
    MAIN_JOB_DROPPED_PARTIAL_LINE = 0,
    /// The output already holds `records` records of this job; the run goes
    /// on after them. `text`: the output's path.
    MAIN_JOB_RESUMING = 1,
    /// The models are loaded and scoring begins: `total` records to score
    /// (-1 when unknown: stdin).
    MAIN_JOB_STARTED = 2,
    /// A batch was written: `done` of `total` records scored by this run.
    MAIN_JOB_SCORED = 3,
    /// An invalid record was skipped (`skip_invalid`): `line` is its input
    /// line and `text` the message naming file, line and reason.
    MAIN_JOB_SKIPPED = 4,
}

/// One event of a running job, passed to its progress callback. Valid only
/// during the callback (copy `text` to keep it).
#[repr(C)]
#[derive(Debug)]
pub struct main_job_event {
    /// A `main_job_event_kind` value.
    pub kind: u32,
    /// MAIN_JOB_SCORED: records scored by this run so far.
    pub done: usize,
    /// MAIN_JOB_STARTED and MAIN_JOB_SCORED: records this run scores, or
    /// -1 when unknown (stdin).
    pub total: i64,
    /// MAIN_JOB_RESUMING: records already in the output.
    pub records: usize,
    /// MAIN_JOB_DROPPED_PARTIAL_LINE: bytes cut off.
    pub bytes: u64,
    /// MAIN_JOB_SKIPPED: the record's 1-based input line.
    pub line: usize,
    /// A NUL-terminated UTF-8 string (see each kind), or "". Owned by the library.
    pub text: *const c_char,
}

/// A job's progress callback: called with each event and `user_data`, on
/// the thread that called `main_score_jsonl`. Return true to go on, false
/// to stop: the job then ends after the batch it is writing, returns
/// `MAIN_OK` with `report.stopped` set, and the same call resumes it.
pub type main_job_progress =
    Option<unsafe extern "C" fn(event: *const main_job_event, user_data: *mut c_void) -> bool>;

/// Settings of a scoring job (`main-score score`'s options). Start from
/// `main_job_default_params()`, set `input`, `output` and `model`, and
/// change what you need. Strings are NUL-terminated UTF-8 paths or names,
/// read during the call and not retained; NULL where a field says so.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct main_job_params {
    /// JSONL records (Alpaca, prompt/response, `messages` or
    /// `conversations`, detected per record); "-" is stdin. Required.
    pub input: *const c_char,
    /// Where the scored records go; "-" is stdout (not resumable). A file
    /// holding records of the same job is resumed. Required.
    pub output: *const c_char,
    /// The forward model: a GGUF file or a Hugging Face folder. Required.
    pub model: *const c_char,
    /// A trained reverse model, or NULL (the forward model serves both).
    pub reverse_model: *const c_char,
    /// Worker threads; 0 = one per core.
    pub n_threads: u32,
    /// Longest view in tokens (default 1024).
    pub max_tokens: u32,
    /// A `main_precision` value (default: the engine's for the CPU; a GPU
    /// needs `MAIN_PRECISION_BF16` or `MAIN_PRECISION_EXACT`).
    pub precision: u32,
    /// A `main_device` value (default `MAIN_DEVICE_CPU`).
    pub device: u32,
    /// The GPU's number with `MAIN_DEVICE_CUDA` (default 0).
    pub gpu: u32,
    /// A `main_combine` value (default `MAIN_COMBINE_MIN`).
    pub combine: u32,
    /// Other responses of the same batch per pair for `contrastive` (default 0).
    pub negatives: u32,
    /// Records per fused scoring call and per write (default 16; above `negatives`).
    pub batch: u32,
    /// Per-token detail of both directions in each record (default false).
    pub tokens: bool,
    /// Keep the best fraction in (0, 1] of the records by `rank_by`; 0 = off
    /// (default). The scored records are staged in OUTPUT.scored.jsonl.
    pub keep_top: f64,
    /// The score `keep_top` ranks by (a leading '-' keeps the lowest), or
    /// NULL for the default.
    pub rank_by: *const c_char,
    /// With `use_min_alignment`: keep records whose alignment is at least this.
    pub min_alignment: f64,
    /// Whether `min_alignment` applies (default false).
    pub use_min_alignment: bool,
    /// Score only the records on 0-based lines L with L % shard_count ==
    /// shard_index (default 0 of 1: all).
    pub shard_index: u32,
    pub shard_count: u32,
    /// Skip invalid records (each reported as `MAIN_JOB_SKIPPED`) instead
    /// of stopping at the first (default false).
    pub skip_invalid: bool,
    /// Named fields instead of detecting the format: `instruction_field`
    /// and `response_field` together (and `input_field` with them), or all NULL.
    pub instruction_field: *const c_char,
    pub response_field: *const c_char,
    pub input_field: *const c_char,
}

/// What a finished or stopped job did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct main_job_report {
    /// Records in the scored file: from before and scored now.
    pub records: usize,
    /// Records scored by this call.
    pub scored_now: usize,
    /// Records that were in the output before (a resumed job).
    pub resumed: usize,
    /// Invalid records skipped.
    pub invalid: usize,
    /// With a filter: records kept in the output; -1 without one (or when stopped).
    pub kept: i64,
    /// The progress callback stopped the job; call again to resume.
    pub stopped: bool,
}

/// The default job settings, `main-score score`'s: `input`, `output` and
/// `model` NULL (set them), no reverse model, all cores, max_tokens
/// 1024, the engine's precision for the CPU, combine MIN, no negatives,
/// batch 16, no filters, the whole input, stop at an invalid record,
/// detected format. Thread-safe.
#[no_mangle]
pub extern "C" fn main_job_default_params() -> main_job_params {
    let d = JobParams::default();
    main_job_params {
        input: std::ptr::null(),
        output: std::ptr::null(),
        model: std::ptr::null(),
        reverse_model: std::ptr::null(),
        n_threads: d.n_threads as u32,
        max_tokens: d.max_tokens as u32,
        precision: precision_value(Device::Cpu.default_precision()),
        device: crate::main_device::MAIN_DEVICE_CPU as u32,
        gpu: 0,
        combine: combine_value(d.combine),
        negatives: d.negatives as u32,
        batch: d.batch as u32,
        tokens: d.tokens,
        keep_top: 0.0,
        rank_by: std::ptr::null(),
        min_alignment: 0.0,
        use_min_alignment: false,
        shard_index: d.shard.index as u32,
        shard_count: d.shard.count as u32,
        skip_invalid: d.skip_invalid,
        instruction_field: std::ptr::null(),
        response_field: std::ptr::null(),
        input_field: std::ptr::null(),
    }
}

/// # Safety
/// Each string field of `p` is NULL or a NUL-terminated string.
unsafe fn job_params(p: &main_job_params) -> Result<JobParams, Error> {
    // SAFETY (for every str_arg below): the caller promises NULL or a
    // NUL-terminated string in each field.
    let path = |ptr, name| unsafe { str_arg(ptr, name) }.map(PathBuf::from);
    let optional = |ptr: *const c_char, name| {
        (!ptr.is_null())
            .then(|| unsafe { str_arg(ptr, name) }.map(str::to_string))
            .transpose()
    };
    let format = match (
        optional(p.instruction_field, "params->instruction_field")?,
        optional(p.response_field, "params->response_field")?,
        optional(p.input_field, "params->input_field")?,
    ) {
        (Some(instruction), Some(response), input) => Format::Fields {
            instruction,
            response,
            input,
        },
        (None, None, None) => Format::Auto,
        _ => {
            return Err(Error::invalid_argument(
                "params->instruction_field",
                "instruction_field and response_field go together (input_field with them), or all are NULL",
            ))
        }
    };
    let keep_top = match p.keep_top {
        0.0 => None,
        f if f > 0.0 && f <= 1.0 => Some(f),
        f => {
            return Err(Error::invalid_argument(
                "params->keep_top",
                format!("{f} is not 0 (off) or a fraction in (0, 1]"),
            ))
        }
    };
    let rank_by = match optional(p.rank_by, "params->rank_by")? {
        Some(name) => name
            .parse::<RankBy>()
            .map_err(|e| Error::invalid_argument("params->rank_by", e))?,
        None => RankBy::default(),
    };
    if p.shard_index >= p.shard_count {
        return Err(Error::invalid_argument(
            "params->shard_index",
            format!(
                "{} must be below shard_count ({})",
                p.shard_index, p.shard_count
            ),
        ));
    }
    let device = match enum_arg(p.device, "params->device", &DEVICES)? {
        true => Device::Cuda(p.gpu as usize),
        false => Device::Cpu,
    };
    Ok(JobParams {
        input: path(p.input, "params->input")?,
        output: path(p.output, "params->output")?,
        model: path(p.model, "params->model")?,
        reverse_model: optional(p.reverse_model, "params->reverse_model")?.map(PathBuf::from),
        n_threads: p.n_threads as usize,
        max_tokens: p.max_tokens as usize,
        precision: Some(precision_arg(p.precision, "params->precision")?),
        device,
        combine: enum_arg(p.combine, "params->combine", &COMBINES)?,
        negatives: p.negatives as usize,
        tokens: p.tokens,
        batch: p.batch as usize,
        keep_top,
        rank_by,
        min_alignment: p.use_min_alignment.then_some(p.min_alignment),
        shard: Shard::new(p.shard_index as usize, p.shard_count as usize)?,
        skip_invalid: p.skip_invalid,
        format,
    })
}

fn c_report(r: &JobReport) -> main_job_report {
    main_job_report {
        records: r.records(),
        scored_now: r.scored_now,
        resumed: r.resumed,
        invalid: r.invalid,
        kept: r.kept.map_or(-1, |k| k as i64),
        stopped: r.stopped,
    }
}

/// The C event of `event`; `text` keeps its string alive.
fn c_event(event: &JobEvent, text: &mut CString) -> main_job_event {
    let mut e = main_job_event {
        kind: 0,
        done: 0,
        total: -1,
        records: 0,
        bytes: 0,
        line: 0,
        text: std::ptr::null(),
    };
    let mut say = |s: String| *text = CString::new(s.replace('\0', "\\0")).unwrap_or_default();
    let total = |t: &Option<usize>| t.map_or(-1, |t| t as i64);
    match event {
        JobEvent::DroppedPartialLine { output, bytes } => {
            e.kind = main_job_event_kind::MAIN_JOB_DROPPED_PARTIAL_LINE as u32;
            e.bytes = *bytes;
            say(output.display().to_string());
        }
        JobEvent::Resuming { output, records } => {
            e.kind = main_job_event_kind::MAIN_JOB_RESUMING as u32;
            e.records = *records;
            say(output.display().to_string());
        }
        JobEvent::Started { total: t } => {
            e.kind = main_job_event_kind::MAIN_JOB_STARTED as u32;
            e.total = total(t);
            say(String::new());
        }
        JobEvent::Scored { done, total: t } => {
            e.kind = main_job_event_kind::MAIN_JOB_SCORED as u32;
            e.done = *done;
            e.total = total(t);
            say(String::new());
        }
        JobEvent::Skipped { error } => {
            e.kind = main_job_event_kind::MAIN_JOB_SKIPPED as u32;
            if let Error::Record { line, .. } = error {
                e.line = *line;
            }
            say(error.to_string());
        }
    }
    e.text = text.as_ptr();
    e
}

/// Runs a scoring job: reads `params->input`, writes each record to
/// `params->output` unchanged plus an "alignment" object, exactly the bytes
/// `main-score score` and Python's `score_jsonl` write with the same
/// settings. The output is its own checkpoint: after an interruption (a
/// kill, or `progress` returning false) the same call resumes it;
/// OUTPUT.provenance.json records what made it, and a resume with another
/// input, model or score-changing setting is refused.
///
/// `params`: required; read, not retained. `progress`: NULL, or called on
/// this thread with each event and `user_data`. `out_report`: NULL, or
/// written with what the job did (on success only). Thread-safe: jobs on
/// other threads may run at the same time (with different outputs).
///
/// Returns `MAIN_OK` (also when stopped by `progress`: see
/// `out_report->stopped`); `MAIN_ERR_INVALID_ARGUMENT` (a NULL or non-UTF-8
/// required string, a value out of range, an invalid record, the message
/// naming the file and line, or an output holding another job's records);
/// `MAIN_ERR_IO` (a file cannot be read or written); the statuses of
/// `main_model_load`; `MAIN_ERR_DEVICE`; `MAIN_ERR_INTERNAL`. The records
/// scored before an error stay in the output, and the same call resumes
/// after them.
///
/// # Safety
/// `params` is NULL or points to a live `main_job_params` whose string
/// fields are NULL or NUL-terminated strings; `out_report` is NULL or
/// writable; `progress`, when not NULL, is safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn main_score_jsonl(
    params: *const main_job_params,
    progress: main_job_progress,
    user_data: *mut c_void,
    out_report: *mut main_job_report,
) -> main_status {
    guard(|| {
        // SAFETY: the caller promises NULL or a live params struct.
        let p = unsafe { params.as_ref() }.ok_or_else(|| null("params"))?;
        // SAFETY: the caller promises NULL or NUL-terminated strings in its fields.
        let params = unsafe { job_params(p) }?;
        let mut text = CString::default();
        let report = job::run(&params, &mut |event| {
            let Some(callback) = progress else {
                return ControlFlow::Continue(());
            };
            let e = c_event(event, &mut text);
            // SAFETY: the caller promises a callable callback for user_data;
            // `e` and its text live until it returns.
            match unsafe { callback(&e, user_data) } {
                true => ControlFlow::Continue(()),
                false => ControlFlow::Break(()),
            }
        })?;
        // SAFETY: the caller promises NULL or a writable report.
        if let Some(out) = unsafe { out_report.as_mut() } {
            *out = c_report(&report);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_params_are_the_jobs() {
        let mut p = main_job_default_params();
        p.input = c"in.jsonl".as_ptr();
        p.output = c"out.jsonl".as_ptr();
        p.model = c"m.gguf".as_ptr();
        // SAFETY: every string field is NULL or a static C string.
        let got = unsafe { job_params(&p) }.unwrap();
        let want = JobParams {
            input: "in.jsonl".into(),
            output: "out.jsonl".into(),
            model: "m.gguf".into(),
            precision: Some(Device::Cpu.default_precision()),
            ..JobParams::default()
        };
        assert_eq!(got, want);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut p = main_job_default_params();
        p.input = c"in.jsonl".as_ptr();
        p.output = c"out.jsonl".as_ptr();
        // SAFETY: as above.
        let e = unsafe { job_params(&p) }.unwrap_err().to_string();
        assert_eq!(e, "invalid argument 'params->model': is NULL");
        p.model = c"m.gguf".as_ptr();
        p.keep_top = 1.5;
        // SAFETY: as above.
        let e = unsafe { job_params(&p) }.unwrap_err().to_string();
        assert!(e.contains("params->keep_top"), "{e}");
        p.keep_top = 0.0;
        p.response_field = c"out".as_ptr();
        // SAFETY: as above.
        let e = unsafe { job_params(&p) }.unwrap_err().to_string();
        assert!(e.contains("params->instruction_field"), "{e}");
        p.response_field = std::ptr::null();
        p.rank_by = c"nope".as_ptr();
        // SAFETY: as above.
        let e = unsafe { job_params(&p) }.unwrap_err().to_string();
        assert!(e.contains("params->rank_by"), "{e}");
    }
}
