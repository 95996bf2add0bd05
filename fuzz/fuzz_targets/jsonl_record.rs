//! One JSONL input line in every input format (`pairs::parse_line`: Alpaca,
//! prompt/response and chat messages detected, and named fields; and
//! `pairs::parse_sample_line`: OpenAI messages and ShareGPT conversations
//! too): a pair or a checked conversation, or an error naming the line,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use main_engine::pairs::{parse_line, parse_sample_line, Format, Sample};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let fields = Format::Fields {
        instruction: "q".into(),
        response: "a".into(),
        input: Some("ctx".into()),
    };
    for format in [Format::Auto, fields] {
        match parse_line(text, 7, &format) {
            Ok((record, pair)) => {
                assert!(!record.is_empty());
                let _ = (pair.instruction.len(), pair.response.len());
            }
            Err(e) => assert_eq!(e.line, 7),
        }
        match parse_sample_line(text, 7, &format) {
            Ok((_, Sample::Pair(pair))) => {
                let _ = (pair.instruction.len(), pair.response.len());
            }
            // A checked conversation has a turn, and every turn its texts.
            Ok((_, Sample::Conversation(c))) => {
                assert!(c.n_turns() >= 1);
                for t in c.turns() {
                    assert!(!t.user.trim().is_empty() && !t.assistant.trim().is_empty());
                }
            }
            Err(e) => assert_eq!(e.line, 7),
        }
    }
});
