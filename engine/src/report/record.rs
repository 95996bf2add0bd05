//! One scored record as the report reads it: the numbers of its
//! `"alignment"` object, its per-turn scores, and its texts.

use serde_json::{Map, Value};

use crate::pairs::{self, Format, Sample};
use crate::score::SCORE_FIELDS;

/// Numbers per record: one per [`SCORE_FIELDS`] entry.
pub const N_FIELDS: usize = SCORE_FIELDS.len();

/// The index of `field` in [`SCORE_FIELDS`].
pub fn field_index(field: &str) -> Option<usize> {
    SCORE_FIELDS.iter().position(|f| *f == field)
}

/// One turn of a conversation: its number (from 1) and its numbers.
#[derive(Clone, Debug)]
pub struct TurnScores {
    pub turn: usize,
    pub values: [f64; N_FIELDS],
}

/// A parsed scored record.
pub struct ScoredLine {
    /// The record's input line (`"line"` of its object), else its line here.
    pub line: u64,
    /// Its numbers (a conversation: its weakest turn's), NaN where absent or null.
    pub values: [f64; N_FIELDS],
    pub truncated: bool,
    /// A conversation's turns (empty for a pair).
    pub turns: Vec<TurnScores>,
    /// For a conversation, the turn `values` are of (from 1).
    pub weakest_turn: Option<usize>,
    /// Every message of the record: `(user, assistant)` per scored turn
    /// (one for a pair). Empty when the texts are not in a known layout.
    pub exchanges: Vec<(String, String)>,
    /// Per-token detail of the response (`--tokens`): (piece, pmi).
    pub response_tokens: Option<Vec<(String, f64)>>,
}

fn values_of(object: &Map<String, Value>) -> [f64; N_FIELDS] {
    let mut v = [f64::NAN; N_FIELDS];
    for (slot, name) in v.iter_mut().zip(SCORE_FIELDS) {
        if let Some(x) = object.get(*name).and_then(Value::as_f64) {
            *slot = x;
        }
    }
    v
}

impl ScoredLine {
    /// Parses `text`, line `line_no` (1-based); the error is the reason only.
    pub fn parse(text: &str, line_no: usize) -> Result<ScoredLine, String> {
        let mut record: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("not a JSON object".into()),
            Err(e) if e.is_eof() => {
                return Err(format!(
                    "the JSON ends early ({e}): the line is cut short (a truncated file?)"
                ))
            }
            Err(e) => return Err(format!("invalid JSON ({e})")),
        };
        let Some(Value::Object(alignment)) = record.remove("alignment") else {
            return Err("no \"alignment\" object: not a record written by `main-score score` (score the file first)".into());
        };
        let values = values_of(&alignment);
        let turns: Vec<TurnScores> = match alignment.get("turns") {
            Some(Value::Array(turns)) => turns
                .iter()
                .enumerate()
                .filter_map(|(k, t)| {
                    let t = t.as_object()?;
                    let turn = t
                        .get("turn")
                        .and_then(Value::as_u64)
                        .map_or(k + 1, |n| n as usize);
                    Some(TurnScores {
                        turn,
                        values: values_of(t),
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        // The weakest turn: the first whose alignment is the record's.
        let weakest_turn = (!turns.is_empty()).then(|| {
            turns
                .iter()
                .find(|t| t.values[0].to_bits() == values[0].to_bits())
                .map_or(turns[0].turn, |t| t.turn)
        });
        let exchanges = match pairs::parse_sample(&record, line_no, &Format::Auto) {
            Ok(Sample::Pair(p)) => vec![(p.instruction, p.response)],
            Ok(Sample::Conversation(c)) => c
                .turns()
                .map(|t| (t.user.to_string(), t.assistant.to_string()))
                .collect(),
            Err(_) => Vec::new(),
        };
        let response_tokens = match alignment.get("response_detail") {
            Some(Value::Array(tokens)) => Some(
                tokens
                    .iter()
                    .map(|t| {
                        let text = t.get("text").and_then(Value::as_str).unwrap_or("");
                        let pmi = t.get("pmi").and_then(Value::as_f64).unwrap_or(f64::NAN);
                        (text.to_string(), pmi)
                    })
                    .collect(),
            ),
            _ => None,
        };
        Ok(ScoredLine {
            line: alignment
                .get("line")
                .and_then(Value::as_u64)
                .unwrap_or(line_no as u64),
            values,
            truncated: alignment.get("truncated").and_then(Value::as_bool) == Some(true),
            turns,
            weakest_turn,
            exchanges,
            response_tokens,
        })
    }

    /// The exchange the record's numbers are of: the pair, or the weakest turn.
    pub fn shown_exchange(&self) -> Option<&(String, String)> {
        let k = self.weakest_turn.unwrap_or(1);
        self.exchanges.get(k - 1).or(self.exchanges.first())
    }
}
