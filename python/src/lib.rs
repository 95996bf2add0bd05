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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use main_engine::matmul::Precision;
use main_engine::model::Model;
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
        Error::Input(_) => InputError::new_err(msg),
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
        let asked = precision
            .map(|name| {
                Precision::parse(name).ok_or_else(|| {
                    ArgumentError::new_err(format!(
                        "invalid argument 'precision': {name:?} is not one of exact, fast, int8, bf16"
                    ))
                })
            })
            .transpose()?;
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

    /// Scores the pairs in calls of `batch_size` pairs, in order, exactly as
    /// `main-score --batch batch_size` does (with negatives, a short last
    /// batch borrows pairs from the batch before). Returns the §3 fields as
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
        if batch_size == 0 || (k > 0 && batch_size <= k) {
            return Err(ArgumentError::new_err(format!(
                "batch_size {batch_size} must be at least 1 and above negatives ({k}): negatives are drawn from the same batch"
            )));
        }
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
            score_in_batches(&mut scorer, &pairs, batch_size, k)
        })?;
        columns(py, &scores, k > 0)
    }
}

/// The batching of `main-score score` (its `ScoreJob::flush`): the same
/// batches give the same contrastive scores. Without negatives a pair's
/// scores do not depend on its batch.
fn score_in_batches(
    scorer: &mut Scorer,
    pairs: &[Pair],
    batch_size: usize,
    negatives: usize,
) -> Result<Vec<PairScore>, Error> {
    let mut out = Vec::with_capacity(pairs.len());
    let mut previous: &[Pair] = &[];
    for chunk in pairs.chunks(batch_size) {
        let mut batch = chunk.to_vec();
        if negatives > 0 && batch.len() < negatives + 1 {
            let need = negatives + 1 - batch.len();
            batch.extend(previous.iter().take(need).cloned());
            if batch.len() < negatives + 1 {
                return Err(Error::invalid_argument(
                    "negatives",
                    format!(
                        "{negatives} negatives need at least {} pairs, got {}",
                        negatives + 1,
                        batch.len()
                    ),
                ));
            }
        }
        let mut scores = scorer.score_batch(&batch)?;
        scores.truncate(chunk.len());
        out.extend(scores);
        previous = chunk;
    }
    Ok(out)
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

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<NativeScorer>()?;
    m.add("MainError", py.get_type::<MainError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("ArgumentError", py.get_type::<ArgumentError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    Ok(())
}
