//! The closing summary of a scored data set: for the main scores, their
//! quantiles and their rank correlation with response length on the user's
//! own data, so a curator sees at once when a score mostly measures length
//! (per-token means reward short responses; sums reward long ones).
//!
//! A few numbers per record are kept, never the records.

use crate::score::PairScore;
use crate::stats::{quantile, spearman, LENGTH_WARNING};

/// The scores the summary shows, in its row order.
pub const SUMMARY_FIELDS: &[&str] = &[
    "alignment",
    "fwd_pmi",
    "rev_pmi",
    "fwd_pmi_total",
    "rev_pmi_total",
    "semantic",
    "ifd",
];

/// The scores of every record seen, column by column (NaN where a record
/// has no number).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// One column per [`SUMMARY_FIELDS`] entry.
    columns: [Vec<f64>; SUMMARY_FIELDS.len()],
    /// Target tokens of each record's response.
    response_tokens: Vec<f64>,
}

/// One row of the summary table.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    pub field: &'static str,
    pub p10: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    /// Spearman's rank correlation with response length (`None` with fewer
    /// than 3 records or a constant column).
    pub rho_length: Option<f64>,
}

impl SummaryRow {
    /// Whether this score mostly measures response length on this data.
    pub fn tracks_length(&self) -> bool {
        self.rho_length.is_some_and(|r| r.abs() > LENGTH_WARNING)
    }

    /// The warning a curator should read, when [`Self::tracks_length`].
    pub fn length_warning(&self) -> Option<String> {
        let rho = self.rho_length.filter(|_| self.tracks_length())?;
        Some(format!(
            "{}'s rank correlation with response length is {rho:+.2} on this data: ranking by it mostly keeps {} responses (README, \"What the scores mean\")",
            self.field,
            if rho > 0.0 { "long" } else { "short" }
        ))
    }
}

impl Summary {
    /// Adds one record, its numbers read by name (`None` or NaN: missing).
    pub fn add(&mut self, field: impl Fn(&str) -> Option<f64>) {
        for (column, name) in self.columns.iter_mut().zip(SUMMARY_FIELDS) {
            column.push(field(name).unwrap_or(f64::NAN));
        }
        self.response_tokens
            .push(field("response_tokens").unwrap_or(f64::NAN));
    }

    pub fn add_score(&mut self, s: &PairScore) {
        self.add(|name| s.field(name));
    }

    /// Records added.
    pub fn count(&self) -> usize {
        self.response_tokens.len()
    }

    /// One row per [`SUMMARY_FIELDS`] entry (quantiles interpolated as
    /// numpy's default; NaNs left out).
    pub fn rows(&self) -> Vec<SummaryRow> {
        SUMMARY_FIELDS
            .iter()
            .zip(&self.columns)
            .map(|(field, column)| {
                let mut sorted: Vec<f64> = column.iter().copied().filter(|x| !x.is_nan()).collect();
                sorted.sort_by(f64::total_cmp);
                SummaryRow {
                    field,
                    p10: quantile(&sorted, 0.1),
                    p50: quantile(&sorted, 0.5),
                    p90: quantile(&sorted, 0.9),
                    rho_length: spearman(column, &self.response_tokens),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_hold_quantiles_and_the_length_correlation() {
        let mut s = Summary::default();
        // fwd_pmi falls as responses grow (a per-token mean's habit);
        // fwd_pmi_total grows with them; alignment is unrelated to length.
        let data = [
            (10.0, 0.9, 2.0, 0.1),
            (20.0, 0.7, 6.0, 0.5),
            (40.0, 0.5, 9.0, 0.2),
            (80.0, 0.2, 15.0, 0.4),
            (160.0, 0.1, 30.0, 0.3),
        ];
        for (len, pmi, total, alignment) in data {
            s.add(|name| match name {
                "response_tokens" => Some(len),
                "fwd_pmi" => Some(pmi),
                "fwd_pmi_total" => Some(total),
                "alignment" => Some(alignment),
                "ifd" => Some(f64::NAN),
                _ => None,
            });
        }
        assert_eq!(s.count(), 5);
        let rows = s.rows();
        let row = |f: &str| rows.iter().find(|r| r.field == f).unwrap().clone();
        assert_eq!(row("fwd_pmi").rho_length, Some(-1.0));
        assert_eq!(row("fwd_pmi_total").rho_length, Some(1.0));
        // Ranks of alignment: 1 5 2 4 3 against 1 2 3 4 5: rho = 0.3.
        assert!((row("alignment").rho_length.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(row("alignment").p50, Some(0.3));
        assert_eq!(row("fwd_pmi").p10, Some(0.1 + 0.4 * (0.2 - 0.1)));
        assert!(row("fwd_pmi").tracks_length());
        assert!(!row("alignment").tracks_length());
        let w = row("fwd_pmi").length_warning().unwrap();
        assert!(w.contains("-1.00") && w.contains("keeps short"), "{w}");
        assert_eq!(row("alignment").length_warning(), None);
        // A column of NaNs has no quantiles and no correlation.
        assert_eq!((row("ifd").p50, row("ifd").rho_length), (None, None));
        assert_eq!(row("rev_pmi").p90, None);
    }
}
