//! Writing a scored record: the input line as it came, with an
//! `"alignment"` object added as its last key (DESIGN.md §3, §5).

use serde::Serialize;

use crate::conversation::weakest;
use crate::error::{Error, Result};
use crate::score::PairScore;

/// The scores of one record: a pair's, or every turn's of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordScore {
    Pair(PairScore),
    /// One score per assistant turn, in order (never empty).
    Conversation(Vec<PairScore>),
}

impl RecordScore {
    /// The record's score as the summary and the filters read it: the pair's,
    /// or the conversation's weakest turn (DESIGN.md §3).
    pub fn overall(&self) -> &PairScore {
        match self {
            RecordScore::Pair(s) => s,
            RecordScore::Conversation(turns) => {
                weakest(turns).expect("a scored conversation has a turn")
            }
        }
    }
}

/// A turn's object in `"turns"`: `{"turn": k, ...the fields of a pair}`.
#[derive(Serialize)]
struct TurnObject<'a> {
    turn: usize,
    #[serde(flatten)]
    score: &'a PairScore,
}

/// Writes `line` with `"alignment": score` added as its last key, the
/// object ending with `"line": line_no`. A conversation's object holds its
/// weakest turn's fields, then `"turns"`, then `"line"`; a pair's is exactly
/// what it always was. The record's own bytes are kept as they are (key
/// order, number spelling, escapes), which re-serializing would not
/// guarantee.
pub fn splice_alignment(
    out: &mut Vec<u8>,
    line: &str,
    line_no: usize,
    score: &RecordScore,
) -> Result<()> {
    let json = |e: serde_json::Error| Error::Input(format!("serializing scores: {e}"));
    let body = line
        .strip_suffix('}')
        .ok_or_else(|| Error::Input(format!("line {line_no}: not a JSON object")))?
        .trim_end();
    out.extend_from_slice(body.as_bytes());
    if !body.ends_with('{') {
        out.push(b',');
    }
    out.extend_from_slice(b"\"alignment\":");
    serde_json::to_writer(&mut *out, score.overall()).map_err(json)?;
    // The score is a JSON object: its closing brace makes room for the rest.
    out.pop();
    if let RecordScore::Conversation(turns) = score {
        out.extend_from_slice(b",\"turns\":[");
        for (k, s) in turns.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            serde_json::to_writer(
                &mut *out,
                &TurnObject {
                    turn: k + 1,
                    score: s,
                },
            )
            .map_err(json)?;
        }
        out.push(b']');
    }
    out.extend_from_slice(format!(",\"line\":{line_no}}}}}\n").as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{pair_score, Combine, ViewLogprobs};

    fn score(fwd_cond: f64) -> PairScore {
        pair_score(
            &ViewLogprobs {
                fwd_cond: &[fwd_cond],
                fwd_uncond: &[-2.0],
                rev_cond: &[-1.0],
                rev_uncond: &[-1.5],
                response_pieces: &["a".into()],
                n_end_of_turn: 0,
            },
            Combine::Min,
            false,
        )
    }

    #[test]
    fn a_pair_gets_the_plain_object_a_conversation_its_turns() {
        let mut out = Vec::new();
        let pair = RecordScore::Pair(score(-1.0));
        splice_alignment(&mut out, r#"{"prompt": "p", "z": 1.50}"#, 3, &pair).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(r#"{"prompt": "p", "z": 1.50,"alignment":{"alignment":0.5,"#));
        assert!(
            text.ends_with(",\"truncated\":false,\"line\":3}}\n"),
            "{text}"
        );

        let mut out = Vec::new();
        let conv = RecordScore::Conversation(vec![score(-1.0), score(-2.5), score(-1.2)]);
        splice_alignment(&mut out, r#"{"messages": []}"#, 9, &conv).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let a = &v["alignment"];
        // The record's fields are its weakest turn's (turn 2: fwd_pmi -0.5).
        assert_eq!(a["alignment"], -0.5);
        assert_eq!(a["fwd_cond"], -2.5);
        assert_eq!(a["line"], 9);
        let turns = a["turns"].as_array().unwrap();
        assert_eq!(turns.len(), 3);
        let RecordScore::Conversation(scores) = &conv else {
            unreachable!()
        };
        let text = String::from_utf8(out).unwrap();
        for (k, (t, s)) in turns.iter().zip(scores).enumerate() {
            // Each turn: "turn", then exactly the text of a pair's object
            // (compared as text: serde_json's parser may round a float's
            // last bit, its writer does not).
            assert_eq!(t["turn"], k + 1);
            let pair = serde_json::to_string(s).unwrap();
            let turn = format!("{{\"turn\":{},{}", k + 1, &pair[1..]);
            assert!(text.contains(&turn), "turn {k}: {turn} in {text}");
        }
        assert_eq!(turns[2]["fwd_cond"], -1.2);
        // "turns" comes after the fields and before "line".
        assert!(text.find("\"turns\"").unwrap() > text.find("\"truncated\"").unwrap());
        assert!(text.ends_with("],\"line\":9}}\n"));
    }
}
