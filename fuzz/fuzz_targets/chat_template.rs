//! A chat template from arbitrary text (`ChatTemplate::new`, which compiles
//! it and renders a prompt and an assistant turn), then a prompt with
//! arbitrary content: an error or a result, never a panic, a hang (fuel), a
//! stack overflow or unbounded memory (template/bounds.rs). Run by hand with
//! `-malloc_limit_mb=200` too, so that any one allocation past 200 MB is a
//! crash.
//!
//! Input: the template up to the first 0xFF byte, then the user content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use main_engine::template::ChatTemplate;

fuzz_target!(|bytes: &[u8]| {
    let (source, content) = match bytes.iter().position(|&b| b == 0xFF) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[][..]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let content = String::from_utf8_lossy(content);
    let Ok(t) = ChatTemplate::new(Some(source), Some("<s>".into()), Some("</s>".into())) else {
        return;
    };
    let _ = t.end_of_turn();
    let _ = t.render_prompt(&content);
    let _ = t.render(
        &[("system", &content), ("user", "x"), ("assistant", &content)],
        false,
    );
});
