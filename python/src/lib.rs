//! `main_align._native`: the Rust half of the Python package, a thin skin over
//! `main-engine`'s public API like `ffi/` and `wasm/` (DESIGN.md §1, §5). It
//! translates arguments, scores and errors and holds no scoring logic; the
//! Python half (`main_align/__init__.py`) builds Arrow tables, pickling and
//! argument defaults on top.
//!
//! Rules every entry point follows:
//! - engine errors become `MainError` subclasses with the engine's message,
//!   and a Rust panic becomes `MainError` too (it never unwinds into Python);
//! - the GIL is released while the engine loads or scores, so Python threads
//!   with a scorer each run in parallel;
//! - a value of the wrong type names the argument and the index.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use main_engine::job::{self, JobEvent, JobParams, JobReport, Shard};
use main_engine::matmul::Precision;
use main_engine::model::Model;
use main_engine::pairs::Format;
use main_engine::rank::RankBy;
use main_engine::report::{self, ReportParams, Rule};
use main_engine::score::{Combine, Pair, PairScore};
use main_engine::scorer::{Scorer, ScorerParams};
use main_engine::{Device, Error};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

create_exception!(
    _native,
    MainError,
    PyException,
    "Every error of main_align: the message is the engine's, naming what was wrong and where."
);
create_exception!(
    _native,
    ModelError,
    MainError,
    "A model could not be loaded: missing or unreadable file, malformed GGUF/safetensors, unsupported architecture, tokenizer or chat template."
);
create_exception!(
    _native,
    ArgumentError,
    MainError,
    "An argument is outside its domain or of the wrong type (threads, precision, device, combine, ...)."
);
create_exception!(
    _native,
    InputError,
    MainError,
    "An input pair is unusable: a value that is not a string, lengths that differ, text the tokenizer refuses."
);

create_exception!(
    _native,
    DeviceError,
    MainError,
    "The GPU failed: no driver or device, a kernel that failed, or out of memory."
);

/// The Python exception of an engine error, by what went wrong.
fn py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Io { .. }
        | Error::Format { .. }
        | Error::Metadata { .. }
        | Error::Tensor { .. }
        | Error::Tokenizer(_)
        | Error::Template(_) => ModelError::new_err(msg),
        Error::InvalidArgument { .. } | Error::Unsupported { .. } => ArgumentError::new_err(msg),
        Error::Input(_) | Error::Record { .. } => InputError::new_err(msg),
        Error::Gpu { .. } | Error::GpuOutOfMemory { .. } => DeviceError::new_err(msg),
    }
}

/// Runs engine code with the GIL released and any panic turned into `MainError`.
fn engine_call<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(result) => result.map_err(py_err),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(MainError::new_err(format!(
                "internal error in {what}: {reason} (please report it)"
            )))
        }
    }
}

/// Loads `role` ("model" or "reverse_model"); the message names the file.
fn load(py: Python<'_>, path: PathBuf, role: &str) -> PyResult<Arc<Model>> {
    let shown = path.display().to_string();
    engine_call(py, "model loading", move || {
        Model::load(&path).map(Arc::new)
    })
    .map_err(|e| {
        let msg = e.value(py).to_string();
        if !e.is_instance_of::<ModelError>(py) || msg.contains(&shown) {
            e
        } else {
            ModelError::new_err(format!("{role} {shown}: {msg}"))
        }
    })
}

/// A precision by name.
fn precision_arg(name: &str) -> PyResult<Precision> {
    Precision::parse(name).ok_or_else(|| {
        ArgumentError::new_err(format!(
            "invalid argument 'precision': {name:?} is not one of exact, fast, int8, bf16"
        ))
    })
}

/// The texts of one argument: each item a `str` (or `None` where `nullable`).
fn texts(values: &Bound<'_, PyAny>, name: &str, nullable: bool) -> PyResult<Vec<Option<String>>> {
    if values.is_instance_of::<PyString>() {
        return Err(ArgumentError::new_err(format!(
            "{name} must be a sequence of str, not a single str"
        )));
    }
    let iter = values.try_iter().map_err(|_| {
        ArgumentError::new_err(format!(
            "{name} must be a sequence of str, not {}",
            type_name(values)
        ))
    })?;
    let mut out = Vec::new();
    for (i, item) in iter.enumerate() {
        let item = item?;
        if nullable && item.is_none() {
            out.push(None);
            continue;
        }
        let s = item.cast::<PyString>().map_err(|_| {
            InputError::new_err(format!(
                "{name}[{i}] is {}, not str{}",
                type_name(&item),
                if nullable { " or None" } else { "" }
            ))
        })?;
        let text = s.to_str().map_err(|e| {
            InputError::new_err(format!("{name}[{i}] is not valid Unicode text: {e}"))
        })?;
        out.push(Some(text.to_string()));
    }
    Ok(out)
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A scorer of the engine, with the model(s) it loaded. Use through
/// `main_align.Scorer`, which adds defaults, pickling and Arrow output.
#[pyclass(module = "main_align._native", frozen)]
struct NativeScorer {
    /// The engine's scorer works from one thread at a time; the lock is
    /// taken with the GIL released, so a second Python thread waits for it
    /// without blocking the interpreter.
    scorer: Mutex<Scorer>,
    precision: Precision,
    device: Device,
    negatives: usize,
}

#[pymethods]
impl NativeScorer {
    /// `threads` 0 = one per core; `precision` None = the device's default.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (model, reverse_model, threads, precision, device, max_tokens, combine, negatives))]
    fn new(
        py: Python<'_>,
        model: PathBuf,
        reverse_model: Option<PathBuf>,
        threads: usize,
        precision: Option<&str>,
        device: &str,
        max_tokens: usize,
        combine: &str,
        negatives: usize,
    ) -> PyResult<Self> {
        let device: Device = device.parse().map_err(py_err)?;
        let asked = precision.map(precision_arg).transpose()?;
        // Arguments first: a wrong precision fails before a slow model load.
        let precision = device.resolve_precision(asked).map_err(py_err)?;
        let params = ScorerParams {
            n_threads: threads,
            max_tokens,
            combine: Combine::parse(combine).map_err(py_err)?,
            negatives,
            precision,
            device,
            ..ScorerParams::default()
        };
        let forward = load(py, model, "model")?;
        let reverse = reverse_model
            .map(|p| load(py, p, "reverse_model"))
            .transpose()?;
        let scorer = engine_call(py, "Scorer", move || Scorer::new(forward, reverse, params))?;
        Ok(NativeScorer {
            scorer: Mutex::new(scorer),
            precision,
            device,
            negatives,
        })
    }

    /// The precision the scorer runs ("exact", "fast", "int8" or "bf16").
    #[getter]
    fn precision(&self) -> &'static str {
        self.precision.name()
    }

    /// Where the scorer runs ("cpu" or "cuda:N").
    #[getter]
    fn device(&self) -> String {
        self.device.to_string()
    }

    /// Scores the pairs in calls of `batch_size` pairs, in order, with the
    /// job's batching (`main-score --batch batch_size`: with negatives, a
    /// short last batch borrows pairs from the batch before). Returns the §3 fields as
    /// columns: a dict of name -> list.
    #[pyo3(signature = (instructions, responses, inputs, batch_size))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        instructions: &Bound<'py, PyAny>,
        responses: &Bound<'py, PyAny>,
        inputs: Option<&Bound<'py, PyAny>>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let k = self.negatives;
        let xs = texts(instructions, "instructions", false)?;
        let ys = texts(responses, "responses", false)?;
        let inputs = inputs
            .map(|v| texts(v, "inputs", true))
            .transpose()?
            .unwrap_or_else(|| vec![None; xs.len()]);
        if xs.len() != ys.len() || xs.len() != inputs.len() {
            return Err(InputError::new_err(format!(
                "lengths differ: {} instructions, {} responses, {} inputs",
                xs.len(),
                ys.len(),
                inputs.len()
            )));
        }
        let pairs: Vec<Pair> = xs
            .iter()
            .zip(&ys)
            .zip(&inputs)
            .map(|((x, y), input)| {
                Pair::from_alpaca(
                    x.as_deref().unwrap_or_default(),
                    input.as_deref().unwrap_or_default(),
                    y.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        let scores = engine_call(py, "score", || {
            let Ok(mut scorer) = self.scorer.lock() else {
                return Err(Error::invalid_argument(
                    "scorer",
                    "unusable after an earlier internal error; make a new one",
                ));
            };
            job::score_pairs_in_batches(&mut scorer, &pairs, batch_size, k)
        })?;
        columns(py, &scores, k > 0)
    }
}

/// One float field of a `PairScore`.
type F64Field = fn(&PairScore) -> f64;

/// The §3 fields as columns, in `PairScore`'s order (the order main-score writes).
fn columns<'py>(
    py: Python<'py>,
    scores: &[PairScore],
    contrastive: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let f64s: [(&str, F64Field); 14] = [
        ("alignment", |s| s.alignment),
        ("fwd_pmi", |s| s.fwd_pmi),
        ("rev_pmi", |s| s.rev_pmi),
        ("fwd_cond", |s| s.fwd_cond),
        ("fwd_uncond", |s| s.fwd_uncond),
        ("rev_cond", |s| s.rev_cond),
        ("rev_uncond", |s| s.rev_uncond),
        ("ifd", |s| s.ifd),
        ("rifd", |s| s.rifd),
        ("semantic", |s| s.semantic),
        ("structural", |s| s.structural),
        ("intentional", |s| s.intentional),
        ("fwd_pmi_total", |s| s.fwd_pmi_total),
        ("rev_pmi_total", |s| s.rev_pmi_total),
    ];
    for (name, get) in f64s {
        d.set_item(name, PyList::new(py, scores.iter().map(get))?)?;
    }
    if contrastive {
        let values = scores.iter().map(|s| s.contrastive.unwrap_or(f64::NAN));
        d.set_item("contrastive", PyList::new(py, values)?)?;
    }
    let response_tokens = scores.iter().map(|s| s.response_tokens);
    d.set_item("response_tokens", PyList::new(py, response_tokens)?)?;
    let instruction_tokens = scores.iter().map(|s| s.instruction_tokens);
    d.set_item("instruction_tokens", PyList::new(py, instruction_tokens)?)?;
    d.set_item(
        "truncated",
        PyList::new(py, scores.iter().map(|s| s.truncated))?,
    )?;
    Ok(d)
}

/// The engine's scoring job (`main_engine::job`), the one `main-score
/// score` runs: JSONL in, JSONL out, resumable. Use through
/// `main_align.score_jsonl`, which documents the arguments and checks their
/// types. `progress` is None or a callable taking one dict per event; it
/// stops the job by returning False (or raising, which is re-raised here).
/// Returns the job's report as a dict.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (input, output, model, reverse_model, threads, precision, device, max_tokens,
                    combine, negatives, tokens, batch_size, keep_top, rank_by, min_alignment,
                    shard, skip_invalid, instruction_field, response_field, input_field, progress))]
fn score_jsonl<'py>(
    py: Python<'py>,
    input: PathBuf,
    output: PathBuf,
    model: PathBuf,
    reverse_model: Option<PathBuf>,
    threads: usize,
    precision: Option<&str>,
    device: &str,
    max_tokens: usize,
    combine: &str,
    negatives: usize,
    tokens: bool,
    batch_size: usize,
    keep_top: Option<f64>,
    rank_by: Option<&str>,
    min_alignment: Option<f64>,
    shard: Option<&str>,
    skip_invalid: bool,
    instruction_field: Option<String>,
    response_field: Option<String>,
    input_field: Option<String>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let arg = |name: &str, reason: String| {
        ArgumentError::new_err(format!("invalid argument '{name}': {reason}"))
    };
    let format = match (instruction_field, response_field) {
        (Some(instruction), Some(response)) => Format::Fields {
            instruction,
            response,
            input: input_field,
        },
        (None, None) if input_field.is_none() => Format::Auto,
        _ => {
            return Err(arg(
                "instruction_field",
                "instruction_field and response_field go together (input_field with them)".into(),
            ))
        }
    };
    let params = JobParams {
        input,
        output,
        model,
        reverse_model,
        n_threads: threads,
        max_tokens,
        precision: precision.map(precision_arg).transpose()?,
        device: device.parse().map_err(py_err)?,
        combine: Combine::parse(combine).map_err(py_err)?,
        negatives,
        tokens,
        batch: batch_size,
        keep_top,
        rank_by: match rank_by {
            Some(r) => r.parse::<RankBy>().map_err(|e| arg("rank_by", e))?,
            None => RankBy::default(),
        },
        min_alignment,
        shard: match shard {
            Some(s) => s.parse::<Shard>().map_err(|e| arg("shard", e))?,
            None => Shard::default(),
        },
        skip_invalid,
        format,
    };
    // The first Python error the callback met (its own exception, or a
    // signal such as Ctrl-C): the job stops at once and it is raised here.
    let mut raised: Option<PyErr> = None;
    let report = engine_call(py, "score_jsonl", || {
        job::run(&params, &mut |event| {
            Python::attach(|py| match call_progress(py, progress.as_ref(), event) {
                Ok(flow) => flow,
                Err(e) => {
                    raised.get_or_insert(e);
                    ControlFlow::Break(())
                }
            })
        })
    });
    if let Some(e) = raised {
        return Err(e);
    }
    report_dict(py, &report?)
}

/// Tells the Python callback of `event`; a signal (Ctrl-C) stops the job too.
fn call_progress(
    py: Python<'_>,
    progress: Option<&Py<PyAny>>,
    event: &JobEvent,
) -> PyResult<ControlFlow<()>> {
    py.check_signals()?;
    let Some(progress) = progress else {
        return Ok(ControlFlow::Continue(()));
    };
    let d = PyDict::new(py);
    match event {
        JobEvent::DroppedPartialLine { output, bytes } => {
            d.set_item("event", "dropped_partial_line")?;
            d.set_item("output", output.display().to_string())?;
            d.set_item("bytes", bytes)?;
        }
        JobEvent::Resuming { output, records } => {
            d.set_item("event", "resuming")?;
            d.set_item("output", output.display().to_string())?;
            d.set_item("records", records)?;
        }
        JobEvent::Started { total } => {
            d.set_item("event", "started")?;
            d.set_item("total", total)?;
        }
        JobEvent::Scored { done, total } => {
            d.set_item("event", "scored")?;
            d.set_item("done", done)?;
            d.set_item("total", total)?;
        }
        JobEvent::Skipped { error } => {
            d.set_item("event", "skipped")?;
            d.set_item("message", error.to_string())?;
            if let Error::Record { file, line, reason } = error {
                d.set_item("file", file)?;
                d.set_item("line", line)?;
                d.set_item("reason", reason)?;
            }
        }
    }
    let answer = progress.call1(py, (d,))?;
    // Only an explicit False stops: a callback that returns nothing goes on.
    Ok(if answer.bind(py).is(pyo3::types::PyBool::new(py, false)) {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    })
}

/// A job's report as a dict (its summary rows as a list of dicts).
fn report_dict<'py>(py: Python<'py>, r: &JobReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("scored", r.scored.display().to_string())?;
    d.set_item("records", r.records())?;
    d.set_item("scored_now", r.scored_now)?;
    d.set_item("resumed", r.resumed)?;
    d.set_item("invalid", r.invalid)?;
    d.set_item("kept", r.kept)?;
    d.set_item("stopped", r.stopped)?;
    let rows = PyList::empty(py);
    for row in r.rows() {
        let x = PyDict::new(py);
        x.set_item("field", row.field)?;
        x.set_item("p10", row.p10)?;
        x.set_item("p50", row.p50)?;
        x.set_item("p90", row.p90)?;
        x.set_item("rho_length", row.rho_length)?;
        x.set_item("warning", row.length_warning())?;
        rows.append(x)?;
    }
    d.set_item("summary", rows)?;
    Ok(d)
}

// ---------------------------------------------------------------------------
// The report of a scored data set (`main-score report`)
// ---------------------------------------------------------------------------

/// The engine's [`ReportParams`] from `main_align.report`'s arguments
/// (documented there); `None` keeps the engine's default.
#[allow(clippy::too_many_arguments)]
fn report_params(
    min: Vec<String>,
    keep_top: Option<f64>,
    rank_by: Option<&str>,
    percentiles: Option<Vec<f64>>,
    examples_by: Option<String>,
    dots: Option<usize>,
    exact_cap: Option<usize>,
    near_sample: Option<usize>,
    max_distinct: Option<usize>,
    max_line_bytes: Option<usize>,
) -> PyResult<ReportParams> {
    let d = ReportParams::default();
    let mut rules = min
        .iter()
        .map(|m| Rule::parse_min(m))
        .collect::<Result<Vec<_>, Error>>()
        .map_err(py_err)?;
    if let Some(f) = keep_top {
        let by = rank_by.unwrap_or(main_engine::rank::DEFAULT_RANK_BY);
        rules.push(Rule::keep_top(f, by).map_err(py_err)?);
    }
    Ok(ReportParams {
        rules,
        percentiles: percentiles.unwrap_or(d.percentiles),
        examples_by,
        dots: dots.unwrap_or(d.dots),
        exact_cap: exact_cap.unwrap_or(d.exact_cap),
        near_sample: near_sample.unwrap_or(d.near_sample),
        max_distinct: max_distinct.unwrap_or(d.max_distinct),
        max_line_bytes: max_line_bytes.unwrap_or(d.max_line_bytes),
        ..d
    })
}

/// `main_align.report` / `report_summary` of a scored JSONL file: the
/// report's JSON and, with `html`, its page (both exactly main-score's).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (path, min, keep_top, rank_by, percentiles, examples_by, dots, exact_cap,
                    near_sample, max_distinct, max_line_bytes, html))]
fn report_path(
    py: Python<'_>,
    path: PathBuf,
    min: Vec<String>,
    keep_top: Option<f64>,
    rank_by: Option<&str>,
    percentiles: Option<Vec<f64>>,
    examples_by: Option<String>,
    dots: Option<usize>,
    exact_cap: Option<usize>,
    near_sample: Option<usize>,
    max_distinct: Option<usize>,
    max_line_bytes: Option<usize>,
    html: bool,
) -> PyResult<(String, Option<String>)> {
    let params = report_params(
        min,
        keep_top,
        rank_by,
        percentiles,
        examples_by,
        dots,
        exact_cap,
        near_sample,
        max_distinct,
        max_line_bytes,
    )?;
    engine_call(py, "report", move || {
        let data = report::report_file(&path, &params, &mut |_, _| {})?;
        Ok((data.to_json(), html.then(|| report::render_html(&data))))
    })
}

/// The report of records that are not a file (a table, a dataset, dicts):
/// Python writes each as one JSON line and adds them in chunks, so memory
/// stays bounded as for a file.
#[pyclass(name = "ReportBuilder")]
struct NativeReportBuilder {
    inner: Option<report::ReportBuilder>,
}

#[pymethods]
impl NativeReportBuilder {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (source, min, keep_top, rank_by, percentiles, examples_by, dots, exact_cap,
                        near_sample, max_distinct, max_line_bytes))]
    fn new(
        source: &str,
        min: Vec<String>,
        keep_top: Option<f64>,
        rank_by: Option<&str>,
        percentiles: Option<Vec<f64>>,
        examples_by: Option<String>,
        dots: Option<usize>,
        exact_cap: Option<usize>,
        near_sample: Option<usize>,
        max_distinct: Option<usize>,
        max_line_bytes: Option<usize>,
    ) -> PyResult<Self> {
        let params = report_params(
            min,
            keep_top,
            rank_by,
            percentiles,
            examples_by,
            dots,
            exact_cap,
            near_sample,
            max_distinct,
            max_line_bytes,
        )?;
        let inner = report::ReportBuilder::new(&params, source).map_err(py_err)?;
        Ok(NativeReportBuilder { inner: Some(inner) })
    }

    /// Adds JSON lines, the first being line `first_line` (1-based).
    fn add_lines(&mut self, py: Python<'_>, lines: Vec<String>, first_line: usize) -> PyResult<()> {
        let builder = self
            .inner
            .as_mut()
            .ok_or_else(|| ArgumentError::new_err("the report was already finished"))?;
        engine_call(py, "report", move || {
            for (k, line) in lines.iter().enumerate() {
                builder.add_line(line.as_bytes(), first_line + k)?;
            }
            Ok(())
        })
    }

    /// The report's JSON and, with `html`, its page.
    fn finish(&mut self, py: Python<'_>, html: bool) -> PyResult<(String, Option<String>)> {
        let builder = self
            .inner
            .take()
            .ok_or_else(|| ArgumentError::new_err("the report was already finished"))?;
        engine_call(py, "report", move || {
            let data = builder.finish();
            Ok((data.to_json(), html.then(|| report::render_html(&data))))
        })
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<NativeScorer>()?;
    m.add_function(wrap_pyfunction!(score_jsonl, m)?)?;
    m.add_function(wrap_pyfunction!(report_path, m)?)?;
    m.add_class::<NativeReportBuilder>()?;
    // The engine's one list of score fields, so the Python columns cannot
    // drift from what main-score writes.
    m.add("SCORE_FIELDS", main_engine::score::SCORE_FIELDS.to_vec())?;
    m.add("MainError", py.get_type::<MainError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("ArgumentError", py.get_type::<ArgumentError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    Ok(())
}
