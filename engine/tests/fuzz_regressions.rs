//! Inputs the fuzzers (fuzz/) found to crash, kept in fuzz/regressions/TARGET/
//! in the target's own input layout, replayed through the same entry points:
//! each must now give an error or a result, never a panic.

mod common;

use main_engine::tokenizer::Tokenizer;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = common::repo_file(&format!("fuzz/regressions/{target}"));
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no inputs in {}", dir.display());
    found
}

/// fuzz_targets/hf_tokenizer.rs: u16 LE length L, L bytes of
/// tokenizer_config.json, tokenizer.json up to a 0xFF byte, then the text.
#[test]
fn hf_tokenizer() {
    for (name, bytes) in inputs("hf_tokenizer") {
        let n = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
        let rest = &bytes[2..];
        let (config, rest) = rest.split_at(n.min(rest.len()));
        let config: Option<serde_json::Value> =
            (n > 0).then(|| serde_json::from_slice(config).unwrap());
        let json = rest.split(|&b| b == 0xFF).next().unwrap();
        match Tokenizer::from_json_bytes(json, config.as_ref()) {
            Ok(tok) => {
                let _ = tok.encode("hello", true, true);
            }
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
}

/// fuzz_targets/chat_template.rs: the template up to a 0xFF byte, then the
/// user content.
#[test]
fn chat_template() {
    use main_engine::template::ChatTemplate;
    for (name, bytes) in inputs("chat_template") {
        let mut parts = bytes.splitn(2, |&b| b == 0xFF);
        let source = std::str::from_utf8(parts.next().unwrap()).unwrap();
        let content = String::from_utf8_lossy(parts.next().unwrap_or_default());
        match ChatTemplate::new(Some(source), Some("<s>".into()), Some("</s>".into())) {
            Ok(t) => {
                let _ = t.render_prompt(&content);
            }
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
}
