//! `main-score`: the command-line face of the engine.
//!
//! Subcommands: `score` (alignment scores of JSONL pairs, DESIGN.md §5),
//! `generate` (completions of JSONL prompts, decoded many at once),
//! `report` (a self-contained HTML report of a scored file: histograms,
//! the fwd/rev quadrants, scores against length, example pairs,
//! duplicates, the weakest conversation turns, provenance), `inspect` (model metadata), `logprobs` (per-token log-probs and perplexity
//! of a text), `quantize` (re-encode weights to GGUF), `export` (an F32 Hugging
//! Face safetensors copy).

mod convert;
mod generate;
mod inspect;
mod logprobs;
mod progress;
mod report;
mod score;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use main_engine::matmul::Precision;
use main_engine::{Device, Error, Result};

use crate::convert::{export, quantize};
use crate::generate::{generate, GenerateArgs};
use crate::inspect::{inspect, inspect_device};
use crate::logprobs::logprobs;
use crate::report::{report, ReportArgs};
use crate::score::{score, ScoreArgs};

#[derive(Parser)]
#[command(
    name = "main-score",
    version,
    about = "MAIN: mutual alignment scores of instruction/response pairs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score instruction/response pairs: JSONL in, each record out unchanged
    /// plus an "alignment" object. Resumable: re-run with the same --output.
    Score(Box<ScoreArgs>),
    /// Complete prompts: JSONL records with a "prompt" or chat "messages"
    /// in, each out unchanged plus a "completion", many decoded at once with
    /// a KV cache. Resumable: re-run with the same --output.
    Generate(Box<GenerateArgs>),
    /// A report of a scored JSONL file that a curator reads in a minute: one
    /// self-contained HTML page (no network), and with --json its data.
    Report(Box<ReportArgs>),
    /// Print a model's architecture, sizes, tensor types, tokenizer and chat
    /// template; with `--device cuda`, the GPU and the CUDA library files it
    /// loads (the model may then be left out).
    Inspect {
        /// A GGUF file or a Hugging Face folder (config.json + safetensors).
        #[arg(required_unless_present = "device")]
        model: Option<PathBuf>,
        /// Also list every tensor.
        #[arg(long)]
        tensors: bool,
        /// cuda / cuda:N: open that GPU and print its name and the files of
        /// libcuda, libnvrtc, libcublas and libcublasLt this process loaded.
        #[arg(long, value_parser = parse_device)]
        device: Option<Device>,
    },
    /// Per-token log-probabilities and perplexity of a text.
    Logprobs {
        #[arg(long)]
        model: PathBuf,
        /// The text, tokenized as plain text with the model's BOS rule ("-" for stdin).
        #[arg(long)]
        text_file: PathBuf,
        /// Worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// exact: f32 activations against dequantized weights; fast:
        /// integer dot products with two bytes per activation, within ~1e-5
        /// relative of exact (float weights are rounded to 8 bits); int8: one
        /// byte per activation, as llama.cpp. Default: the faster of fast and
        /// exact on this CPU (fast with AVX-512 VNNI or AVX-VNNI, exact elsewhere).
        #[arg(long, value_parser = parse_precision)]
        precision: Option<Precision>,
        /// Short for `--precision exact`.
        #[arg(long, conflicts_with = "precision")]
        exact: bool,
        /// cpu, or cuda / cuda:N for an NVIDIA GPU (a build with `--features
        /// cuda`; precision bf16 by default there, or exact).
        #[arg(long, default_value = "cpu", value_parser = parse_device)]
        device: Device,
        /// Print one JSON object: {"ids", "pieces", "logprobs", "perplexity"}.
        #[arg(long)]
        json: bool,
        /// Print `{"tokens": n, "seconds": s, "precision": p}` for the forward
        /// pass to stderr (benchmarks).
        #[arg(long)]
        report_speed: bool,
    },
    /// Re-encode a model's weight matrices (GGUF or safetensors in, GGUF out).
    Quantize {
        input: PathBuf,
        output: PathBuf,
        /// f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k or q6_k.
        #[arg(long = "type")]
        dtype: String,
    },
    /// Write an F32 Hugging Face copy (config.json, model.safetensors, tokenizer.json).
    Export { input: PathBuf, output_dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Score(args) => score(*args),
        Command::Report(args) => report(*args),
        Command::Generate(args) => generate(*args),
        Command::Inspect {
            model,
            tensors,
            device,
        } => device
            .map_or(Ok(()), inspect_device)
            .and_then(|()| model.map_or(Ok(()), |m| inspect(&m, tensors))),
        Command::Logprobs {
            model,
            text_file,
            threads,
            precision,
            exact,
            device,
            json,
            report_speed,
        } => chosen_precision(exact, precision, device).and_then(|precision| {
            logprobs(
                &model,
                &text_file,
                threads,
                device,
                precision,
                json,
                report_speed,
            )
        }),
        Command::Quantize {
            input,
            output,
            dtype,
        } => quantize(&input, &output, &dtype),
        Command::Export { input, output_dir } => export(&input, &output_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("main-score: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--exact`, else `--precision`, else the device's default (the engine's
/// choice for this CPU, bf16 on a GPU); checked against the device.
pub(crate) fn chosen_precision(
    exact: bool,
    precision: Option<Precision>,
    device: Device,
) -> Result<Precision> {
    device.resolve_precision(if exact {
        Some(Precision::Exact)
    } else {
        precision
    })
}

pub(crate) fn parse_device(s: &str) -> std::result::Result<Device, String> {
    s.parse::<Device>().map_err(|e| match e {
        Error::InvalidArgument { reason, .. } => reason,
        e => e.to_string(),
    })
}

pub(crate) fn parse_precision(s: &str) -> std::result::Result<Precision, String> {
    Precision::parse(s).ok_or_else(|| format!("{s:?}: expected exact, fast, int8 or bf16 (GPU)"))
}
