//! Reading instruction/response pairs and conversations out of JSONL
//! records (DESIGN.md §2, §5).
//!
//! Four layouts are recognised by their keys, per record: OpenAI chat
//! `messages` (`role`/`content`, the content a string or a list of text
//! parts), ShareGPT `conversations` (`from`/`value`, `from` one of `system`,
//! `human`, `gpt`, `function_call`, `observation`), Alpaca (`instruction`,
//! optional `input`, `output`) and `prompt`/`response`. The first two are
//! [`Sample::Conversation`]s, every assistant turn scored; the last two are
//! [`Sample::Pair`]s. A data set with other names picks its pair fields
//! explicitly with [`Format::Fields`].
//!
//! Errors carry the 1-based line number, as editors and `sed -n Np` count,
//! and for a conversation the message (0-based, as in the JSON array) and
//! the turn (1-based, counting assistant turns).

use std::fmt;

use serde_json::{Map, Value};

use crate::conversation::{Conversation, Message, Role, MAX_MESSAGES};
use crate::score::Pair;

/// How a record's fields map onto a [`Pair`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Decide per record from its keys: `messages`, then `conversations`,
    /// then `instruction`, then `prompt`.
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

/// What one record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sample {
    /// Alpaca or `prompt`/`response` (or named fields): one pair, scored as
    /// DESIGN.md §2's four views.
    Pair(Pair),
    /// `messages` or `conversations`: every assistant turn scored with its history.
    Conversation(Conversation),
}

/// Parses one JSONL line into its JSON object and the sample it holds.
/// `line` is the 1-based line number, used only in errors.
pub fn parse_sample_line(
    text: &str,
    line: usize,
    format: &Format,
) -> Result<(Map<String, Value>, Sample), RecordError> {
    let record = parse_object(text, line)?;
    let sample = parse_sample(&record, line, format)?;
    Ok((record, sample))
}

/// Extracts the sample from an already parsed record.
pub fn parse_sample(
    record: &Map<String, Value>,
    line: usize,
    format: &Format,
) -> Result<Sample, RecordError> {
    let err = |reason: String| RecordError { line, reason };
    match format {
        Format::Auto if record.contains_key("messages") => {
            conversation(record, "messages", &OPENAI).map(Sample::Conversation)
        }
        Format::Auto if record.contains_key("conversations") => {
            conversation(record, "conversations", &SHAREGPT).map(Sample::Conversation)
        }
        _ => pair_of(record, format).map(Sample::Pair),
    }
    .map_err(err)
}

/// Parses one JSONL line into its JSON object and the pair it holds, for
/// readers that take single pairs (the trainer, the annotation tool). A
/// conversation is accepted when it is one user and one assistant message,
/// after an optional system message, which a pair leaves out (its views
/// have one user message, DESIGN.md §2); any other is refused, never cut
/// to its first turn.
pub fn parse_line(
    text: &str,
    line: usize,
    format: &Format,
) -> Result<(Map<String, Value>, Pair), RecordError> {
    let record = parse_object(text, line)?;
    let pair = parse_record(&record, line, format)?;
    Ok((record, pair))
}

/// [`parse_line`] on an already parsed record.
pub fn parse_record(
    record: &Map<String, Value>,
    line: usize,
    format: &Format,
) -> Result<Pair, RecordError> {
    match parse_sample(record, line, format)? {
        Sample::Pair(p) => Ok(p),
        Sample::Conversation(c) => match c.messages() {
            [.., u, a]
                if c.n_turns() == 1
                    && c.messages().len() <= 3
                    && u.role == Role::User
                    && a.role == Role::Assistant =>
            {
                Ok(Pair::new(u.content.clone(), a.content.clone()))
            }
            m => Err(RecordError {
                line,
                reason: format!(
                    "a conversation of {} messages ({} assistant turns): this reader takes one \
                     user and one assistant message; `main-score score` scores every turn",
                    m.len(),
                    c.n_turns()
                ),
            }),
        },
    }
}

fn parse_object(text: &str, line: usize) -> Result<Map<String, Value>, RecordError> {
    let err = |reason: String| RecordError { line, reason };
    let value: Value = serde_json::from_str(text).map_err(|e| err(format!("invalid JSON: {e}")))?;
    match value {
        Value::Object(record) => Ok(record),
        other => Err(err(format!("not a JSON object (found {})", kind(&other)))),
    }
}

/// The pair of an Alpaca, `prompt`/`response` or named-fields record.
fn pair_of(record: &Map<String, Value>, format: &Format) -> Result<Pair, String> {
    match format {
        Format::Fields {
            instruction,
            response,
            input,
        } => {
            let x = required_str(record, instruction)?;
            let input = match input {
                Some(name) => optional_str(record, name)?,
                None => "",
            };
            let y = required_str(record, response)?;
            Ok(Pair::from_alpaca(x, input, y))
        }
        Format::Auto if record.contains_key("instruction") => {
            let x = required_str(record, "instruction")?;
            let input = optional_str(record, "input")?;
            let y = required_str(record, "output")?;
            Ok(Pair::from_alpaca(x, input, y))
        }
        Format::Auto if record.contains_key("prompt") => {
            let x = required_str(record, "prompt")?;
            let y = required_str(record, "response")?;
            Ok(Pair::new(x, y))
        }
        Format::Auto => {
            let keys: Vec<&str> = record.keys().map(String::as_str).collect();
            Err(format!(
                "no known format: expected 'instruction'/'output' (Alpaca), 'prompt'/'response', \
                 'messages' or 'conversations', found keys {keys:?}"
            ))
        }
    }
}

/// The key names and role names of a conversation layout.
pub(crate) struct Layout {
    role_key: &'static str,
    content_key: &'static str,
    /// `(name in the data, role)`.
    roles: &'static [(&'static str, Role)],
    /// OpenAI: an assistant message with `tool_calls` is a tool call.
    tool_calls: bool,
}

pub(crate) const OPENAI: Layout = Layout {
    role_key: "role",
    content_key: "content",
    roles: &[
        ("system", Role::System),
        ("user", Role::User),
        ("assistant", Role::Assistant),
        ("tool", Role::Tool),
        ("function", Role::Tool),
    ],
    tool_calls: true,
};

/// ShareGPT as LLaMA-Factory reads it (its `sharegpt` formatting's tags).
const SHAREGPT: Layout = Layout {
    role_key: "from",
    content_key: "value",
    roles: &[
        ("system", Role::System),
        ("human", Role::User),
        ("gpt", Role::Assistant),
        ("function_call", Role::ToolCall),
        ("observation", Role::Tool),
    ],
    tool_calls: false,
};

/// The conversation in `record[field]`, checked (see [`Conversation::new`]).
fn conversation(
    record: &Map<String, Value>,
    field: &str,
    layout: &Layout,
) -> Result<Conversation, String> {
    let items = match &record[field] {
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "field '{field}' is not an array (found {})",
                kind(other)
            ))
        }
    };
    // Checked before the messages are read: a runaway record costs nothing.
    if items.len() > MAX_MESSAGES {
        return Err(format!(
            "{field}[{MAX_MESSAGES}]: {} messages, over the limit of {MAX_MESSAGES} for one conversation",
            items.len()
        ));
    }
    let mut messages = Vec::with_capacity(items.len());
    let mut turn = 1;
    for (i, item) in items.iter().enumerate() {
        let at = |reason: String| format!("{field}[{i}] (turn {turn}): {reason}");
        let m = message(item, layout).map_err(at)?;
        if m.role == Role::Assistant {
            turn += 1;
        }
        messages.push(m);
    }
    Conversation::new(messages)
        .map_err(|e| format!("{field}[{}] (turn {}): {}", e.message, e.turn, e.reason))
}

pub(crate) fn message(item: &Value, layout: &Layout) -> Result<Message, String> {
    let Value::Object(m) = item else {
        return Err(format!("not an object (found {})", kind(item)));
    };
    let name = required_str(m, layout.role_key)?;
    let Some(&(_, mut role)) = layout.roles.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = layout.roles.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "unknown role '{name}' in '{}' (expected one of {known:?})",
            layout.role_key
        ));
    };
    let calls = m.get("tool_calls").filter(|v| !v.is_null());
    if layout.tool_calls && role == Role::Assistant && calls.is_some() {
        role = Role::ToolCall;
    }
    let key = layout.content_key;
    let content = match (m.get(key), calls) {
        (Some(Value::String(s)), _) => s.clone(),
        (Some(Value::Array(parts)), _) => text_parts(key, parts)?,
        // OpenAI leaves the content of a tool call null: the call itself
        // is the text the next turns were conditioned on.
        (None | Some(Value::Null), Some(calls)) if role == Role::ToolCall => calls.to_string(),
        (None, _) => return Err(format!("missing field '{key}'")),
        (Some(other), _) => {
            return Err(format!(
                "field '{key}' is not a string or a list of text parts (found {})",
                kind(other)
            ))
        }
    };
    Ok(Message::new(role, content))
}

/// OpenAI's list of content parts, text parts only, joined as one text
/// (the parts are pieces of one message).
fn text_parts(key: &str, parts: &[Value]) -> Result<String, String> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let Value::Object(p) = part else {
            return Err(format!(
                "{key}[{j}] is not an object (found {})",
                kind(part)
            ));
        };
        match p.get("type") {
            Some(Value::String(t)) if t == "text" => {}
            Some(Value::String(t)) => {
                return Err(format!(
                    "{key}[{j}] is a '{t}' part: only text parts can be scored"
                ))
            }
            _ => return Err(format!("{key}[{j}]: missing or non-string 'type'")),
        }
        text.push_str(required_str(p, "text").map_err(|e| format!("{key}[{j}]: {e}"))?);
    }
    Ok(text)
}

pub(crate) fn required_str<'a>(
    record: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a str, String> {
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

pub(crate) fn kind(v: &Value) -> &'static str {
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

    fn sample(text: &str) -> Sample {
        parse_sample_line(text, 7, &Format::Auto).unwrap().1
    }

    fn sample_reason(text: &str) -> String {
        let e = parse_sample_line(text, 7, &Format::Auto).unwrap_err();
        assert_eq!(e.line, 7);
        e.reason
    }

    /// A turn as owned text: (history as (role, content), user, context
    /// messages, assistant).
    type OwnedTurn = (Vec<(String, String)>, String, usize, String);

    fn turns(c: &Sample) -> Vec<OwnedTurn> {
        let Sample::Conversation(c) = c else {
            panic!("not a conversation: {c:?}")
        };
        c.turns()
            .map(|t| {
                let h = t
                    .history
                    .iter()
                    .map(|m| (m.role.template_role().to_string(), m.content.clone()))
                    .collect();
                (
                    h,
                    t.user.to_string(),
                    t.context.len(),
                    t.assistant.to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn openai_messages_every_turn_with_history() {
        let text = r#"{"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}]},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And Spain?"},
            {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "content": "Madrid"},
            {"role": "assistant", "content": "Madrid."}
        ]}"#;
        let t = turns(&sample(text));
        assert_eq!(t.len(), 2);
        let sys = ("system".to_string(), "Be brief.".to_string());
        assert_eq!(
            t[0],
            (
                vec![sys.clone()],
                "Capital of France?".into(),
                0,
                "Paris.".into()
            )
        );
        assert_eq!(t[1].0.len(), 3);
        assert_eq!(
            (t[1].1.as_str(), t[1].2, t[1].3.as_str()),
            ("And Spain?", 2, "Madrid.")
        );
        // The tool call's text is the call itself, as the next turns saw it.
        let Sample::Conversation(c) = sample(text) else {
            unreachable!()
        };
        assert_eq!(c.messages()[4].role, Role::ToolCall);
        assert!(c.messages()[4].content.contains("\"lookup\""));
        // A pair reader refuses the conversation rather than keep its first turn.
        assert!(
            reason(text).contains("7 messages (2 assistant turns)"),
            "{}",
            reason(text)
        );
    }

    #[test]
    fn sharegpt_conversations() {
        let text = r#"{"conversations": [
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "function_call", "value": "{\"name\": \"weather\"}"},
            {"from": "observation", "value": "{\"temp\": 21}"},
            {"from": "gpt", "value": "21 degrees."},
            {"from": "human", "value": "Thanks."},
            {"from": "gpt", "value": "You are welcome."}
        ], "tools": "[]"}"#;
        let t = turns(&sample(text));
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].2, t[0].3.as_str()), (2, "21 degrees."));
        let roles: Vec<&str> = t[1].0.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    }

    #[test]
    fn single_turn_messages_are_still_a_pair_for_pair_readers() {
        let text = r#"{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}"#;
        assert_eq!(auto(text).unwrap(), Pair::new("Q", "A"));
        let system = r#"{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}"#;
        assert_eq!(auto(system).unwrap(), Pair::new("Q", "A"));
        let tool = r#"{"conversations": [{"from": "human", "value": "Q"}, {"from": "observation", "value": "O"}, {"from": "gpt", "value": "A"}]}"#;
        assert!(
            reason(tool).contains("3 messages (1 assistant turns)"),
            "{}",
            reason(tool)
        );
        // ...and a conversation of one turn for the job.
        assert_eq!(turns(&sample(text)).len(), 1);
        let alpaca = r#"{"instruction": "I", "output": "O"}"#;
        assert_eq!(sample(alpaca), Sample::Pair(Pair::new("I", "O")));
    }

    #[test]
    fn malformed_conversations_name_record_message_and_turn() {
        let m = |v: &str| format!(r#"{{"messages": [{v}]}}"#);
        let (u, a) = (
            r#"{"role": "user", "content": "Q"}"#,
            r#"{"role": "assistant", "content": "A"}"#,
        );
        assert_eq!(
            sample_reason(&m(u)),
            "messages[0] (turn 1): the last user message has no assistant answer"
        );
        assert_eq!(
            sample_reason(&m(r#"{"role": "system", "content": "S"}"#)),
            "messages[0] (turn 1): no assistant turn"
        );
        assert_eq!(
            sample_reason(&m(&format!("{u}, {a}, {a}"))),
            "messages[2] (turn 2): an assistant message where a user message is expected (roles out of order)"
        );
        assert_eq!(
            sample_reason(&m(&format!("{u}, {a}, {u}, {u}, {a}"))),
            "messages[3] (turn 2): a user message where an assistant message is expected: message 2 is not answered (roles out of order)"
        );
        assert_eq!(
            sample_reason(&m(&format!(
                r#"{u}, {a}, {{"role": "user", "content": [{{"type": "image_url", "image_url": {{"url": "x"}}}}]}}, {a}"#
            ))),
            "messages[2] (turn 2): content[0] is a 'image_url' part: only text parts can be scored"
        );
        assert_eq!(
            sample_reason(&m(&format!(
                r#"{u}, {{"role": "assistant", "content": ""}}"#
            ))),
            "messages[1] (turn 1): empty content in an assistant message"
        );
        assert_eq!(
            sample_reason(&m(&format!(r#"{u}, {{"role": "robot", "content": "A"}}"#))),
            "messages[1] (turn 1): unknown role 'robot' in 'role' (expected one of [\"system\", \"user\", \"assistant\", \"tool\", \"function\"])"
        );
        assert_eq!(
            sample_reason(&m(&format!(r#"{u}, {{"role": "assistant", "content": null}}"#))),
            "messages[1] (turn 1): field 'content' is not a string or a list of text parts (found null)"
        );
        let long = vec![format!("{u}, {a}"); 5_000].join(", ");
        assert_eq!(
            sample_reason(&m(&long)),
            "messages[1024]: 10000 messages, over the limit of 1024 for one conversation"
        );
        assert_eq!(
            sample_reason(r#"{"conversations": [{"from": "gpt", "value": "A"}]}"#),
            "conversations[0] (turn 1): an assistant message where a user message is expected (roles out of order)"
        );
        assert_eq!(
            sample_reason(r#"{"conversations": [{"from": "human"}]}"#),
            "conversations[0] (turn 1): missing field 'value'"
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
            reason(r#"{"messages": [3]}"#),
            "messages[0] (turn 1): not an object (found a number)"
        );
        assert_eq!(
            reason(r#"{"messages": [{"content": "Q"}]}"#),
            "messages[0] (turn 1): missing field 'role'"
        );
    }
}
