//! Training data: pairs read from JSONL (Alpaca, prompt/response,
//! messages: the engine's parser), turned into token sequences by the
//! engine's view code (DESIGN.md §2) so that a model is trained on exactly
//! the sequences it is later scored on.

use std::path::Path;

use main_engine::score::Pair;
use main_engine::views::{build_view, reverse_content};

use crate::error::{Error, Result};
use crate::model::TrainModel;

/// Which view a model is trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// instruction -> response (the forward conditional view).
    Forward,
    /// response -> instruction (the reverse conditional view).
    Reverse,
}

impl Direction {
    pub fn parse(s: &str) -> Result<Direction> {
        match s {
            "forward" | "fwd" => Ok(Direction::Forward),
            "reverse" | "rev" => Ok(Direction::Reverse),
            other => Err(Error::invalid(
                "direction",
                format!("'{other}' (expected forward or reverse)"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
        }
    }
}

/// A pair with its loss weight (`"weight"` in the record, default 1).
#[derive(Clone, Debug)]
pub struct WeightedPair {
    pub pair: Pair,
    pub weight: f64,
    /// The pair's PMIs as last scored (the record's `alignment.fwd_pmi` and
    /// `alignment.rev_pmi`, as main-score and the pipeline write them): the
    /// targets of the alignment loss's consistency term.
    pub pmi: Option<PairPmi>,
}

impl WeightedPair {
    pub fn new(pair: Pair, weight: f64) -> WeightedPair {
        WeightedPair {
            pair,
            weight,
            pmi: None,
        }
    }
}

/// Both directions' PMI of a pair, in nats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairPmi {
    pub fwd_pmi: f64,
    pub rev_pmi: f64,
}

impl PairPmi {
    /// The PMI of the direction other than `d`: what `d`'s consistency term
    /// pulls toward.
    pub fn other_than(self, d: Direction) -> f64 {
        match d {
            Direction::Forward => self.rev_pmi,
            Direction::Reverse => self.fwd_pmi,
        }
    }
}

/// One training sequence: prompt then target; the loss covers the target.
#[derive(Clone, Debug)]
pub struct Example {
    pub ids: Vec<u32>,
    pub n_prompt: usize,
    pub weight: f64,
}

impl Example {
    pub fn n_targets(&self) -> usize {
        self.ids.len() - self.n_prompt
    }
}

/// Reads every pair of a JSONL file; a bad record is an error naming its line.
pub fn read_pairs(path: &Path) -> Result<Vec<WeightedPair>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (record, pair) = main_engine::pairs::parse_line(line, i + 1, &Default::default())
            .map_err(|e| Error::Data {
                path: path.to_path_buf(),
                line: e.line,
                reason: e.reason,
            })?;
        let weight = match record.get("weight") {
            None | Some(serde_json::Value::Null) => 1.0,
            Some(v) => match v.as_f64() {
                Some(w) if w >= 0.0 && w.is_finite() => w,
                _ => {
                    return Err(Error::Data {
                        path: path.to_path_buf(),
                        line: i + 1,
                        reason: format!("'weight' must be a number >= 0, found {v}"),
                    })
                }
            },
        };
        // A scored record (main-score, the pipeline's curated file) carries
        // both PMIs; anything else there is not ours to judge.
        let pmi = record.get("alignment").and_then(|a| {
            Some(PairPmi {
                fwd_pmi: a.get("fwd_pmi")?.as_f64()?,
                rev_pmi: a.get("rev_pmi")?.as_f64()?,
            })
        });
        out.push(WeightedPair { pair, weight, pmi });
    }
    if out.is_empty() {
        return Err(Error::Data {
            path: path.to_path_buf(),
            line: 0,
            reason: "no pairs".into(),
        });
    }
    Ok(out)
}

/// Reads the responses of an unlabeled JSONL file: each record's
/// `response`, `output` or `text` field.
pub fn read_responses(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| Error::Data {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let r = ["response", "output", "text"]
            .iter()
            .find_map(|k| v.get(k).and_then(|x| x.as_str()))
            .ok_or_else(|| bad("no string field 'response', 'output' or 'text'".into()))?;
        out.push(r.to_string());
    }
    Ok(out)
}

/// The training sequence of `pair` in `direction`, built by the engine.
pub fn example(
    model: &TrainModel,
    pair: &WeightedPair,
    direction: Direction,
    max_tokens: usize,
) -> Result<Example> {
    let p = &pair.pair;
    let view = match direction {
        Direction::Forward => build_view(
            model.tokenizer(),
            &model.template,
            &p.instruction,
            &p.response,
            max_tokens,
        )?,
        Direction::Reverse => build_view(
            model.tokenizer(),
            &model.template,
            &reverse_content(&p.response),
            &p.instruction,
            max_tokens,
        )?,
    };
    Ok(Example {
        ids: view.ids,
        n_prompt: view.n_prompt,
        weight: pair.weight,
    })
}

/// SplitMix64: the trainer's only randomness (data order, splits); its
/// state is one `u64` that checkpoints store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Splits `n` items into (train, held-out) index lists: a seeded shuffle,
/// `round(n * fraction)` held out (at least one when `fraction > 0` and
/// `n >= 2`).
pub fn split(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    Rng(seed ^ 0x5911_7e57).shuffle(&mut idx);
    let mut n_eval = (n as f64 * fraction).round() as usize;
    if fraction > 0.0 && n >= 2 {
        n_eval = n_eval.clamp(1, n - 1);
    }
    let eval = idx[..n_eval].to_vec();
    let mut train = idx[n_eval..].to_vec();
    train.sort_unstable();
    (train, eval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let (t, e) = split(20, 0.25, 1);
        assert_eq!(e.len(), 5);
        assert_eq!(t.len(), 15);
        let mut all: Vec<usize> = t.iter().chain(&e).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        assert_eq!(split(20, 0.25, 1), (t, e));
        assert_ne!(split(20, 0.25, 2).1, split(20, 0.25, 1).1);
    }
}
