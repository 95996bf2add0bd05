//! The builder: a scored JSONL taken one line at a time into bounded
//! state (exact counts, streaming histograms, uniform samples), then
//! [`ReportBuilder::finish`] into [`ReportData`].

use std::collections::BTreeMap;

use super::duplicates::{normalise, ExactDuplicates};
use super::examples::{Example, Shown};
use super::filter::Rule;
use super::histogram::Histogram;
use super::record::{field_index, ScoredLine};
use super::reservoir::Reservoir;
use super::*;
use crate::error::{Error, Result};
use crate::rank;
use crate::score::SCORE_FIELDS;
use crate::stats::{quantile, spearman, LENGTH_WARNING};
use crate::summary::{Summary, SUMMARY_FIELDS};

/// A record's numbers kept for quantiles and correlations.
#[derive(Clone, Debug)]
struct Row {
    values: [f64; N_FIELDS],
}

/// A sampled record: a dot, and an example candidate.
#[derive(Clone, Debug)]
struct Dot {
    line: u64,
    values: [f64; N_FIELDS],
    shown: Shown,
}

/// Running count, sum, min and max of one field.
#[derive(Clone, Copy, Debug)]
struct Moments {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

/// Takes scored JSONL lines and makes a [`ReportData`].
pub struct ReportBuilder {
    params: ReportParams,
    source: String,
    provenance: Option<serde_json::Value>,
    filter_source: String,
    records: u64,
    pairs: u64,
    conversations: u64,
    turns: u64,
    truncated: u64,
    rows: Reservoir<Row>,
    /// Fixed once `exact_cap` records came (or at the end).
    histograms: Option<Vec<Histogram>>,
    moments: Vec<Moments>,
    quadrants: Quadrants,
    /// Records every `Min` rule keeps.
    pass_min: u64,
    /// Records each rule keeps alone (`Min` rules; 0 for `KeepTop`).
    pass_rule: Vec<u64>,
    dots: Reservoir<Dot>,
    exact_instruction: ExactDuplicates,
    exact_response: ExactDuplicates,
    exact_pair: ExactDuplicates,
    /// (line, normalised instruction, normalised response), cut.
    near: Reservoir<(u64, String, String)>,
    weakest: Vec<WeakTurn>,
}

/// The [`REPORT_FIELDS`] indices in [`SCORE_FIELDS`].
fn report_indices() -> Vec<usize> {
    REPORT_FIELDS
        .iter()
        .map(|f| field_index(f).expect("a report field is a score field"))
        .collect()
}

impl ReportBuilder {
    /// A builder for the file or source called `source` (in errors and the page).
    pub fn new(params: &ReportParams, source: &str) -> Result<ReportBuilder> {
        for r in &params.rules {
            let (field, _) = r.field();
            if field_index(field).is_none() {
                return Err(Error::invalid_argument(
                    "rules",
                    format!("{field:?} is not a score field"),
                ));
            }
        }
        if let Some(f) = &params.examples_by {
            if field_index(f).is_none() {
                return Err(Error::invalid_argument(
                    "examples_by",
                    format!("{f:?} is not a score field"),
                ));
            }
        }
        if let Some(p) = params
            .percentiles
            .iter()
            .find(|p| !(0.0..=100.0).contains(*p))
        {
            return Err(Error::invalid_argument(
                "percentiles",
                format!("{p} is not in 0..=100"),
            ));
        }
        if params.exact_cap == 0 || params.max_line_bytes == 0 {
            return Err(Error::invalid_argument(
                "exact_cap",
                "exact_cap and max_line_bytes must be positive".to_string(),
            ));
        }
        let seed = params.seed;
        Ok(ReportBuilder {
            source: source.to_string(),
            provenance: None,
            filter_source: "options".to_string(),
            records: 0,
            pairs: 0,
            conversations: 0,
            turns: 0,
            truncated: 0,
            rows: Reservoir::new(params.exact_cap, seed),
            histograms: None,
            moments: vec![
                Moments {
                    count: 0,
                    sum: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                };
                N_FIELDS
            ],
            quadrants: Quadrants::default(),
            pass_min: 0,
            pass_rule: vec![0; params.rules.len()],
            dots: Reservoir::new(params.dots, seed ^ 0x1),
            exact_instruction: ExactDuplicates::new(params.max_distinct),
            exact_response: ExactDuplicates::new(params.max_distinct),
            exact_pair: ExactDuplicates::new(params.max_distinct),
            near: Reservoir::new(params.near_sample, seed ^ 0x2),
            weakest: Vec::new(),
            params: params.clone(),
        })
    }

    /// Shows `provenance` (a provenance file's JSON); when the params have
    /// no rules (and no line was added yet), marks the filter it records.
    pub fn set_provenance(&mut self, provenance: serde_json::Value) {
        if self.params.rules.is_empty() && self.records == 0 {
            let rules = rules_of_provenance(&provenance);
            if !rules.is_empty() {
                self.pass_rule = vec![0; rules.len()];
                self.params.rules = rules;
                self.filter_source = "provenance".to_string();
            }
        }
        self.provenance = Some(provenance);
    }

    /// The params in force (with the provenance's rules, if taken).
    pub fn params(&self) -> &ReportParams {
        &self.params
    }

    /// Adds line `line_no` (1-based) of the scored file: one JSON record,
    /// or a blank line (skipped). An error names the source and the line.
    pub fn add_line(&mut self, line: &[u8], line_no: usize) -> Result<()> {
        self.add_line_seen(line, line_no, |_| {})
    }

    /// [`Self::add_line`], and `seen` is shown the parsed record before the
    /// report takes it: a skin that keeps columns of its own (the browser
    /// tool's table) gets them without parsing the line a second time.
    pub fn add_line_seen(
        &mut self,
        line: &[u8],
        line_no: usize,
        seen: impl FnOnce(&ScoredLine),
    ) -> Result<()> {
        let err = |reason: String| Error::record(self.source.clone(), line_no, reason);
        if line.len() > self.params.max_line_bytes {
            return Err(err(format!(
                "the line is {} bytes, over the limit of {} (max_line_bytes)",
                line.len(),
                self.params.max_line_bytes
            )));
        }
        let text = lines::record_text(line, line_no).map_err(err)?;
        let Some(text) = text else { return Ok(()) };
        let record = ScoredLine::parse(text, line_no).map_err(err)?;
        seen(&record);
        self.add_record(record);
        Ok(())
    }

    fn add_record(&mut self, r: ScoredLine) {
        self.records += 1;
        if r.turns.is_empty() {
            self.pairs += 1;
        } else {
            self.conversations += 1;
            self.turns += r.turns.len() as u64;
        }
        self.truncated += r.truncated as u64;
        for (m, &x) in self.moments.iter_mut().zip(&r.values) {
            if !x.is_nan() {
                m.count += 1;
                m.sum += x;
                m.min = m.min.min(x);
                m.max = m.max.max(x);
            }
        }
        // Quadrants.
        let (fwd, rev) = (r.values[1], r.values[2]);
        let q = &mut self.quadrants;
        match (fwd.is_nan() || rev.is_nan(), fwd > 0.0, rev > 0.0) {
            (true, _, _) => q.missing += 1,
            (_, true, true) => q.aligned += 1,
            (_, false, true) => q.ignores_instruction += 1,
            (_, true, false) => q.not_recoverable += 1,
            (_, false, false) => q.both_weak += 1,
        }
        if self.passes_min(&r.values) {
            self.pass_min += 1;
        }
        for (n, rule) in self.pass_rule.iter_mut().zip(&self.params.rules) {
            if let Rule::Min { field, value } = rule {
                *n += field_index(field).is_some_and(|i| r.values[i] >= *value) as u64;
            }
        }
        // Histograms, once their ranges are fixed.
        if let Some(hs) = &mut self.histograms {
            for (h, i) in hs.iter_mut().zip(report_indices()) {
                h.add(r.values[i]);
            }
        }
        self.rows.offer(Row { values: r.values });
        if self.histograms.is_none() && self.rows.seen() as usize == self.params.exact_cap {
            self.fix_histograms();
        }
        // Texts: duplicates over every record, the samples.
        let (instruction, response) = joined_texts(&r);
        let (ni, nr) = (normalise(&instruction), normalise(&response));
        self.exact_instruction.add(&ni, r.line);
        self.exact_response.add(&nr, r.line);
        let mut pair = ni.clone();
        pair.push('\u{1f}');
        pair.push_str(&nr);
        self.exact_pair.add(&pair, r.line);
        if let Some(slot) = self.near.slot() {
            let (ci, _) = cut_plain(&ni, self.params.near_chars);
            let (cr, _) = cut_plain(&nr, self.params.near_chars);
            self.near.put(slot, (r.line, ci, cr));
        }
        self.add_weak_turns(&r);
        if let Some(slot) = self.dots.slot() {
            let shown = self.shown(&r);
            self.dots.put(
                slot,
                Dot {
                    line: r.line,
                    values: r.values,
                    shown,
                },
            );
        }
    }

    fn passes_min(&self, values: &[f64; N_FIELDS]) -> bool {
        self.params.rules.iter().all(|rule| match rule {
            Rule::Min { field, value } => field_index(field).is_some_and(|i| values[i] >= *value),
            Rule::KeepTop { .. } => true,
        })
    }

    fn fix_histograms(&mut self) {
        let mut hs = Vec::new();
        for (f, i) in REPORT_FIELDS.iter().zip(report_indices()) {
            let mut sorted: Vec<f64> = self
                .rows
                .items()
                .iter()
                .map(|r| r.values[i])
                .filter(|x| !x.is_nan())
                .collect();
            sorted.sort_by(f64::total_cmp);
            let mut h = Histogram::over(f, &sorted, self.params.bins);
            for r in self.rows.items() {
                h.add(r.values[i]);
            }
            hs.push(h);
        }
        self.histograms = Some(hs);
    }

    /// What an example shows of record `r`.
    fn shown(&self, r: &ScoredLine) -> Shown {
        let (instruction, response) = r
            .shown_exchange()
            .map_or(("", ""), |(i, o)| (i.as_str(), o.as_str()));
        let (instruction, instruction_chars) =
            examples::cut(instruction, self.params.example_chars);
        let (response, response_chars) = examples::cut(response, self.params.example_chars);
        let max = self.params.example_tokens;
        Shown {
            turn: r.weakest_turn,
            n_turns: r.turns.len().max(1),
            instruction,
            instruction_chars,
            response,
            response_chars,
            tokens: r
                .response_tokens
                .as_ref()
                .map(|t| t.iter().take(max).cloned().collect()),
            tokens_cut: r.response_tokens.as_ref().is_some_and(|t| t.len() > max),
        }
    }

    fn add_weak_turns(&mut self, r: &ScoredLine) {
        let cap = self.params.weakest_turns;
        for t in &r.turns {
            let a = t.values[0];
            if a.is_nan() || cap == 0 {
                continue;
            }
            let full = self.weakest.len() >= cap;
            if full && self.weakest.last().is_some_and(|w| a >= w.alignment) {
                continue;
            }
            let (user, assistant) = r
                .exchanges
                .get(t.turn - 1)
                .map_or(("", ""), |(u, a)| (u.as_str(), a.as_str()));
            let idx = |f: &str| field_index(f).expect("a score field");
            let w = WeakTurn {
                line: r.line,
                turn: t.turn,
                n_turns: r.turns.len(),
                alignment: a,
                fwd_pmi: t.values[idx("fwd_pmi")],
                rev_pmi: t.values[idx("rev_pmi")],
                response_tokens: t.values[idx("response_tokens")],
                turn_alignments: r.turns.iter().map(|t| t.values[0]).collect(),
                user: examples::cut(user, self.params.example_chars).0,
                assistant: examples::cut(assistant, self.params.example_chars).0,
            };
            // Sorted by alignment; an equal one goes after (earlier first).
            let at = self.weakest.partition_point(|x| x.alignment <= a);
            self.weakest.insert(at, w);
            self.weakest.truncate(cap);
        }
    }

    /// The report.
    pub fn finish(mut self) -> ReportData {
        if self.histograms.is_none() {
            self.fix_histograms();
        }
        let p = &self.params;
        let exact = self.rows.is_complete();
        let rows = self.rows.items();
        let mut notes = Vec::new();
        if !exact {
            notes.push(format!(
                "{} records: quantiles, correlations, the summary table and a --keep-top cut are computed on a uniform sample of {} records; the histograms' ranges come from the first {} (their bars count every record)",
                self.records, p.exact_cap, p.exact_cap
            ));
        }

        // The filter: which sampled rows it keeps, the cut of a keep-top.
        let min_pass: Vec<bool> = rows.iter().map(|r| self.passes_min(&r.values)).collect();
        let mut keep = min_pass.clone();
        let mut thresholds = Vec::new();
        let mut cut_key: Option<(usize, bool, f64)> = None;
        let of = |n: f64, total: f64| if total > 0.0 { n / total } else { 0.0 };
        for (rule, passed) in p.rules.iter().zip(&self.pass_rule) {
            match rule {
                Rule::Min { field, value } => thresholds.push(Threshold {
                    field: field.clone(),
                    value: *value,
                    keep: "above".into(),
                    share: of(*passed as f64, self.records as f64),
                }),
                Rule::KeepTop { fraction, rank_by } => {
                    let by: rank::RankBy = rank_by.parse().expect("a checked ranking");
                    let i = field_index(by.field).expect("a score field");
                    let keys: Vec<f64> = rows.iter().map(|r| by.key(Some(r.values[i]))).collect();
                    let top = rank::keep_top(&keys, *fraction);
                    let cut = keys
                        .iter()
                        .zip(&top)
                        .filter(|(_, t)| **t)
                        .map(|(k, _)| *k)
                        .fold(f64::INFINITY, f64::min);
                    for (k, t) in keep.iter_mut().zip(&top) {
                        *k &= *t;
                    }
                    if cut.is_finite() {
                        cut_key = Some((i, by.keep_low, cut));
                        thresholds.push(Threshold {
                            field: by.field.to_string(),
                            value: if by.keep_low { -cut } else { cut },
                            keep: if by.keep_low { "below" } else { "above" }.into(),
                            share: of(top.iter().filter(|t| **t).count() as f64, rows.len() as f64),
                        });
                    }
                }
            }
        }
        let has_top = p.rules.iter().any(|r| matches!(r, Rule::KeepTop { .. }));
        let filter = (!p.rules.is_empty()).then(|| {
            let (kept, exact_kept) = if !has_top {
                (self.pass_min, true)
            } else if exact {
                (keep.iter().filter(|k| **k).count() as u64, true)
            } else {
                let share = keep.iter().filter(|k| **k).count() as f64 / rows.len() as f64;
                ((share * self.records as f64).round() as u64, false)
            };
            FilterData {
                rules: p.rules.clone(),
                source: self.filter_source.clone(),
                thresholds,
                kept,
                of: self.records,
                share: if self.records > 0 {
                    kept as f64 / self.records as f64
                } else {
                    0.0
                },
                exact: exact_kept,
            }
        });
        let kept_of = |values: &[f64; N_FIELDS]| -> Option<bool> {
            filter.as_ref()?;
            let top = cut_key.is_none_or(|(i, low, cut)| {
                let v = values[i];
                !v.is_nan() && (if low { -v } else { v }) >= cut
            });
            let top = top && (cut_key.is_some() || !has_top);
            Some(self.passes_min(values) && top)
        };

        // Stats, summary.
        let length = field_index("response_tokens").expect("a score field");
        let lengths: Vec<f64> = rows.iter().map(|r| r.values[length]).collect();
        let mut stats = Vec::new();
        for (f, i) in REPORT_FIELDS.iter().zip(report_indices()) {
            let column: Vec<f64> = rows.iter().map(|r| r.values[i]).collect();
            let mut sorted: Vec<f64> = column.iter().copied().filter(|x| !x.is_nan()).collect();
            sorted.sort_by(f64::total_cmp);
            let mut ps: Vec<f64> = p.percentiles.clone();
            ps.extend([10.0, 90.0]);
            ps.sort_by(f64::total_cmp);
            ps.dedup();
            let rho = if i == length {
                None
            } else {
                spearman(&column, &lengths)
            };
            let m = self.moments[i];
            let length_warning = rho.filter(|r| r.abs() > LENGTH_WARNING).and_then(|r| {
                crate::summary::SummaryRow {
                    field: SCORE_FIELDS[i],
                    p10: None,
                    p50: None,
                    p90: None,
                    rho_length: Some(r),
                }
                .length_warning()
            });
            stats.push(FieldStats {
                field: f.to_string(),
                count: m.count,
                missing: self.records - m.count,
                min: (m.count > 0).then_some(m.min),
                max: (m.count > 0).then_some(m.max),
                mean: (m.count > 0).then(|| m.sum / m.count as f64),
                percentiles: ps
                    .iter()
                    .map(|&q| (q, quantile(&sorted, q / 100.0)))
                    .collect(),
                rho_length: rho,
                length_warning,
            });
        }
        let mut summary = Summary::default();
        for r in rows {
            summary.add(|name| field_index(name).map(|i| r.values[i]));
        }
        let summary: Vec<SummaryRowData> = summary
            .rows()
            .into_iter()
            .map(|r| SummaryRowData {
                field: r.field.to_string(),
                p10: r.p10,
                p50: r.p50,
                p90: r.p90,
                rho_length: r.rho_length,
                warning: r.length_warning(),
            })
            .collect();
        debug_assert_eq!(summary.len(), SUMMARY_FIELDS.len());

        // The dots.
        let indices = report_indices();
        let dots = self.dots.items();
        let sample = Sample {
            size: dots.len() as u64,
            of: self.records,
            columns: ["line", "kept"]
                .iter()
                .chain(REPORT_FIELDS)
                .map(|s| s.to_string())
                .collect(),
            rows: dots
                .iter()
                .map(|d| {
                    let mut row = vec![
                        serde_json::json!(d.line),
                        serde_json::json!(kept_of(&d.values)),
                    ];
                    row.extend(indices.iter().map(|&i| serde_json::json!(d.values[i])));
                    serde_json::Value::Array(row)
                })
                .collect(),
        };
        if self.records as usize > p.dots {
            notes.push(format!(
                "the scatters show a uniform sample of {} of {} records; the examples are the sampled records nearest each percentile",
                p.dots, self.records
            ));
        }

        // Examples.
        let by = p
            .examples_by
            .clone()
            .or_else(|| p.rules.first().map(|r| r.field().0.to_string()))
            .unwrap_or_else(|| "alignment".to_string());
        let bi = field_index(&by).expect("a checked field");
        let mut sorted: Vec<f64> = rows
            .iter()
            .map(|r| r.values[bi])
            .filter(|x| !x.is_nan())
            .collect();
        sorted.sort_by(f64::total_cmp);
        let mut items = Vec::new();
        for &pc in &p.percentiles {
            let Some(target) = quantile(&sorted, pc / 100.0) else {
                continue;
            };
            let Some(k) = examples::nearest(dots.iter().map(|d| d.values[bi]), target) else {
                continue;
            };
            let d = &dots[k];
            items.push(Example {
                percentile: pc,
                target,
                line: d.line,
                value: d.values[bi],
                kept: kept_of(&d.values),
                scores: REPORT_FIELDS
                    .iter()
                    .zip(&indices)
                    .map(|(f, &i)| (f.to_string(), d.values[i]))
                    .collect::<BTreeMap<_, _>>(),
                shown: d.shown.clone(),
            });
        }

        // Duplicates.
        let n = p.groups_listed;
        let exact_complete = !(self.exact_instruction.overflowed
            || self.exact_response.overflowed
            || self.exact_pair.overflowed);
        if !exact_complete {
            notes.push(format!(
                "exact duplicates are counted among the first {} distinct texts of each kind",
                p.max_distinct
            ));
        }
        let near_items = self.near.items();
        let instructions: Vec<(u64, String)> =
            near_items.iter().map(|(l, i, _)| (*l, i.clone())).collect();
        let responses: Vec<(u64, String)> =
            near_items.iter().map(|(l, _, r)| (*l, r.clone())).collect();
        if !self.near.is_complete() {
            notes.push(format!(
                "near-duplicates are searched in a uniform sample of {} of {} records",
                p.near_sample, self.records
            ));
        }
        let duplicates = DuplicatesData {
            exact: ExactDuplicatesData {
                instruction: self.exact_instruction.groups(n),
                response: self.exact_response.groups(n),
                pair: self.exact_pair.groups(n),
            },
            exact_complete,
            near: NearDuplicatesData {
                sample: near_items.len() as u64,
                of: self.records,
                jaccard: duplicates::NEAR_JACCARD,
                instruction: duplicates::near_duplicates(&instructions, n),
                response: duplicates::near_duplicates(&responses, n),
            },
        };

        ReportData {
            report_version: REPORT_VERSION,
            source: self.source.clone(),
            records: self.records,
            pairs: self.pairs,
            conversations: self.conversations,
            turns: self.turns,
            truncated: self.truncated,
            exact,
            exact_cap: p.exact_cap as u64,
            fields: REPORT_FIELDS.iter().map(|s| s.to_string()).collect(),
            filter,
            histograms: self.histograms.clone().unwrap_or_default(),
            stats,
            summary,
            quadrants: self.quadrants.clone(),
            sample,
            examples: ExamplesData { field: by, items },
            duplicates,
            conversations_detail: ConversationsData {
                count: self.conversations,
                turns: self.turns,
                weakest: self.weakest.clone(),
            },
            provenance: self.provenance.clone(),
            notes,
        }
    }
}

/// A record's instruction and response texts for duplicates: a pair's, or
/// a conversation's user and assistant messages each joined by blank lines.
fn joined_texts(r: &ScoredLine) -> (String, String) {
    let mut i = String::new();
    let mut o = String::new();
    for (k, (u, a)) in r.exchanges.iter().enumerate() {
        if k > 0 {
            i.push_str("\n\n");
            o.push_str("\n\n");
        }
        i.push_str(u);
        o.push_str(a);
    }
    (i, o)
}

/// The first `max_chars` characters, no ellipsis.
fn cut_plain(text: &str, max_chars: usize) -> (String, usize) {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => (text[..i].to_string(), max_chars),
        None => (text.to_string(), text.chars().count()),
    }
}
