//! The GGUF tokenizer against llama.cpp's own expectations:
//! - the vocabulary-only GGUFs llama.cpp ships with test vectors
//!   (`models/ggml-vocab-*.gguf` with `.inp` / `.out`, as read by its
//!   `tests/test-tokenizer-0.cpp`: inputs separated by a
//!   `\n__ggml_vocab_test__\n` line, one line of ids per input, tokenized
//!   with `add_special = false, parse_special = false`);
//! - SmolLM2-135M-Instruct ids produced by llama.cpp (llama-cpp-python,
//!   `engine/tests/data/tokenizer/smollm2_llama_cpp.json`), with and without
//!   special-token parsing and BOS.
//!
//! Fixtures come from `MAIN_FIXTURES` or `<workspace>/fixtures`; a missing
//! one fails the test (run `scripts/fetch-fixtures`).

use std::path::PathBuf;

use main_engine::gguf::Gguf;
use main_engine::tokenizer::Tokenizer;

fn fixtures() -> PathBuf {
    std::env::var_os("MAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"))
}

fn read_fixture(rel: &str) -> Vec<u8> {
    let path = fixtures().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} is missing ({e}): run scripts/fetch-fixtures (or set MAIN_FIXTURES)",
            path.display()
        )
    })
}

fn load(rel: &str) -> Tokenizer {
    let bytes = read_fixture(rel);
    let g = Gguf::parse(&bytes).unwrap_or_else(|e| panic!("{rel}: {e}"));
    Tokenizer::from_gguf(&g).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The (input, expected ids) pairs of one llama.cpp vocabulary test.
fn vectors(name: &str) -> Vec<(String, Vec<u32>)> {
    let base = format!("llama-vocab/ggml-vocab-{name}.gguf");
    let inp = String::from_utf8(read_fixture(&format!("{base}.inp"))).expect("UTF-8 .inp");
    let out = String::from_utf8(read_fixture(&format!("{base}.out"))).expect("UTF-8 .out");

    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(i) => {
                inputs.push(rest[..i].to_string());
                rest = &rest[i + sep.len()..];
            }
            None => {
                inputs.push(rest.to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{base}: .inp and .out disagree on the number of tests"
    );
    assert!(!inputs.is_empty(), "{base}: no tests");
    inputs.into_iter().zip(outputs).collect()
}

fn check_vocab(name: &str) {
    let tok = load(&format!("llama-vocab/ggml-vocab-{name}.gguf"));
    let cases = vectors(name);
    let mut failures = Vec::new();
    for (text, expected) in &cases {
        let got = tok.encode(text, false, false).expect("encode");
        if &got != expected {
            failures.push(format!(
                "  {text:?}\n    expected {expected:?}\n    got      {got:?}"
            ));
        }
    }
    println!(
        "{name}: {}/{} vectors pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {} vectors fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

macro_rules! vocab_tests {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check_vocab($name);
            }
        )*
    };
}

vocab_tests! {
    llama_spm => "llama-spm",
    phi_3 => "phi-3",
    llama_bpe => "llama-bpe",
    gpt_2 => "gpt-2",
    starcoder => "starcoder",
    refact => "refact",
    qwen2 => "qwen2",
    qwen35 => "qwen35",
    deepseek_llm => "deepseek-llm",
    deepseek_coder => "deepseek-coder",
    falcon => "falcon",
    mpt => "mpt",
    command_r => "command-r",
    gemma_4 => "gemma-4",
}

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn smollm2_matches_llama_cpp() {
    let tok = load(SMOLLM2);
    let data: serde_json::Value =
        serde_json::from_str(include_str!("data/tokenizer/smollm2_llama_cpp.json")).unwrap();
    let cases = data["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        // llama-cpp-python's `add_bos` is llama.cpp's `add_special`: BOS
        // only where the model asks for it.
        let add_bos = c["add_bos"].as_bool().unwrap() && tok.add_bos_default();
        let parse_special = c["parse_special"].as_bool().unwrap();
        let expected: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, add_bos, parse_special).unwrap();
        if got != expected {
            failures.push(format!("  {text:?} (special {parse_special})\n    expected {expected:?}\n    got      {got:?}"));
        }
    }
    println!(
        "smollm2: {}/{} cases pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_special_ids_and_pieces() {
    let tok = load(SMOLLM2);
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.eot_id(), tok.token_to_id("<|im_end|>"));
    assert!(!tok.add_bos_default());
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.piece(tok.token_to_id("Ġworld").unwrap()), " world");
    assert_eq!(tok.piece(2), "<|im_end|>");
    assert!(tok.encode_plain("<|im_end|>").unwrap().len() > 1);

    let text = "<|im_start|>user\nHéllo, wörld! 🚀 12345\n  indented\tcode<|im_end|>\n";
    let ids = tok.encode(text, false, true).unwrap();
    assert_eq!(tok.decode(&ids), text);
    let pieces: Vec<u8> = ids.iter().flat_map(|&i| tok.piece_bytes(i)).collect();
    assert_eq!(pieces, text.as_bytes());
}

#[test]
fn llama_spm_bos_space_prefix_and_decode() {
    let tok = load("llama-vocab/ggml-vocab-llama-spm.gguf");
    assert!(tok.add_bos_default());
    let ids = tok.encode_plain("Hello world").unwrap();
    assert_eq!(ids[0], tok.bos_id().unwrap());
    assert_eq!(tok.encode("Hello world", false, false).unwrap(), ids[1..]);
    // The first piece carries SentencePiece's dummy-prefix space; decode
    // drops it, so text round-trips.
    assert_eq!(tok.piece(ids[1]), " Hello");
    assert_eq!(tok.decode(&ids[1..]), "Hello world");
    // A special token in the text is text unless parsed; a space is
    // prefixed again after it.
    let parsed = tok.encode("a</s>b", false, true).unwrap();
    assert!(parsed.contains(&tok.eos_id().unwrap()));
    let literal = tok.encode("a</s>b", false, false).unwrap();
    assert!(!literal.contains(&tok.eos_id().unwrap()));
    assert_eq!(tok.decode(&literal), "a</s>b");
}

/// The exported `tokenizer.json`, loaded back through the `tokenizers`
/// crate, tokenizes ordinary text as the GGUF tokenizer does.
#[test]
fn exported_tokenizer_json_round_trips() {
    let texts = [
        "Hello, world! How are you today?",
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
        "Numbers 1234567 and naïve café, y'all.",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
    ];
    for rel in [
        SMOLLM2,
        "llama-vocab/ggml-vocab-llama-bpe.gguf",
        "llama-vocab/ggml-vocab-llama-spm.gguf",
    ] {
        let tok = load(rel);
        let json = tok.to_json_string().unwrap();
        let back = Tokenizer::from_json_bytes(json.as_bytes(), None).unwrap();
        assert_eq!(back.add_bos_default(), tok.add_bos_default(), "{rel}");
        assert_eq!(
            back.bos_id(),
            tok.bos_id().filter(|_| tok.add_bos_default()),
            "{rel}"
        );
        for t in texts {
            for special in [false, true] {
                assert_eq!(
                    back.encode(t, false, special).unwrap(),
                    tok.encode(t, false, special).unwrap(),
                    "{rel}: {t:?} special {special}"
                );
            }
        }
    }
}
