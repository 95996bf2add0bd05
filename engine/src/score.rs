//! The scores of a pair (DESIGN.md §3), computed from the per-token log-probs
//! of its four views. Pure functions: the scorer (`scorer.rs`) produces the
//! token arrays, this file turns them into numbers.

use serde::Serialize;

use crate::error::{Error, Result};

/// An instruction/response pair. `instruction` is Alpaca's `instruction`
/// plus, when non-empty, "\n\n" + `input` (see [`Pair::from_alpaca`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub instruction: String,
    pub response: String,
}

impl Pair {
    pub fn new(instruction: impl Into<String>, response: impl Into<String>) -> Pair {
        Pair {
            instruction: instruction.into(),
            response: response.into(),
        }
    }

    /// Alpaca's convention (DESIGN.md §2): a non-empty input follows the
    /// instruction after a blank line. Whitespace-only input counts as
    /// non-empty, exactly as the design and the Python reference say.
    pub fn from_alpaca(instruction: &str, input: &str, output: &str) -> Pair {
        let x = if input.is_empty() {
            instruction.to_string()
        } else {
            format!("{instruction}\n\n{input}")
        };
        Pair::new(x, output)
    }
}

/// How `alignment` combines the two directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// `min(fwd_pmi, rev_pmi)`: a pair is as aligned as its weaker direction.
    #[default]
    Min,
    Mean,
    /// `-ln(exp(-f) + exp(-r)) + ln 2`: a smooth minimum, equal to both when they agree.
    Softmin,
}

impl Combine {
    /// The name [`Combine::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Combine::Min => "min",
            Combine::Mean => "mean",
            Combine::Softmin => "softmin",
        }
    }

    pub fn parse(s: &str) -> Result<Combine> {
        match s {
            "min" => Ok(Combine::Min),
            "mean" => Ok(Combine::Mean),
            "softmin" => Ok(Combine::Softmin),
            other => Err(Error::invalid_argument(
                "combine",
                format!("'{other}' is not one of min, mean, softmin"),
            )),
        }
    }

    pub fn apply(self, fwd_pmi: f64, rev_pmi: f64) -> f64 {
        match self {
            Combine::Min => fwd_pmi.min(rev_pmi),
            Combine::Mean => 0.5 * (fwd_pmi + rev_pmi),
            Combine::Softmin => {
                let m = fwd_pmi.min(rev_pmi);
                m - ((-(fwd_pmi - m)).exp() + (-(rev_pmi - m)).exp()).ln() + std::f64::consts::LN_2
            }
        }
    }
}

/// One scored target token (for `--tokens` and the annotation heat map).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenScore {
    pub id: u32,
    pub text: String,
    /// log p(token | prompt with content), nats.
    pub cond: f64,
    /// log p(token | prompt with empty content), nats.
    pub uncond: f64,
    /// `cond - uncond`.
    pub pmi: f64,
}

/// DESIGN.md §3, all log-probs in nats (means over target tokens).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairScore {
    pub alignment: f64,
    pub fwd_pmi: f64,
    pub rev_pmi: f64,
    pub fwd_cond: f64,
    pub fwd_uncond: f64,
    pub rev_cond: f64,
    pub rev_uncond: f64,
    pub ifd: f64,
    pub rifd: f64,
    pub semantic: f64,
    pub structural: f64,
    pub intentional: f64,
    /// Sum over the response's target tokens of log p(token | x) - log p(token):
    /// the pair's pointwise mutual information log p(y|x) - log p(y), in nats
    /// (`fwd_pmi` is its mean per token). Not divided by the length, so a long
    /// response the instruction explains gains with every explained token.
    pub fwd_pmi_total: f64,
    /// The same sum over the instruction's tokens in the reverse views:
    /// log p(x | REVERSE(y)) - log p(x). By Bayes' rule it estimates the same
    /// quantity as `fwd_pmi_total` from the other side.
    pub rev_pmi_total: f64,
    /// InfoNCE estimate with `negatives` other responses (`None` when not asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contrastive: Option<f64>,
    /// Target tokens of the response (forward views) and instruction (reverse views).
    pub response_tokens: u32,
    pub instruction_tokens: u32,
    pub truncated: bool,
    /// Per-token detail of the response (forward direction), with `--tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_detail: Option<Vec<TokenScore>>,
    /// Per-token detail of the instruction (reverse direction), with `--tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction_detail: Option<Vec<TokenScore>>,
}

/// The numbers of a pair's output object, by the names every skin writes
/// them under (the `"alignment"` object of `main-score score`, libmain's
/// `main_pair_score`, the Python columns, the JS camelCase fields): one list,
/// so the summary, the filters and the report read the same fields.
/// `contrastive` is there only with negatives.
pub const SCORE_FIELDS: &[&str] = &[
    "alignment",
    "fwd_pmi",
    "rev_pmi",
    "fwd_cond",
    "fwd_uncond",
    "rev_cond",
    "rev_uncond",
    "ifd",
    "rifd",
    "semantic",
    "structural",
    "intentional",
    "fwd_pmi_total",
    "rev_pmi_total",
    "contrastive",
    "response_tokens",
    "instruction_tokens",
];

impl PairScore {
    /// The field of [`SCORE_FIELDS`] called `name`; `None` for another name,
    /// or for `contrastive` when it was not asked for.
    pub fn field(&self, name: &str) -> Option<f64> {
        Some(match name {
            "alignment" => self.alignment,
            "fwd_pmi" => self.fwd_pmi,
            "rev_pmi" => self.rev_pmi,
            "fwd_cond" => self.fwd_cond,
            "fwd_uncond" => self.fwd_uncond,
            "rev_cond" => self.rev_cond,
            "rev_uncond" => self.rev_uncond,
            "ifd" => self.ifd,
            "rifd" => self.rifd,
            "semantic" => self.semantic,
            "structural" => self.structural,
            "intentional" => self.intentional,
            "fwd_pmi_total" => self.fwd_pmi_total,
            "rev_pmi_total" => self.rev_pmi_total,
            "contrastive" => return self.contrastive,
            "response_tokens" => self.response_tokens as f64,
            "instruction_tokens" => self.instruction_tokens as f64,
            _ => return None,
        })
    }
}

/// Whether a token piece is *content* (holds a letter or digit) rather than
/// structure (whitespace, punctuation, markdown and code markers).
pub fn is_content_piece(piece: &str) -> bool {
    piece.chars().any(char::is_alphanumeric)
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The per-token log-probs of one pair's four views, and the response's pieces.
pub struct ViewLogprobs<'a> {
    pub fwd_cond: &'a [f64],
    pub fwd_uncond: &'a [f64],
    pub rev_cond: &'a [f64],
    pub rev_uncond: &'a [f64],
    /// Text of each forward target token (same length as `fwd_cond`).
    pub response_pieces: &'a [String],
    /// How many of the last target tokens are the template's end-of-turn
    /// marker: scored in the means, but neither content nor structure.
    pub n_end_of_turn: usize,
}

/// Builds the §3 scores from the four views' token arrays. The forward
/// conditional and unconditional views score the same target tokens, and
/// so do the two reverse views (asserted).
pub fn pair_score(v: &ViewLogprobs, combine: Combine, truncated: bool) -> PairScore {
    assert_eq!(
        v.fwd_cond.len(),
        v.fwd_uncond.len(),
        "forward views score different targets"
    );
    assert_eq!(
        v.rev_cond.len(),
        v.rev_uncond.len(),
        "reverse views score different targets"
    );
    let (fc, fu, rc, ru) = (
        mean(v.fwd_cond),
        mean(v.fwd_uncond),
        mean(v.rev_cond),
        mean(v.rev_uncond),
    );
    let (fwd_pmi, rev_pmi) = (fc - fu, rc - ru);
    let total =
        |cond: &[f64], uncond: &[f64]| -> f64 { cond.iter().zip(uncond).map(|(c, u)| c - u).sum() };
    let (mut content, mut structure) = (Vec::new(), Vec::new());
    let n_response = v.fwd_cond.len().saturating_sub(v.n_end_of_turn);
    for ((c, u), piece) in v
        .fwd_cond
        .iter()
        .zip(v.fwd_uncond)
        .zip(v.response_pieces)
        .take(n_response)
    {
        if is_content_piece(piece) {
            content.push(c - u);
        } else {
            structure.push(c - u);
        }
    }
    PairScore {
        alignment: combine.apply(fwd_pmi, rev_pmi),
        fwd_pmi,
        rev_pmi,
        fwd_cond: fc,
        fwd_uncond: fu,
        rev_cond: rc,
        rev_uncond: ru,
        ifd: (-fwd_pmi).exp(),
        rifd: (-rev_pmi).exp(),
        semantic: mean(&content),
        structural: mean(&structure),
        intentional: rev_pmi,
        fwd_pmi_total: total(v.fwd_cond, v.fwd_uncond),
        rev_pmi_total: total(v.rev_cond, v.rev_uncond),
        contrastive: None,
        response_tokens: v.fwd_cond.len() as u32,
        instruction_tokens: v.rev_cond.len() as u32,
        truncated,
        response_detail: None,
        instruction_detail: None,
    }
}

/// InfoNCE lower bound on the mutual information, in nats: `s[0]` is the
/// pair's own score `mean log p(y_i | x_i)`, `s[1..]` those of K other
/// responses. `s_ii - logsumexp_j s_ij + ln(K + 1)`.
pub fn contrastive(s: &[f64]) -> f64 {
    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + s.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    s[0] - lse + (s.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_follow_the_design() {
        let pieces: Vec<String> = ["Hello", ",", " world", "\n", "<|im_end|>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let v = ViewLogprobs {
            fwd_cond: &[-1.0, -0.5, -2.0, -0.1, -0.3],
            fwd_uncond: &[-3.0, -0.7, -4.0, -0.2, -0.3],
            rev_cond: &[-1.0, -1.0],
            rev_uncond: &[-1.5, -2.5],
            response_pieces: &pieces,
            n_end_of_turn: 1,
        };
        let s = pair_score(&v, Combine::Min, false);
        assert!((s.fwd_cond - (-0.78)).abs() < 1e-12);
        assert!((s.fwd_uncond - (-1.64)).abs() < 1e-12);
        assert!((s.fwd_pmi - 0.86).abs() < 1e-12);
        assert!((s.rev_pmi - 1.0).abs() < 1e-12);
        assert!(
            (s.alignment - 0.86).abs() < 1e-12,
            "min of the two directions"
        );
        assert!((s.ifd - (-0.86f64).exp()).abs() < 1e-12);
        assert!(
            (s.semantic - 2.0).abs() < 1e-12,
            "content tokens: Hello, world"
        );
        assert!(
            (s.structural - 0.15).abs() < 1e-12,
            "structure tokens: ',' and newline"
        );
        assert_eq!(s.intentional, s.rev_pmi);
        assert!(
            (s.fwd_pmi_total - 4.3).abs() < 1e-12,
            "sum over the 5 targets"
        );
        assert!((s.rev_pmi_total - 2.0).abs() < 1e-12);
        assert_eq!((s.response_tokens, s.instruction_tokens), (5, 2));
        // The one list of fields names what serde writes, with the same values.
        let mut s = s;
        s.contrastive = Some(0.25);
        let json = serde_json::to_value(&s).unwrap();
        for name in SCORE_FIELDS {
            assert_eq!(json[name].as_f64(), s.field(name), "{name}");
        }
        assert_eq!(s.field("no_such_field"), None);
    }

    #[test]
    fn combinations() {
        assert_eq!(Combine::Min.apply(1.0, 2.0), 1.0);
        assert_eq!(Combine::Mean.apply(1.0, 2.0), 1.5);
        let s = Combine::Softmin.apply(1.0, 1.0);
        assert!(
            (s - 1.0).abs() < 1e-12,
            "softmin of equal values is that value"
        );
        let s = Combine::Softmin.apply(0.0, 10.0);
        assert!(
            s < 0.7 && s > 0.0,
            "softmin leans to the smaller value: {s}"
        );
        assert!(Combine::parse("max").is_err());
    }

    #[test]
    fn contrastive_bounds() {
        // Own response much likelier than the others: close to ln(K+1).
        let c = contrastive(&[-1.0, -20.0, -20.0, -20.0]);
        assert!((c - 4f64.ln()).abs() < 1e-6);
        // All equal: zero information.
        assert!(contrastive(&[-2.0, -2.0, -2.0]).abs() < 1e-12);
    }
}
