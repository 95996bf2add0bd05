//! Reading instruction/response pairs out of JSONL records (DESIGN.md §5).
//!
//! Three layouts are recognised by their keys: Alpaca (`instruction`, optional
//! `input`, `output`), `prompt`/`response`, and chat `messages` (the first user
//! turn and the first assistant turn after it). A data set with other names
//! picks its fields explicitly with [`Format::Fields`].
//!
//! Errors carry the 1-based line number, as editors and `sed -n Np` count.

use std::fmt;

use serde_json::{Map, Value};

use crate::score::Pair;

/// How a record's fields map onto a [`Pair`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Decide per record from its keys: `messages`, then `instruction`, then `prompt`.
    #[default]
    Auto,
    /// Named fields; `input`, when given, is appended to the instruction the
    /// Alpaca way and may be absent or null in a record.
    Fields {
        instruction: String,
        response: String,
        input: Option<String>,
    },
}

/// Why one input line is not a usable pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// 1-based line number in the input.
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for RecordError {}

/// Parses one JSONL line into its JSON object and the pair it holds.
/// `line` is the 1-based line number, used only in errors.
pub fn parse_line(
    text: &str,
    line: usize,
    format: &Format,
) -> Result<(Map<String, Value>, Pair), RecordError> {
    let err = |reason: String| RecordError { line, reason };
    let value: Value = serde_json::from_str(text).map_err(|e| err(format!("invalid JSON: {e}")))?;
    let Value::Object(record) = value else {
        return Err(err(format!("not a JSON object (found {})", kind(&value))));
    };
    let pair = parse_record(&record, line, format)?;
    Ok((record, pair))
}

/// Extracts the pair from an already parsed record.
pub fn parse_record(
    record: &Map<String, Value>,
    line: usize,
    format: &Format,
) -> Result<Pair, RecordError> {
    let err = |reason: String| RecordError { line, reason };
    match format {
        Format::Fields {
            instruction,
            response,
            input,
        } => {
            let x = required_str(record, instruction).map_err(err)?;
            let input = match input {
                Some(name) => optional_str(record, name).map_err(err)?,
                None => "",
            };
            let y = required_str(record, response).map_err(err)?;
            Ok(Pair::from_alpaca(x, input, y))
        }
        Format::Auto if record.contains_key("messages") => messages(record).map_err(err),
        Format::Auto if record.contains_key("instruction") => {
            let x = required_str(record, "instruction").map_err(err)?;
            let input = optional_str(record, "input").map_err(err)?;
            let y = required_str(record, "output").map_err(err)?;
            Ok(Pair::from_alpaca(x, input, y))
        }
        Format::Auto if record.contains_key("prompt") => {
            let x = required_str(record, "prompt").map_err(err)?;
            let y = required_str(record, "response").map_err(err)?;
            Ok(Pair::new(x, y))
        }
        Format::Auto => {
            let keys: Vec<&str> = record.keys().map(String::as_str).collect();
            Err(err(format!(
                "no known format: expected 'instruction'/'output' (Alpaca), 'prompt'/'response' or 'messages', found keys {keys:?}"
            )))
        }
    }
}

fn required_str<'a>(record: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match record.get(key) {
        None => Err(format!("missing field '{key}'")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "field '{key}' is not a string (found {})",
            kind(other)
        )),
    }
}

/// Alpaca writes an empty or absent `input` for instructions that need none.
fn optional_str<'a>(record: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match record.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "field '{key}' is not a string (found {})",
            kind(other)
        )),
    }
}

/// The first user turn and the first assistant turn after it. System turns
/// are left out: the views of DESIGN §2 have a single user message, so a pair
/// means the same whatever system prompt the data set was collected with.
fn messages(record: &Map<String, Value>) -> Result<Pair, String> {
    let turns = match &record["messages"] {
        Value::Array(turns) => turns,
        other => {
            return Err(format!(
                "field 'messages' is not an array (found {})",
                kind(other)
            ))
        }
    };
    let mut user: Option<&str> = None;
    for (i, turn) in turns.iter().enumerate() {
        let Value::Object(turn) = turn else {
            return Err(format!(
                "messages[{i}] is not an object (found {})",
                kind(turn)
            ));
        };
        let role = required_str(turn, "role").map_err(|e| format!("messages[{i}]: {e}"))?;
        match (role, user) {
            ("user", None) => {
                user =
                    Some(required_str(turn, "content").map_err(|e| format!("messages[{i}]: {e}"))?)
            }
            ("assistant", Some(x)) => {
                let y = required_str(turn, "content").map_err(|e| format!("messages[{i}]: {e}"))?;
                return Ok(Pair::new(x, y));
            }
            _ => {}
        }
    }
    Err(match user {
        None => "messages: no user turn".to_string(),
        Some(_) => "messages: no assistant turn after the first user turn".to_string(),
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(text: &str) -> Result<Pair, RecordError> {
        parse_line(text, 7, &Format::Auto).map(|(_, p)| p)
    }

    fn reason(text: &str) -> String {
        let e = auto(text).unwrap_err();
        assert_eq!(e.line, 7);
        assert!(e.to_string().starts_with("line 7: "), "{e}");
        e.reason
    }

    #[test]
    fn alpaca_with_and_without_input() {
        let p = auto(r#"{"instruction": "Sum these.", "input": "2 3", "output": "5"}"#).unwrap();
        assert_eq!(p, Pair::new("Sum these.\n\n2 3", "5"));
        let p = auto(r#"{"instruction": "Say hi.", "input": "", "output": "Hi"}"#).unwrap();
        assert_eq!(p, Pair::new("Say hi.", "Hi"));
        let p = auto(r#"{"instruction": "Say hi.", "output": "Hi"}"#).unwrap();
        assert_eq!(p, Pair::new("Say hi.", "Hi"));
        let p = auto(r#"{"instruction": "Say hi.", "input": null, "output": "Hi"}"#).unwrap();
        assert_eq!(p, Pair::new("Say hi.", "Hi"));
    }

    #[test]
    fn prompt_response() {
        let p = auto(r#"{"id": 3, "prompt": "Why?", "response": "Because."}"#).unwrap();
        assert_eq!(p, Pair::new("Why?", "Because."));
    }

    #[test]
    fn messages_take_first_user_then_first_assistant_after_it() {
        let text = r#"{"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "assistant", "content": "Hello, how can I help?"},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And Spain?"},
            {"role": "assistant", "content": "Madrid."}
        ]}"#;
        assert_eq!(
            auto(text).unwrap(),
            Pair::new("Capital of France?", "Paris.")
        );
    }

    #[test]
    fn named_fields() {
        let f = Format::Fields {
            instruction: "question".into(),
            response: "answer".into(),
            input: Some("context".into()),
        };
        let (_, p) =
            parse_line(r#"{"question": "Q", "context": "C", "answer": "A"}"#, 1, &f).unwrap();
        assert_eq!(p, Pair::new("Q\n\nC", "A"));
        let (_, p) = parse_line(r#"{"question": "Q", "answer": "A"}"#, 1, &f).unwrap();
        assert_eq!(p, Pair::new("Q", "A"));
        // Named fields win over auto-detection even when Alpaca keys are present.
        let f = Format::Fields {
            instruction: "q".into(),
            response: "a".into(),
            input: None,
        };
        let (_, p) = parse_line(
            r#"{"instruction": "I", "output": "O", "q": "Q", "a": "A"}"#,
            1,
            &f,
        )
        .unwrap();
        assert_eq!(p, Pair::new("Q", "A"));
        let e = parse_line(r#"{"q": "Q"}"#, 4, &f).unwrap_err();
        assert_eq!(e.to_string(), "line 4: missing field 'a'");
    }

    #[test]
    fn the_whole_record_comes_back() {
        let (record, _) = parse_line(
            r#"{"z": 1, "prompt": "p", "response": "r"}"#,
            1,
            &Format::Auto,
        )
        .unwrap();
        assert_eq!(record.len(), 3);
        assert_eq!(record["z"], 1);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(reason("{\"instruction\": ").starts_with("invalid JSON"));
        assert_eq!(reason("[1, 2]"), "not a JSON object (found an array)");
        assert_eq!(reason("\"text\""), "not a JSON object (found a string)");
        assert_eq!(reason(r#"{"instruction": "I"}"#), "missing field 'output'");
        assert_eq!(
            reason(r#"{"instruction": "I", "output": 5}"#),
            "field 'output' is not a string (found a number)"
        );
        assert_eq!(
            reason(r#"{"instruction": "I", "input": [], "output": "O"}"#),
            "field 'input' is not a string (found an array)"
        );
        assert_eq!(reason(r#"{"prompt": "P"}"#), "missing field 'response'");
        assert!(
            reason(r#"{"text": "T"}"#).starts_with("no known format"),
            "names the formats"
        );
        assert!(
            reason(r#"{"text": "T"}"#).contains("[\"text\"]"),
            "lists the keys found"
        );
        assert_eq!(
            reason(r#"{"messages": "hi"}"#),
            "field 'messages' is not an array (found a string)"
        );
        assert_eq!(
            reason(r#"{"messages": [{"role": "user", "content": "Q"}]}"#),
            "messages: no assistant turn after the first user turn"
        );
        assert_eq!(
            reason(r#"{"messages": [{"role": "assistant", "content": "A"}]}"#),
            "messages: no user turn"
        );
        assert_eq!(
            reason(r#"{"messages": [3]}"#),
            "messages[0] is not an object (found a number)"
        );
        assert_eq!(
            reason(
                r#"{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": null}]}"#
            ),
            "messages[1]: field 'content' is not a string (found null)"
        );
        assert_eq!(
            reason(r#"{"messages": [{"content": "Q"}]}"#),
            "messages[0]: missing field 'role'"
        );
    }
}
