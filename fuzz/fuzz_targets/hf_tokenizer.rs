//! `tokenizer.json` and `tokenizer_config.json` from arbitrary bytes
//! (`Tokenizer::from_json_bytes`): building must succeed or fail with an
//! error; a tokenizer it builds must encode and decode any text without
//! panicking, and give ids inside its vocabulary.
//!
//! Input: u16 LE length L, L bytes of tokenizer_config.json (none when L is
//! 0), then tokenizer.json up to the first 0xFF byte, then the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use main_engine::tokenizer::Tokenizer;

fuzz_target!(|bytes: &[u8]| {
    if bytes.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
    let rest = &bytes[2..];
    let (config, rest) = rest.split_at(n.min(rest.len()));
    let config: Option<serde_json::Value> = if n == 0 {
        None
    } else {
        match serde_json::from_slice(config) {
            Ok(v) => Some(v),
            Err(_) => return,
        }
    };
    let (json, text) = match rest.iter().position(|&b| b == 0xFF) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(tok) = Tokenizer::from_json_bytes(json, config.as_ref()) else {
        return;
    };
    exercise(&tok, &String::from_utf8_lossy(text));
});

fn exercise(tok: &Tokenizer, text: &str) {
    for (bos, special) in [(false, false), (true, true)] {
        let Ok(ids) = tok.encode(text, bos, special) else {
            continue;
        };
        for &id in &ids {
            assert!(
                (id as usize) < tok.vocab_size(),
                "id {id} outside the vocabulary"
            );
            let _ = tok.piece(id);
        }
        let _ = tok.decode(&ids);
    }
    let _ = (
        tok.bos_id(),
        tok.eos_id(),
        tok.eot_id(),
        tok.add_bos_default(),
    );
}
