//! The pairs behind the numbers: for chosen percentiles of one score, the
//! sampled record whose value is nearest that percentile, with its texts
//! (cut to a few hundred characters) and, with `--tokens`, the per-token
//! pmi of its response for a heat map.

use serde::Serialize;

/// A text cut to at most `max_chars` characters (with "…" when cut) and
/// its length in characters.
pub fn cut(text: &str, max_chars: usize) -> (String, usize) {
    let n = text.chars().count();
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => (format!("{}…", &text[..i]), n),
        None => (text.to_string(), n),
    }
}

/// What a sampled record keeps to be shown as an example.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Shown {
    /// The turn shown, for a conversation (its weakest).
    pub turn: Option<usize>,
    /// Turns of the conversation (1 for a pair).
    pub n_turns: usize,
    pub instruction: String,
    /// Characters of the whole instruction.
    pub instruction_chars: usize,
    pub response: String,
    pub response_chars: usize,
    /// The response's tokens and their pmi (nats), at most
    /// `ReportParams::example_tokens`; `None` without `--tokens`.
    pub tokens: Option<Vec<(String, f64)>>,
    /// The record had more tokens than are listed.
    pub tokens_cut: bool,
}

/// One example (JSON: `{"percentile", "target", "line", "value", "kept",
/// "scores": {field: value}, ...Shown}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Example {
    pub percentile: f64,
    /// The percentile's value over all records (or the exact cap's sample).
    pub target: f64,
    pub line: u64,
    /// The example's own value of the field.
    pub value: f64,
    pub kept: Option<bool>,
    pub scores: std::collections::BTreeMap<String, f64>,
    #[serde(flatten)]
    pub shown: Shown,
}

/// The index among `values` (NaN left out) nearest `target`; ties: the first.
pub fn nearest(values: impl Iterator<Item = f64>, target: f64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in values.enumerate() {
        if v.is_nan() {
            continue;
        }
        let d = (v - target).abs();
        if best.is_none_or(|(_, b)| d < b) {
            best = Some((i, d));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_characters() {
        assert_eq!(cut("héllo", 3), ("hél…".to_string(), 5));
        assert_eq!(cut("hé", 3), ("hé".to_string(), 2));
    }

    #[test]
    fn nearest_skips_nan_and_keeps_the_first_tie() {
        let v = [f64::NAN, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(nearest(v.iter().copied(), 2.5), Some(2));
        assert_eq!(nearest(v.iter().copied(), 0.0), Some(1));
        assert_eq!(nearest([f64::NAN].into_iter(), 0.0), None);
    }
}
