//! The filter a report marks: `--min FIELD=X` thresholds and a
//! `--keep-top FRACTION` ranking (by `--rank-by`), the same rules as the
//! filters of `main-score score` (a record is kept when every rule keeps
//! it), or the rules a filtered output's provenance records.

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::rank::RankBy;

use super::record::field_index;

/// One rule (JSON: `{"kind": "min", "field", "value"}` or `{"kind":
/// "keep_top", "fraction", "rank_by"}`, `rank_by` with a leading '-' when
/// the lowest are kept).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rule {
    /// Keep records whose `field` is at least `value` (NaN: not kept).
    Min { field: String, value: f64 },
    /// Keep the best `round(fraction x records)` by `rank_by`, ties in input order.
    KeepTop { fraction: f64, rank_by: String },
}

impl Rule {
    /// `FIELD=X`, as `--min` takes it.
    pub fn parse_min(s: &str) -> Result<Rule> {
        let bad = |reason: String| Error::invalid_argument("--min", reason);
        let (field, value) = s
            .split_once('=')
            .ok_or_else(|| bad(format!("{s:?}: expected FIELD=X, e.g. alignment=0.1")))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| bad(format!("{s:?}: {value:?} is not a number")))?;
        let field = field.trim();
        field_index(field).ok_or_else(|| {
            bad(format!(
                "{field:?} is not a score field; one of {}",
                crate::score::SCORE_FIELDS.join(", ")
            ))
        })?;
        Ok(Rule::Min {
            field: field.to_string(),
            value,
        })
    }

    /// `--keep-top FRACTION --rank-by FIELD`.
    pub fn keep_top(fraction: f64, rank_by: &str) -> Result<Rule> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::invalid_argument(
                "--keep-top",
                format!("{fraction} is not a fraction in (0, 1]"),
            ));
        }
        let r: RankBy = rank_by
            .parse()
            .map_err(|e| Error::invalid_argument("--rank-by", e))?;
        Ok(Rule::KeepTop {
            fraction,
            rank_by: r.to_string(),
        })
    }

    /// The field the rule reads and whether it keeps the low values.
    pub fn field(&self) -> (&str, bool) {
        match self {
            Rule::Min { field, .. } => (field, false),
            Rule::KeepTop { rank_by, .. } => match rank_by.strip_prefix('-') {
                Some(f) => (f, true),
                None => (rank_by, false),
            },
        }
    }
}

/// The rules of the `"filter"` object of a provenance file, if it has one.
pub fn rules_of_provenance(provenance: &Value) -> Vec<Rule> {
    let Some(f) = provenance.get("filter").filter(|f| f.is_object()) else {
        return Vec::new();
    };
    let mut rules = Vec::new();
    if let Some(fraction) = f.get("keep_top").and_then(Value::as_f64) {
        let rank_by = f
            .get("rank_by")
            .and_then(Value::as_str)
            .unwrap_or(crate::rank::DEFAULT_RANK_BY);
        if let Ok(r) = Rule::keep_top(fraction, rank_by) {
            rules.push(r);
        }
    }
    if let Some(value) = f.get("min_alignment").and_then(Value::as_f64) {
        let field = f
            .get("min_alignment_field")
            .and_then(Value::as_str)
            .unwrap_or("alignment");
        if field_index(field).is_some() {
            rules.push(Rule::Min {
                field: field.to_string(),
                value,
            });
        }
    }
    rules
}
