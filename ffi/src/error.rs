//! Status codes, the per-thread last error, and the guard every entry point
//! runs in: it turns engine errors into a `main_status` plus a message, and
//! catches panics so none unwinds into C.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use main_engine::Error;

/// What a fallible libmain call returns. On any value other than `MAIN_OK`,
/// `main_last_error()` on the same thread holds a message that names the
/// argument, file, key or tensor that was wrong, and every output argument is
/// left as documented at the function (usually untouched or set to NULL).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum main_status {
    /// Success.
    MAIN_OK = 0,
    /// An argument was NULL, not valid UTF-8, or outside its domain (for
    /// example `max_tokens` < 8, or fewer pairs than `negatives` + 1 in a batch).
    MAIN_ERR_INVALID_ARGUMENT,
    /// A file could not be opened or read (missing file, permissions).
    MAIN_ERR_IO,
    /// A model file is malformed: bad magic, truncated, missing or
    /// inconsistent metadata, tensors, tokenizer or chat template.
    MAIN_ERR_FORMAT,
    /// The file is valid but uses something this engine does not support
    /// (an architecture, a tensor type).
    MAIN_ERR_UNSUPPORTED,
    /// The system refused memory the library asked for in a way it could
    /// detect (for example mapping the model file). Other allocation
    /// failures abort the process, as in most C++ and Rust code.
    MAIN_ERR_OUT_OF_MEMORY,
    /// A bug in libmain: a Rust panic was caught at the boundary; the message
    /// says where. Free the objects the failing call used; do not reuse them.
    MAIN_ERR_INTERNAL,
    /// The GPU asked for (`MAIN_DEVICE_CUDA`) cannot be used: no driver or
    /// device, a library missing, an unsupported architecture, a failed
    /// kernel. (Out of GPU memory is `MAIN_ERR_OUT_OF_MEMORY`.)
    MAIN_ERR_DEVICE,
}

use main_status::*;

/// The status an engine error maps to. Exhaustive on purpose: a new engine
/// variant must be given its C status here.
pub(crate) fn status_of(e: &Error) -> main_status {
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::OutOfMemory => {
            MAIN_ERR_OUT_OF_MEMORY
        }
        Error::Io { .. } => MAIN_ERR_IO,
        Error::Format { .. }
        | Error::Metadata { .. }
        | Error::Tensor { .. }
        | Error::Tokenizer(_)
        | Error::Template(_) => MAIN_ERR_FORMAT,
        Error::Unsupported { .. } => MAIN_ERR_UNSUPPORTED,
        Error::InvalidArgument { .. } | Error::Input(_) | Error::Record { .. } => {
            MAIN_ERR_INVALID_ARGUMENT
        }
        Error::Gpu { .. } => MAIN_ERR_DEVICE,
        Error::GpuOutOfMemory { .. } => MAIN_ERR_OUT_OF_MEMORY,
    }
}

pub(crate) fn status_name(status: i32) -> &'static CStr {
    const NAMES: [&CStr; 8] = [
        c"MAIN_OK",
        c"MAIN_ERR_INVALID_ARGUMENT",
        c"MAIN_ERR_IO",
        c"MAIN_ERR_FORMAT",
        c"MAIN_ERR_UNSUPPORTED",
        c"MAIN_ERR_OUT_OF_MEMORY",
        c"MAIN_ERR_INTERNAL",
        c"MAIN_ERR_DEVICE",
    ];
    usize::try_from(status)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or(c"unknown main_status")
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    // A message may quote user text; C strings cannot hold NUL bytes.
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

fn clear_last_error() {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        if !e.as_bytes().is_empty() {
            *e = CString::default();
        }
    });
}

/// The calling thread's last message; the pointer lives in the thread-local
/// until the next call that sets or clears it.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Runs one entry point: clears the last error, runs `f`, and maps its error
/// or panic to a status with the message stored for `main_last_error()`.
///
/// `AssertUnwindSafe`: after a panic the objects the call touched are not
/// trusted again; the status tells the caller to free them.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), Error>) -> main_status {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => MAIN_OK,
        Ok(Err(e)) => {
            let status = status_of(&e);
            set_last_error(e.to_string());
            status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            set_last_error(format!(
                "internal error in libmain (please report it): {what}"
            ));
            MAIN_ERR_INTERNAL
        }
    }
}

/// For entry points that cannot fail (the `*_free` functions): a panic there
/// is swallowed into the last error rather than unwinding into C.
pub(crate) fn guard_void(f: impl FnOnce()) {
    let _ = guard(|| {
        f();
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: last_error_ptr returns a live NUL-terminated thread-local string.
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_panic_becomes_internal_with_its_message() {
        let status = guard(|| panic!("boom at step {}", 3));
        assert_eq!(status, MAIN_ERR_INTERNAL);
        assert!(last().contains("boom at step 3"), "{}", last());
        let status = guard(|| panic!("static message"));
        assert_eq!(status, MAIN_ERR_INTERNAL);
        assert!(last().contains("static message"), "{}", last());
    }

    #[test]
    fn success_clears_the_last_error() {
        guard(|| Err(Error::invalid_argument("x", "bad")));
        assert_eq!(last(), "invalid argument 'x': bad");
        assert_eq!(guard(|| Ok(())), MAIN_OK);
        assert_eq!(last(), "");
    }

    #[test]
    fn messages_with_nul_bytes_survive() {
        guard(|| Err(Error::Input("a\0b".into())));
        assert_eq!(last(), "input text: a\\0b");
    }

    #[test]
    fn every_engine_error_has_its_status() {
        let io = |kind| Error::io("/x", std::io::Error::from(kind));
        let cases = [
            (io(std::io::ErrorKind::NotFound), MAIN_ERR_IO),
            (io(std::io::ErrorKind::OutOfMemory), MAIN_ERR_OUT_OF_MEMORY),
            (
                Error::format("GGUF header", 0, "bad magic"),
                MAIN_ERR_FORMAT,
            ),
            (Error::metadata("k", "missing"), MAIN_ERR_FORMAT),
            (Error::tensor("t", "shape"), MAIN_ERR_FORMAT),
            (Error::Tokenizer("x".into()), MAIN_ERR_FORMAT),
            (Error::Template("x".into()), MAIN_ERR_FORMAT),
            (
                Error::unsupported("architecture", "gpt2"),
                MAIN_ERR_UNSUPPORTED,
            ),
            (Error::invalid_argument("a", "b"), MAIN_ERR_INVALID_ARGUMENT),
            (Error::Input("x".into()), MAIN_ERR_INVALID_ARGUMENT),
            (
                Error::record("in.jsonl", 3, "bad"),
                MAIN_ERR_INVALID_ARGUMENT,
            ),
            (
                Error::gpu("cuda:0", "opening the GPU", "no driver"),
                MAIN_ERR_DEVICE,
            ),
            (
                Error::GpuOutOfMemory {
                    device: "cuda:0".into(),
                    what: "x".into(),
                    bytes: 1,
                    free: 0,
                },
                MAIN_ERR_OUT_OF_MEMORY,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(status_of(&e), want, "{e}");
        }
    }

    #[test]
    fn status_names() {
        assert_eq!(status_name(0), c"MAIN_OK");
        assert_eq!(status_name(MAIN_ERR_INTERNAL as i32), c"MAIN_ERR_INTERNAL");
        assert_eq!(status_name(MAIN_ERR_DEVICE as i32), c"MAIN_ERR_DEVICE");
        assert_eq!(status_name(8), c"unknown main_status");
        assert_eq!(status_name(-1), c"unknown main_status");
    }
}
