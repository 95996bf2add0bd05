//! C arguments checked and turned into the engine's types (every message
//! names the argument), and engine values turned into libmain's structs.

use std::ffi::{c_char, CStr};

use main_engine::matmul::Precision;
use main_engine::score::{Combine, PairScore};
use main_engine::scorer::ScorerParams;
use main_engine::{Device, Error};

use crate::{main_combine, main_device, main_pair_score, main_precision, main_scorer_params};

pub(crate) fn null(name: &str) -> Error {
    Error::invalid_argument(name, "is NULL")
}

/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|e| {
        Error::invalid_argument(
            name,
            format!(
                "is not valid UTF-8 (byte {} of {})",
                e.valid_up_to(),
                s.to_bytes().len()
            ),
        )
    })
}

/// # Safety
/// `p` is NULL or points to a live `T`.
pub(crate) unsafe fn ref_arg<'a, T>(p: *const T, name: &str) -> Result<&'a T, Error> {
    // SAFETY: the caller promises a live object behind any non-NULL pointer.
    unsafe { p.as_ref() }.ok_or_else(|| null(name))
}

/// # Safety
/// `p` is NULL or points to a live `T` no one else uses during the call.
pub(crate) unsafe fn mut_arg<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Error> {
    // SAFETY: the caller promises exclusive use of a live object (one thread at a time).
    unsafe { p.as_mut() }.ok_or_else(|| null(name))
}

pub(crate) fn enum_arg<T: Copy>(value: u32, name: &str, options: &[(u32, T)]) -> Result<T, Error> {
    options
        .iter()
        .find(|(v, _)| *v == value)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let valid: Vec<String> = options.iter().map(|(v, _)| v.to_string()).collect();
            Error::invalid_argument(name, format!("{value} is not one of {}", valid.join(", ")))
        })
}

pub(crate) const PRECISIONS: [(u32, Precision); 4] = [
    (
        main_precision::MAIN_PRECISION_EXACT as u32,
        Precision::Exact,
    ),
    (main_precision::MAIN_PRECISION_FAST as u32, Precision::Fast),
    (main_precision::MAIN_PRECISION_INT8 as u32, Precision::Int8),
    (main_precision::MAIN_PRECISION_BF16 as u32, Precision::Bf16),
];

pub(crate) const DEVICES: [(u32, bool); 2] = [
    (main_device::MAIN_DEVICE_CPU as u32, false),
    (main_device::MAIN_DEVICE_CUDA as u32, true),
];

pub(crate) fn device_arg(p: &main_scorer_params) -> Result<Device, Error> {
    let gpu = enum_arg(p.device, "params->device", &DEVICES)?;
    Ok(if gpu {
        Device::Cuda(p.gpu as usize)
    } else {
        Device::Cpu
    })
}

pub(crate) fn precision_arg(value: u32, name: &str) -> Result<Precision, Error> {
    enum_arg(value, name, &PRECISIONS)
}

/// The C value of an engine precision (for the defaults, which the engine owns).
pub(crate) fn precision_value(p: Precision) -> u32 {
    PRECISIONS
        .iter()
        .find(|(_, q)| *q == p)
        .map(|(v, _)| *v)
        .expect("every engine precision has a main_precision value")
}

pub(crate) const COMBINES: [(u32, Combine); 3] = [
    (main_combine::MAIN_COMBINE_MIN as u32, Combine::Min),
    (main_combine::MAIN_COMBINE_MEAN as u32, Combine::Mean),
    (main_combine::MAIN_COMBINE_SOFTMIN as u32, Combine::Softmin),
];

pub(crate) fn combine_value(c: Combine) -> u32 {
    COMBINES
        .iter()
        .find(|(_, d)| *d == c)
        .map(|(v, _)| *v)
        .expect("every engine combination has a main_combine value")
}

pub(crate) fn engine_params(p: &main_scorer_params) -> Result<ScorerParams, Error> {
    let combine = enum_arg(p.combine, "params->combine", &COMBINES)?;
    Ok(ScorerParams {
        n_threads: p.n_threads as usize,
        max_tokens: p.max_tokens as usize,
        combine,
        negatives: p.negatives as usize,
        // Always on: the detail is cheap next to the forward passes, and one
        // scorer then serves both main_score_* and main_score_pair_detail.
        tokens: true,
        precision: precision_arg(p.precision, "params->precision")?,
        batch_tokens: p.batch_tokens as usize,
        device: device_arg(p)?,
    })
}

pub(crate) fn c_score(s: &PairScore) -> main_pair_score {
    main_pair_score {
        alignment: s.alignment,
        fwd_pmi: s.fwd_pmi,
        rev_pmi: s.rev_pmi,
        fwd_cond: s.fwd_cond,
        fwd_uncond: s.fwd_uncond,
        rev_cond: s.rev_cond,
        rev_uncond: s.rev_uncond,
        ifd: s.ifd,
        rifd: s.rifd,
        semantic: s.semantic,
        structural: s.structural,
        intentional: s.intentional,
        contrastive: s.contrastive.unwrap_or(f64::NAN),
        instruction_tokens: s.instruction_tokens,
        response_tokens: s.response_tokens,
        truncated: s.truncated as u32,
        fwd_pmi_total: s.fwd_pmi_total,
        rev_pmi_total: s.rev_pmi_total,
    }
}
