//! libmain's string and path arguments, as a C caller passes them: any
//! bytes up to a NUL (not UTF-8, empty, long). Each call returns a status
//! (and a message), never crashes; a model path that names nothing is an
//! error. The fixture's tiny model is loaded once through the C ABI itself.
//!
//! Input: a selector byte, then the argument bytes (two texts are split at
//! the first 0xFF byte).
#![no_main]

use std::ffi::{c_char, CStr, CString};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use main::main_status::MAIN_OK;
use main::*;

/// Bytes as C would see them: up to the first NUL, NUL-terminated.
fn c_string(bytes: &[u8]) -> CString {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    CString::new(&bytes[..end]).expect("no NUL before the end")
}

struct Handles {
    model: *mut main_model,
    scorer: *mut main_scorer,
}

// SAFETY: the fuzzer calls one input at a time; the handles are only used
// from that thread.
unsafe impl Send for Handles {}
unsafe impl Sync for Handles {}

fn handles() -> &'static Handles {
    static H: OnceLock<Handles> = OnceLock::new();
    H.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/mistral-tiny/model.gguf"
        );
        let path = CString::new(path).unwrap();
        let mut model = std::ptr::null_mut();
        // SAFETY: a NUL-terminated path and a writable out pointer.
        let status = unsafe { main_model_load(path.as_ptr(), &mut model) };
        assert_eq!(status, MAIN_OK, "run scripts/fetch-fixtures first");
        let mut params = main_scorer_default_params();
        params.n_threads = 1;
        params.max_tokens = 64;
        let mut scorer = std::ptr::null_mut();
        // SAFETY: a live model, params and a writable out pointer.
        let status = unsafe { main_scorer_new(model, std::ptr::null(), &params, &mut scorer) };
        assert_eq!(status, MAIN_OK);
        Handles { model, scorer }
    })
}

fn check_status(status: main_status) {
    if status != MAIN_OK {
        // SAFETY: libmain returns a NUL-terminated message for this thread.
        let msg = unsafe { CStr::from_ptr(main_last_error()) };
        assert!(
            !msg.to_bytes().is_empty(),
            "status {status:?} without a message"
        );
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&selector, arg)) = bytes.split_first() else {
        return;
    };
    let h = handles();
    match selector % 3 {
        0 => {
            // Paths stay inside an empty scratch folder: the fuzzer must not
            // wander the machine's files, and nothing there is a model.
            if arg.windows(2).any(|w| w == b"..") || arg.first() == Some(&b'/') {
                return;
            }
            let dir = std::env::temp_dir().join("main-fuzz-c-abi-empty");
            let _ = std::fs::create_dir_all(&dir);
            let mut path = dir.into_os_string().into_encoded_bytes();
            path.push(b'/');
            path.extend_from_slice(arg);
            let path = c_string(&path);
            let mut model = std::ptr::null_mut();
            // SAFETY: a NUL-terminated path and a writable out pointer.
            let status = unsafe { main_model_load(path.as_ptr(), &mut model) };
            assert_ne!(status, MAIN_OK, "a model loaded from an empty folder");
            assert!(model.is_null());
            check_status(status);
        }
        // Texts are kept short: each one costs a forward pass, and what is
        // under test is their bytes, not their length.
        1 if arg.len() > 64 => {}
        2 if arg.len() > 64 => {}
        1 => {
            let (x, y) = match arg.iter().position(|&b| b == 0xFF) {
                Some(at) => (&arg[..at], &arg[at + 1..]),
                None => (arg, &[][..]),
            };
            let (x, y) = (c_string(x), c_string(y));
            // SAFETY: zeroed plain-data output.
            let mut out: main_pair_score = unsafe { std::mem::zeroed() };
            // SAFETY: live scorer used from this thread only, NUL-terminated texts.
            let status = unsafe { main_score_pair(h.scorer, x.as_ptr(), y.as_ptr(), &mut out) };
            check_status(status);
        }
        _ => {
            let text = c_string(arg);
            let mut out = std::ptr::null_mut();
            // SAFETY: live model, NUL-terminated text, writable out pointer.
            let status = unsafe {
                main_text_logprobs_new(h.model, text.as_ptr() as *const c_char, 1, 0, &mut out)
            };
            check_status(status);
            // SAFETY: NULL or a result of main_text_logprobs_new.
            unsafe { main_text_logprobs_free(out) };
        }
    }
});
