//! The GGUF tokenizer metadata (`Tokenizer::from_gguf`): a vocabulary,
//! scores, token types, merges, special ids and pre-tokenizer name made from
//! arbitrary bytes and written with the engine's GGUF writer, as a stranger's
//! file would carry them. Building must succeed or fail with an error; a
//! tokenizer it builds must encode and decode any text without panicking.
//!
//! Input: a flags byte, a pre-tokenizer choice byte, two special-id bytes,
//! then newline-separated token texts; the last line is the text to encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use main_engine::gguf::{Gguf, GgufWriter, Value};
use main_engine::tokenizer::Tokenizer;

const PRE: [&str; 10] = [
    "default",
    "llama-bpe",
    "smollm",
    "qwen2",
    "gpt-2",
    "deepseek-llm",
    "tekken",
    "gpt-4o",
    "starcoder",
    "no-such-pre",
];

fuzz_target!(|bytes: &[u8]| {
    if bytes.len() < 4 {
        return;
    }
    let (flags, pre, bos, eos) = (bytes[0], bytes[1], bytes[2], bytes[3]);
    let text = String::from_utf8_lossy(&bytes[4..]);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let to_encode = lines.pop().unwrap_or("");
    if lines.len() > 4096 {
        return;
    }
    let n = lines.len();
    let mut w = GgufWriter::new();
    let spm = flags & 1 == 0;
    let add = |w: &mut GgufWriter, k: &str, v: Value| w.add(k, v).is_ok();
    let model = if flags & 0x80 != 0 {
        "bert"
    } else if spm {
        "llama"
    } else {
        "gpt2"
    };
    add(&mut w, "tokenizer.ggml.model", Value::from(model));
    if flags & 2 != 0 {
        add(
            &mut w,
            "tokenizer.ggml.pre",
            Value::from(PRE[pre as usize % PRE.len()]),
        );
    }
    let tokens: Vec<Value> = lines.iter().map(|&t| Value::from(t)).collect();
    if !tokens.is_empty() {
        add(&mut w, "tokenizer.ggml.tokens", Value::Array(tokens));
    }
    if flags & 4 != 0 && n > 0 {
        let scores: Vec<Value> = (0..n)
            .map(|i| Value::F32(-(i as f32) * (pre as f32)))
            .collect();
        add(&mut w, "tokenizer.ggml.scores", Value::Array(scores));
    }
    if flags & 8 != 0 && n > 0 {
        // Types 1..=6 (normal, unknown, control, user-defined, unused, byte).
        let types: Vec<Value> = lines
            .iter()
            .map(|t| Value::I32(1 + (t.len() as i32 + pre as i32) % 6))
            .collect();
        add(&mut w, "tokenizer.ggml.token_type", Value::Array(types));
    }
    if flags & 16 != 0 && n > 1 {
        let merges: Vec<Value> = lines
            .windows(2)
            .map(|p| Value::from(format!("{} {}", p[0], p[1]).as_str()))
            .collect();
        add(&mut w, "tokenizer.ggml.merges", Value::Array(merges));
    }
    if flags & 32 != 0 {
        add(
            &mut w,
            "tokenizer.ggml.bos_token_id",
            Value::U32(bos as u32),
        );
        add(
            &mut w,
            "tokenizer.ggml.eos_token_id",
            Value::U32(eos as u32),
        );
    }
    if flags & 64 != 0 {
        add(
            &mut w,
            "tokenizer.ggml.add_bos_token",
            Value::Bool(bos & 1 == 1),
        );
        add(
            &mut w,
            "tokenizer.ggml.add_space_prefix",
            Value::Bool(eos & 1 == 1),
        );
    }
    let file = w.to_bytes();
    let g = Gguf::parse(&file).expect("the writer's output parses");
    let Ok(tok) = Tokenizer::from_gguf(&g) else {
        return;
    };
    for (bos, special) in [(false, false), (true, true)] {
        let Ok(ids) = tok.encode(to_encode, bos, special) else {
            continue;
        };
        for &id in &ids {
            assert!(
                (id as usize) < tok.vocab_size(),
                "id {id} outside the vocabulary"
            );
            let _ = tok.piece_bytes(id);
        }
        let _ = tok.decode(&ids);
    }
});
