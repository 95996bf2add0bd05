//! `main-score score`: its options, turned into the engine's [`JobParams`];
//! the job itself (reading, sharding, batching, resume, provenance,
//! filters, the summary's numbers) is `main_engine::job`, which Python's
//! `score_jsonl` and libmain's `main_score_jsonl` run too. Here: the
//! arguments, the progress bar and what is printed on stderr.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use main_engine::job::{self, JobEvent, JobParams, JobReport, Shard};
use main_engine::matmul::Precision;
use main_engine::pairs::Format;
use main_engine::rank::{self, RankBy};
use main_engine::score::Combine;
use main_engine::{Device, Error, Result};

use crate::progress::{resume_note, Progress};
use crate::{chosen_precision, parse_device, parse_precision};

/// The model `--model` defaults to, as scripts/fetch-fixtures names it.
const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// Forward model (GGUF or HF folder) [default: fixtures/SmolLM2-135M-Instruct.Q4_1.gguf
    /// of this checkout, or of $MAIN_FIXTURES when set].
    #[arg(long)]
    model: Option<PathBuf>,
    /// A trained reverse model; without it the forward model serves both directions.
    #[arg(long)]
    reverse_model: Option<PathBuf>,
    /// JSONL pairs: Alpaca, prompt/response or chat messages, detected per record ("-" for stdin).
    #[arg(long, default_value = "-")]
    input: PathBuf,
    /// Where the scored records go ("-" for stdout, which cannot resume).
    #[arg(long, default_value = "-")]
    output: PathBuf,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Longest view in tokens; longer content is cut and the pair flagged "truncated".
    #[arg(long, default_value_t = 1024)]
    max_tokens: usize,
    /// exact: f32 activations against dequantized weights; fast: integer
    /// dot products with two bytes per activation, within ~1e-5 relative of
    /// exact (float weights are rounded to 8 bits); int8: one byte per
    /// activation, as llama.cpp. Default: the faster of fast and exact on
    /// this CPU (fast with AVX-512 VNNI or AVX-VNNI, exact elsewhere).
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
    /// Short for `--precision exact`.
    #[arg(long, conflicts_with = "precision")]
    exact: bool,
    /// cpu, or cuda / cuda:N: score on an NVIDIA GPU (a build with
    /// `--features cuda`), where the precision is bf16 by default, or exact.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// How "alignment" joins the two directions.
    #[arg(long, default_value = "min", value_parser = ["min", "mean", "softmin"])]
    combine: String,
    /// Other responses of the same batch per pair for the contrastive (InfoNCE) score.
    #[arg(long, default_value_t = 0)]
    negatives: usize,
    /// Per-token detail of both directions in each record.
    #[arg(long)]
    tokens: bool,
    /// Pairs per fused scoring call, and per output write.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Keep the best FRACTION of records by --rank-by (round(FRACTION x count) of them).
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    keep_top: Option<f64>,
    /// The score --keep-top ranks by, best first; a leading '-' keeps the
    /// lowest (-ifd ranks as fwd_pmi does; ifd, highest first, is
    /// Cherry-LLM's direction). The default is the ranking the quality
    /// benchmark supports (README, "What the scores mean").
    #[arg(long, value_name = "FIELD", default_value = rank::DEFAULT_RANK_BY,
          value_parser = parse_rank_by, allow_hyphen_values = true)]
    rank_by: RankBy,
    /// The mismatch filter: keep records whose alignment is at least X (the
    /// response answers this instruction; with --keep-top both must hold).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    min_alignment: Option<f64>,
    /// Score only the records on 0-based lines L with L % N == I.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Report invalid records on stderr and go on, instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
    /// Show the progress bar even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Field holding the instruction, instead of detecting the format.
    #[arg(long, requires = "response_field")]
    instruction_field: Option<String>,
    /// Field holding the response (with --instruction-field).
    #[arg(long, requires = "instruction_field")]
    response_field: Option<String>,
    /// Field appended to the instruction after a blank line, as Alpaca's "input".
    #[arg(long, requires = "instruction_field")]
    input_field: Option<String>,
}

fn parse_rank_by(s: &str) -> std::result::Result<RankBy, String> {
    s.parse()
}

fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("'{s}' is not a fraction in (0, 1]")),
    }
}

/// `--model`'s default: the fixture model of the checkout this executable
/// was built in (target/<profile>/main-score), or of $MAIN_FIXTURES.
fn default_model() -> Result<PathBuf> {
    let fixtures = match std::env::var_os("MAIN_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe =
                std::env::current_exe().map_err(|e| Error::io("the main-score executable", e))?;
            let root = exe
                .ancestors()
                .find(|d| d.join("scripts/fetch-fixtures").is_file());
            match root {
                Some(root) => root.join("fixtures"),
                None => {
                    return Err(Error::invalid_argument(
                        "--model",
                        format!(
                            "not given, and {} is not inside a MAIN checkout and MAIN_FIXTURES is unset",
                            exe.display()
                        ),
                    ))
                }
            }
        }
    };
    let path = fixtures.join(DEFAULT_MODEL);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::invalid_argument(
            "--model",
            format!(
                "not given, and the default model {} is missing: run scripts/fetch-fixtures",
                path.display()
            ),
        ))
    }
}

fn parse_shard(s: &str) -> std::result::Result<Shard, String> {
    s.parse()
}

/// Runs `main-score score`: the engine's job, with a progress bar and notes
/// on stderr, then the summary.
pub fn score(a: ScoreArgs) -> Result<()> {
    let model = match a.model.clone() {
        Some(p) => p,
        None => default_model()?,
    };
    let format = match (&a.instruction_field, &a.response_field) {
        (Some(instruction), Some(response)) => Format::Fields {
            instruction: instruction.clone(),
            response: response.clone(),
            input: a.input_field.clone(),
        },
        _ => Format::Auto,
    };
    let params = JobParams {
        input: a.input.clone(),
        output: a.output.clone(),
        model,
        reverse_model: a.reverse_model.clone(),
        n_threads: a.threads,
        max_tokens: a.max_tokens,
        precision: Some(chosen_precision(a.exact, a.precision, a.device)?),
        device: a.device,
        combine: Combine::parse(&a.combine)?,
        negatives: a.negatives,
        tokens: a.tokens,
        batch: a.batch as usize,
        keep_top: a.keep_top,
        rank_by: a.rank_by.clone(),
        min_alignment: a.min_alignment,
        shard: a.shard.unwrap_or_default(),
        skip_invalid: a.skip_invalid,
        format,
    };
    let show_progress = a.progress || std::io::stderr().is_terminal();
    let mut bar: Option<Progress> = None;
    let result = job::run(&params, &mut |event| {
        match event {
            e @ (JobEvent::DroppedPartialLine { .. } | JobEvent::Resuming { .. }) => resume_note(e),
            JobEvent::Started { total } => bar = Some(Progress::new(show_progress, *total)),
            JobEvent::Scored { done, .. } => {
                if let Some(bar) = &bar {
                    bar.set(*done);
                }
            }
            JobEvent::Skipped { error } => match error {
                Error::Record { file, line, reason } => {
                    eprintln!("main-score: skipping {file} line {line}: {reason}")
                }
                e => eprintln!("main-score: skipping {e}"),
            },
        }
        ControlFlow::Continue(())
    });
    if let Some(bar) = &bar {
        bar.finish();
    }
    print_summary(&result?, &params);
    Ok(())
}

/// The closing summary on stderr: counts, what the filters kept, and for
/// each main score its quantiles and its rank correlation with response
/// length, with a warning where a score mostly measures length.
fn print_summary(report: &JobReport, params: &JobParams) {
    let name = if report.scored == Path::new("-") {
        "stdout".to_string()
    } else {
        report.scored.display().to_string()
    };
    eprintln!(
        "main-score: {} records in {name} ({} scored now, {} from before), {} invalid skipped",
        report.records(),
        report.scored_now,
        report.resumed,
        report.invalid
    );
    if let Some(kept) = report.kept {
        eprintln!(
            "main-score: kept {kept} of {} in {}",
            report.records(),
            params.output.display()
        );
    }
    let rows = report.rows();
    let num = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.4}"));
    eprintln!(
        "{:<14} {:>10} {:>10} {:>10} {:>10}",
        "", "p10", "p50", "p90", "rho_length"
    );
    for r in &rows {
        eprintln!(
            "{:<14} {:>10} {:>10} {:>10} {:>10}",
            r.field,
            num(r.p10),
            num(r.p50),
            num(r.p90),
            r.rho_length.map_or("-".to_string(), |x| format!("{x:+.3}"))
        );
    }
    for warning in rows.iter().filter_map(|r| r.length_warning()) {
        eprintln!("main-score: warning: {warning}");
    }
}
