//! A record to complete (`main-score generate`): a `prompt` string, asked
//! as one user message, or OpenAI chat `messages` ending where the
//! assistant speaks next; rendered with the model's chat template and its
//! generation prompt, so the model is asked in the format it was trained on.

use serde_json::{Map, Value};

use crate::conversation::{Message, Role, MAX_MESSAGES};
use crate::error::Result;
use crate::pairs::{kind, message, required_str, RecordError, OPENAI};
use crate::template::ChatTemplate;

/// What a record asks the model to continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// `prompt`: one user message.
    Text(String),
    /// `messages`: a conversation whose next message is the assistant's.
    Messages(Vec<Message>),
}

impl Prompt {
    /// The prompt in `record` (`messages` first, as the scorer's readers
    /// detect formats, then `prompt`); `line` (1-based) is for errors.
    pub fn of_record(record: &Map<String, Value>, line: usize) -> Result<Prompt, RecordError> {
        let err = |reason: String| RecordError { line, reason };
        if let Some(items) = record.get("messages") {
            let Value::Array(items) = items else {
                return Err(err(format!(
                    "field 'messages' is not an array (found {})",
                    kind(items)
                )));
            };
            if items.is_empty() || items.len() > MAX_MESSAGES {
                return Err(err(format!(
                    "'messages' holds {} messages (1 to {MAX_MESSAGES} are taken)",
                    items.len()
                )));
            }
            let messages = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    message(item, &OPENAI).map_err(|e| err(format!("messages[{i}]: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let last = messages.len() - 1;
            if matches!(messages[last].role, Role::Assistant | Role::ToolCall) {
                return Err(err(format!(
                    "messages[{last}] is the assistant's: the last message must be the one the assistant answers"
                )));
            }
            if !messages.iter().any(|m| m.role == Role::User) {
                return Err(err("'messages' holds no user message".into()));
            }
            return Ok(Prompt::Messages(messages));
        }
        if record.contains_key("prompt") {
            return required_str(record, "prompt")
                .map(|p| Prompt::Text(p.to_string()))
                .map_err(err);
        }
        let keys: Vec<&str> = record.keys().map(String::as_str).collect();
        Err(err(format!(
            "nothing to complete: expected 'prompt' (a string) or 'messages' (chat), found keys {keys:?}"
        )))
    }

    /// The text the model continues: the template with these messages and
    /// the generation prompt.
    pub fn render(&self, template: &ChatTemplate) -> Result<String> {
        match self {
            Prompt::Text(p) => template.render_prompt(p),
            Prompt::Messages(m) => {
                let rendered: Vec<(&str, &str)> = m.iter().map(Message::rendered).collect();
                template.render(&rendered, true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str) -> Result<Prompt, RecordError> {
        let record: Map<String, Value> = serde_json::from_str(text).unwrap();
        Prompt::of_record(&record, 3)
    }

    #[test]
    fn prompts_and_messages_and_what_is_refused() {
        assert_eq!(
            of(r#"{"prompt":"Hi","id":1}"#).unwrap(),
            Prompt::Text("Hi".into())
        );
        let m = of(r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}]}"#).unwrap();
        assert_eq!(
            m,
            Prompt::Messages(vec![
                Message::new(Role::System, "Be brief."),
                Message::new(Role::User, "Hi")
            ])
        );
        for (bad, says) in [
            (r#"{"prompt":3}"#, "not a string"),
            (r#"{"messages":[]}"#, "0 messages"),
            (r#"{"messages":"hi"}"#, "not an array"),
            (
                r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#,
                "messages[1] is the assistant's",
            ),
            (
                r#"{"messages":[{"role":"system","content":"a"}]}"#,
                "no user message",
            ),
            (
                r#"{"messages":[{"role":"robot","content":"a"}]}"#,
                "messages[0]: unknown role",
            ),
            (r#"{"instruction":"a"}"#, "nothing to complete"),
        ] {
            let e = of(bad).unwrap_err();
            assert_eq!(e.line, 3);
            assert!(e.reason.contains(says), "{bad}: {}", e.reason);
        }
    }
}
