//! Which score the filters rank by, and which way is better: the ranking
//! behind `--keep-top`, named in each filtered output's provenance.
//!
//! A ranking is a score field of the output records and a direction: keep
//! the highest (`fwd_pmi_total`) or, with a leading `-`, the lowest
//! (`-fwd_pmi`; `ifd`, highest first, is Cherry-LLM's direction). What each score says about quality
//! is measured in `benches/quality` (README, "What the scores mean").

use std::fmt;
use std::str::FromStr;

/// The fields a ranking may use: every number of a pair's output object.
pub use crate::score::SCORE_FIELDS as FIELDS;

/// The default ranking of `--keep-top`, chosen by the quality benchmark
/// (BENCHMARKS.md, "Quality"): the score whose kept half the labels rate
/// better on every labelled set.
pub const DEFAULT_RANK_BY: &str = "fwd_pmi_total";

/// A score field and its direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankBy {
    pub field: &'static str,
    /// Keep the lowest values instead of the highest.
    pub keep_low: bool,
}

impl Default for RankBy {
    fn default() -> RankBy {
        DEFAULT_RANK_BY
            .parse()
            .expect("the default ranking names a field")
    }
}

impl FromStr for RankBy {
    type Err = String;

    fn from_str(s: &str) -> Result<RankBy, String> {
        let (name, keep_low) = match s.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let field = FIELDS.iter().find(|f| **f == name).ok_or_else(|| {
            format!(
                "{s:?} is not a score field; one of {} (a leading '-' keeps the lowest)",
                FIELDS.join(", ")
            )
        })?;
        Ok(RankBy { field, keep_low })
    }
}

impl fmt::Display for RankBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", if self.keep_low { "-" } else { "" }, self.field)
    }
}

impl RankBy {
    /// The value to rank by, better is higher: `value` negated when the
    /// ranking keeps the lowest; a missing or NaN value ranks below all.
    pub fn key(&self, value: Option<f64>) -> f64 {
        match value {
            Some(v) if !v.is_nan() => {
                if self.keep_low {
                    -v
                } else {
                    v
                }
            }
            _ => f64::NEG_INFINITY,
        }
    }
}

/// Which of `keys` (better is higher) the best `fraction` of them are:
/// exactly `round(fraction x n)`, ties at the cut kept in input order.
pub fn keep_top(keys: &[f64], fraction: f64) -> Vec<bool> {
    let k = ((fraction * keys.len() as f64).round() as usize).min(keys.len());
    let mut order: Vec<usize> = (0..keys.len()).collect();
    // A stable sort: equal keys stay in input order, so the earlier ones win ties.
    order.sort_by(|&a, &b| keys[b].total_cmp(&keys[a]));
    let mut keep = vec![false; keys.len()];
    for &i in &order[..k] {
        keep[i] = true;
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_directions() {
        let r: RankBy = "-fwd_pmi".parse().unwrap();
        assert_eq!((r.field, r.keep_low), ("fwd_pmi", true));
        assert_eq!(r.to_string(), "-fwd_pmi");
        assert_eq!(RankBy::default().to_string(), DEFAULT_RANK_BY);
        let e = "fwd_pmi_sum".parse::<RankBy>().unwrap_err();
        assert!(e.contains("\"fwd_pmi_sum\" is not a score field"), "{e}");
        assert!(
            e.contains("fwd_pmi_total"),
            "the error lists the fields: {e}"
        );
    }

    #[test]
    fn keys_put_the_better_value_high_and_nan_last() {
        let low = RankBy {
            field: "ifd",
            keep_low: true,
        };
        assert_eq!(low.key(Some(0.25)), -0.25);
        assert_eq!(low.key(Some(f64::NAN)), f64::NEG_INFINITY);
        assert_eq!(RankBy::default().key(None), f64::NEG_INFINITY);
    }

    #[test]
    fn keeps_exactly_k_with_ties_in_input_order() {
        let keys = [1.0, 3.0, 2.0, 2.0, 2.0, f64::NEG_INFINITY];
        // round(0.5 x 6) = 3: the 3.0 and the first two 2.0s.
        assert_eq!(
            keep_top(&keys, 0.5),
            vec![false, true, true, true, false, false]
        );
        assert_eq!(keep_top(&keys, 0.0), vec![false; 6]);
        assert_eq!(keep_top(&keys, 1.0), vec![true; 6]);
        assert!(keep_top(&[], 0.5).is_empty());
    }
}
