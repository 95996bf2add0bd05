//! Library-owned arrays and strings: a `Box<[T]>` handed to C as (pointer,
//! length) and rebuilt with the same length to be freed.

use std::ffi::c_char;

use main_engine::score::TokenScore;

use crate::main_token_score;

/// `bytes` plus a NUL, leaked; returns the pointer and the length without NUL.
pub(crate) fn leak_text(bytes: &[u8]) -> (*const c_char, usize) {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.extend_from_slice(bytes);
    v.push(0);
    let len = bytes.len();
    (Box::into_raw(v.into_boxed_slice()) as *const c_char, len)
}

/// # Safety
/// `text` came from `leak_text` with this `len` and is not used again.
pub(crate) unsafe fn free_text(text: *const c_char, len: usize) {
    let slice = std::ptr::slice_from_raw_parts_mut(text as *mut u8, len + 1);
    // SAFETY: rebuilds exactly the Box<[u8]> that leak_text leaked.
    drop(unsafe { Box::from_raw(slice) });
}

pub(crate) fn leak_slice<T>(v: Vec<T>) -> (*const T, usize) {
    let len = v.len();
    (Box::into_raw(v.into_boxed_slice()) as *const T, len)
}

/// # Safety
/// `p` came from `leak_slice` with this `len` and is not used again.
pub(crate) unsafe fn take_slice<T>(p: *const T, len: usize) -> Box<[T]> {
    // SAFETY: rebuilds exactly the Box<[T]> that leak_slice leaked.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p as *mut T, len)) }
}

pub(crate) fn c_tokens(tokens: &[TokenScore]) -> (*const main_token_score, usize) {
    leak_slice(
        tokens
            .iter()
            .map(|t| {
                let (text, text_len) = leak_text(t.text.as_bytes());
                main_token_score {
                    id: t.id,
                    text,
                    text_len,
                    cond: t.cond,
                    uncond: t.uncond,
                    pmi: t.pmi,
                }
            })
            .collect(),
    )
}

/// # Safety
/// `(p, n)` came from `c_tokens` and is not used again.
pub(crate) unsafe fn free_tokens(p: *const main_token_score, n: usize) {
    // SAFETY: forwarded from the caller.
    for t in unsafe { take_slice(p, n) }.iter() {
        // SAFETY: each text was leaked by c_tokens with its text_len.
        unsafe { free_text(t.text, t.text_len) };
    }
}
