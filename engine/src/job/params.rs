//! What a scoring job is asked to do: [`JobParams`], one struct for every
//! skin (`main-score score`'s options, `main_align.score_jsonl`'s keyword
//! arguments, libmain's `main_job_params`), with the CLI's defaults.

use std::path::{Path, PathBuf};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::matmul::Precision;
use crate::pairs::Format;
use crate::rank::RankBy;
use crate::score::Combine;
use crate::scorer::ScorerParams;

use super::shard::Shard;

/// A scoring job. Start from [`JobParams::default`] and set what you need.
///
/// Errors about these fields name them as `main-score score` spells its
/// options (`--output`, `--negatives`, ...): the job is that command's.
#[derive(Clone, Debug, PartialEq)]
pub struct JobParams {
    /// JSONL records: Alpaca, prompt/response or a conversation, detected per
    /// record (or as `format` says). `-` is stdin.
    pub input: PathBuf,
    /// Where the scored records go; `-` is stdout, which cannot resume. A
    /// file is resumed when it holds records of the same job.
    pub output: PathBuf,
    /// The forward model: a GGUF file or a Hugging Face folder. Required.
    pub model: PathBuf,
    /// A trained reverse model; `None`: the forward model serves both directions.
    pub reverse_model: Option<PathBuf>,
    /// Worker threads (0 = one per core).
    pub n_threads: usize,
    /// Longest view in tokens; longer content is cut and the record flagged.
    pub max_tokens: usize,
    /// `None`: the device's default ([`Device::resolve_precision`]).
    pub precision: Option<Precision>,
    pub device: Device,
    /// How `alignment` joins the two directions.
    pub combine: Combine,
    /// Other responses of the same batch per pair for `contrastive` (0: off).
    pub negatives: usize,
    /// Per-token detail of both directions in each record.
    pub tokens: bool,
    /// Records per fused scoring call and per output write (at least 1,
    /// above `negatives`).
    pub batch: usize,
    /// Keep the best fraction (in (0, 1]) of the records by `rank_by`.
    pub keep_top: Option<f64>,
    /// The score `keep_top` ranks by.
    pub rank_by: RankBy,
    /// The mismatch filter: keep records whose alignment is at least this.
    pub min_alignment: Option<f64>,
    /// Score only this shard of the input lines.
    pub shard: Shard,
    /// Report invalid records through the progress callback and go on,
    /// instead of stopping at the first.
    pub skip_invalid: bool,
    /// How a record's fields map onto a pair.
    pub format: Format,
}

impl Default for JobParams {
    /// `main-score score`'s defaults; `model` is empty and must be set.
    fn default() -> JobParams {
        let scorer = ScorerParams::default();
        JobParams {
            input: PathBuf::from("-"),
            output: PathBuf::from("-"),
            model: PathBuf::new(),
            reverse_model: None,
            n_threads: 0,
            max_tokens: scorer.max_tokens,
            precision: None,
            device: Device::Cpu,
            combine: Combine::default(),
            negatives: 0,
            tokens: false,
            batch: 16,
            keep_top: None,
            rank_by: RankBy::default(),
            min_alignment: None,
            shard: Shard::default(),
            skip_invalid: false,
            format: Format::Auto,
        }
    }
}

/// `-`: stdin or stdout.
pub(crate) fn is_stdio(path: &Path) -> bool {
    path == Path::new("-")
}

impl JobParams {
    /// Whether the scored records are filtered (then staged first).
    pub fn filtering(&self) -> bool {
        self.keep_top.is_some() || self.min_alignment.is_some()
    }

    /// Where every scored record goes: `output`, or, when filtering,
    /// [`scored_path`]`(output)`, from which the kept ones are cut.
    pub fn staged(&self) -> PathBuf {
        if self.filtering() {
            scored_path(&self.output)
        } else {
            self.output.clone()
        }
    }

    /// The input as messages name it.
    pub(crate) fn input_name(&self) -> String {
        if is_stdio(&self.input) {
            "stdin".to_string()
        } else {
            self.input.display().to_string()
        }
    }

    /// The arguments a scorer cannot check: refused before anything is
    /// read or loaded.
    pub fn check(&self) -> Result<()> {
        if self.model.as_os_str().is_empty() {
            return Err(Error::invalid_argument("--model", "not given"));
        }
        if self.filtering() && is_stdio(&self.output) {
            return Err(Error::invalid_argument(
                "--output",
                "--keep-top and --min-alignment need an output file: they stage all scores in OUTPUT.scored.jsonl first",
            ));
        }
        if let Some(f) = self.keep_top {
            if !(f > 0.0 && f <= 1.0) {
                return Err(Error::invalid_argument(
                    "--keep-top",
                    format!("{f} is not a fraction in (0, 1]"),
                ));
            }
        }
        if self.min_alignment.is_some_and(f64::is_nan) {
            return Err(Error::invalid_argument("--min-alignment", "is NaN"));
        }
        if self.batch == 0 {
            return Err(Error::invalid_argument("--batch", "must be at least 1"));
        }
        if self.negatives >= self.batch {
            return Err(Error::invalid_argument(
                "--negatives",
                format!(
                    "{} negatives are drawn from the same batch: --batch must be above it (it is {})",
                    self.negatives, self.batch
                ),
            ));
        }
        Shard::new(self.shard.index, self.shard.count)?;
        Ok(())
    }
}

/// `OUTPUT.scored.jsonl`: every scored record, before the filters.
pub fn scored_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".scored.jsonl");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_model() -> JobParams {
        JobParams {
            model: "m.gguf".into(),
            ..JobParams::default()
        }
    }

    #[test]
    fn check_refuses_what_cannot_run() {
        assert!(with_model().check().is_ok());
        let e = |p: JobParams| p.check().unwrap_err().to_string();
        assert!(e(JobParams::default()).contains("'--model': not given"));
        let filter_to_stdout = JobParams {
            keep_top: Some(0.5),
            ..with_model()
        };
        assert!(e(filter_to_stdout).contains("need an output file"));
        let negatives = JobParams {
            negatives: 16,
            ..with_model()
        };
        assert!(e(negatives).contains("--batch must be above it (it is 16)"));
        let batch = JobParams {
            batch: 0,
            ..with_model()
        };
        assert!(e(batch).contains("'--batch'"));
        let fraction = JobParams {
            output: "o.jsonl".into(),
            keep_top: Some(1.5),
            ..with_model()
        };
        assert!(e(fraction).contains("not a fraction"));
        let shard = JobParams {
            shard: Shard { index: 3, count: 2 },
            ..with_model()
        };
        assert!(e(shard).contains("below the shard count"));
    }

    #[test]
    fn filtering_stages_the_scores() {
        let p = JobParams {
            output: "kept.jsonl".into(),
            min_alignment: Some(0.0),
            ..with_model()
        };
        assert_eq!(p.staged(), PathBuf::from("kept.jsonl.scored.jsonl"));
        assert_eq!(with_model().staged(), PathBuf::from("-"));
    }
}
