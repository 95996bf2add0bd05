//! `main-score`: the command-line face of the engine.
//!
//! Subcommands: `score` (alignment scores of JSONL pairs, DESIGN.md §5),
//! `inspect` (model metadata), `logprobs` (per-token log-probs and perplexity
//! of a text), `quantize` (re-encode weights to GGUF), `export` (an F32 Hugging
//! Face safetensors copy).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use clap::{Parser, Subcommand};
use main_engine::atomic_write::{write_atomic, write_atomic_with};
use main_engine::conversation::Turn;
use main_engine::job::{splice_alignment, RecordScore};
use main_engine::logprob::{perplexity, sequence_logprobs};
use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};
use main_engine::pairs::{self, Format, Sample};
use main_engine::quant::DType;
use main_engine::rank::{self, RankBy};
use main_engine::score::Combine;
use main_engine::scorer::{Scorer, ScorerParams};
use main_engine::summary::Summary;
use main_engine::{convert, Device, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
        /// exact on this CPU (fast with AVX-512 VNNI, exact elsewhere).
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

/// `inspect --device cuda:N`: the CUDA libraries as cudarc finds them,
/// printed before the GPU is opened (so a failing open still shows them),
/// then the GPU and the files the process holds once the kernels compiled.
fn inspect_device(device: Device) -> Result<()> {
    let Device::Cuda(ordinal) = device else {
        return Err(Error::invalid_argument(
            "--device",
            "inspect describes a GPU: give cuda or cuda:N",
        ));
    };
    let mut out = std::io::stdout().lock();
    let mut w = |k: &str, v: &str| {
        writeln!(out, "{:<32}{v}", format!("{k}:")).map_err(|e| Error::io("stdout", e))
    };
    for (what, file) in main_engine::cuda::libraries(ordinal)? {
        w(&what, &file)?;
    }
    for (what, value) in main_engine::cuda::device_report(ordinal)? {
        w(&what, &value)?;
    }
    Ok(())
}

fn inspect(path: &Path, list_tensors: bool) -> Result<()> {
    let model = Model::load(path)?;
    let c = &model.config;
    let mut out = std::io::stdout().lock();
    let w = |out: &mut std::io::StdoutLock, s: String| {
        writeln!(out, "{s}").map_err(|e| Error::io("stdout", e))
    };
    w(&mut out, format!("model:          {}", path.display()))?;
    w(&mut out, format!("architecture:   {}", c.architecture))?;
    w(&mut out, format!("layers:         {}", c.n_layers))?;
    w(&mut out, format!("d_model:        {}", c.d_model))?;
    w(
        &mut out,
        format!(
            "heads:          {} (kv {}), head_dim {}",
            c.n_heads, c.n_kv_heads, c.head_dim
        ),
    )?;
    w(&mut out, format!("d_ff:           {}", c.d_ff))?;
    w(&mut out, format!("vocab:          {}", c.vocab_size))?;
    w(&mut out, format!("context:        {}", c.context_length))?;
    w(
        &mut out,
        format!(
            "rope:           theta {} ({:?}{})",
            c.rope_theta,
            c.rope_style,
            if c.rope_freq_factors.is_some() {
                ", scaled"
            } else {
                ""
            }
        ),
    )?;
    w(
        &mut out,
        format!(
            "sliding window: {}",
            c.sliding_window.map_or("none".into(), |s| s.to_string())
        ),
    )?;
    w(&mut out, format!("rms eps:        {}", c.rms_eps))?;
    let mut tensors: Vec<_> = model.tensors().collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let params: usize = tensors.iter().map(|t| t.n_elements()).sum();
    let mut by_type = std::collections::BTreeMap::<&str, (usize, usize)>::new();
    for t in &tensors {
        let e = by_type.entry(t.dtype.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
    }
    w(
        &mut out,
        format!(
            "parameters:     {params} ({:.1} MB of weights)",
            model.weight_bytes() as f64 / 1e6
        ),
    )?;
    for (ty, (n, bytes)) in by_type {
        w(
            &mut out,
            format!("  {ty:<6} {n:>4} tensors, {:.1} MB", bytes as f64 / 1e6),
        )?;
    }
    let tok = &model.tokenizer;
    w(
        &mut out,
        format!(
            "tokenizer:      {} tokens, bos {:?}, eos {:?}, eot {:?}, adds BOS: {}",
            tok.vocab_size(),
            tok.bos_id(),
            tok.eos_id(),
            tok.eot_id(),
            tok.add_bos_default()
        ),
    )?;
    match &model.chat_template {
        Some(t) => w(&mut out, format!("chat template:\n{t}"))?,
        None => w(
            &mut out,
            "chat template:  none (the Alpaca template is used)".into(),
        )?,
    }
    if list_tensors {
        for t in tensors {
            w(
                &mut out,
                format!("{:<32} {:<5} {:?}", t.name, t.dtype.name(), t.dims),
            )?;
        }
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = if path == Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .map_err(|e| Error::io("stdin", e))?;
        b
    } else {
        std::fs::read(path).map_err(|e| Error::io(path, e))?
    };
    String::from_utf8(bytes).map_err(|e| {
        Error::Input(format!(
            "{} is not valid UTF-8 (first bad byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

fn logprobs(
    model_path: &Path,
    text_file: &Path,
    threads: usize,
    device: Device,
    precision: Precision,
    json: bool,
    report_speed: bool,
) -> Result<()> {
    let text = read_text(text_file)?;
    let model = Model::load(model_path)?;
    let ids = model
        .tokenizer
        .encode(&text, model.tokenizer.add_bos_default(), false)?;
    let start = std::time::Instant::now();
    let lps = match device {
        Device::Cpu => sequence_logprobs(&model, &Runtime::new(threads, precision), &ids)?,
        Device::Cuda(n) => main_engine::cuda::sequence_logprobs(&model, n, precision, &ids)?,
    };
    if report_speed {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{}",
            serde_json::json!({
                "tokens": ids.len(),
                "seconds": secs,
                "precision": precision.name(),
                "device": device.to_string(),
                // What MAIN_ISA and the CPU left the matmuls (the GPU ignores it).
                "kernels": main_engine::kernels::isa_name(main_engine::kernels::best().isa),
            })
        );
    }
    let ppl = perplexity(&lps);
    let pieces: Vec<String> = ids.iter().map(|&id| model.tokenizer.piece(id)).collect();
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("stdout", e);
    if json {
        let obj =
            serde_json::json!({ "ids": ids, "pieces": pieces, "logprobs": lps, "perplexity": ppl });
        writeln!(out, "{obj}").map_err(io)?;
    } else {
        for ((id, piece), lp) in ids.iter().zip(&pieces).zip(&lps) {
            let lp = lp.map_or("-".to_string(), |v| format!("{v:.4}"));
            writeln!(out, "{id:>7} {lp:>10}  {piece:?}").map_err(io)?;
        }
        writeln!(out, "tokens: {}  perplexity: {ppl:.4}", ids.len()).map_err(io)?;
    }
    Ok(())
}

fn quantize(input: &Path, output: &Path, dtype: &str) -> Result<()> {
    let ty = DType::from_name(dtype).ok_or_else(|| {
        Error::invalid_argument(
            "--type",
            format!("'{dtype}' is not one of f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k"),
        )
    })?;
    let model = Model::load(input)?;
    let report = convert::write_gguf(&model, ty, output)?;
    eprintln!(
        "main-score: wrote {} ({} tensors, {:.1} MB)",
        output.display(),
        report.n_tensors,
        report.n_bytes as f64 / 1e6
    );
    Ok(())
}

fn export(input: &Path, output_dir: &Path) -> Result<()> {
    let model = Model::load(input)?;
    convert::write_hf_f32(&model, output_dir)?;
    eprintln!("main-score: wrote {}", output_dir.display());
    Ok(())
}

// ---------------------------------------------------------------------------
// score: JSONL pairs in, JSONL records with "alignment" out
//
// Resume: the output itself is the checkpoint. On start, a trailing partial
// line (a run killed mid-write) is cut off, the complete lines are counted,
// and that many eligible input records (in this shard, and valid) are skipped.
// Each batch is written with one write call, so a kill leaves at most one
// partial line; a failed write (a full disk) is cut back to the last complete
// record at once.
//
// Resuming must never mix runs, so the output carries its provenance:
// OUTPUT.provenance.json beside it names the input, the model files and every
// option that changes a score, each file by length and BLAKE3 hash, and each
// record's "alignment" holds its 1-based input "line". A resume whose input,
// models or options differ, or whose records do not sit on the lines this
// input gives them, is refused with what differs and how to start afresh.
//
// Shards: the record on 0-based input line L belongs to shard L % N. Outputs
// of all N shards hold every record exactly once, and each keeps input order.
//
// Filters (--keep-top, --min-alignment) need every score first: records are
// streamed to OUTPUT.scored.jsonl (resumable as above), then the kept ones are
// written to OUTPUT through a temporary file and a rename.
// ---------------------------------------------------------------------------

/// The model `--model` defaults to, as scripts/fetch-fixtures names it.
const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(clap::Args)]
struct ScoreArgs {
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
    /// this CPU (fast with AVX-512 VNNI, exact elsewhere).
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

#[derive(Clone, Copy, Debug)]
struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    fn holds(self, line_index: usize) -> bool {
        line_index % self.count == self.index
    }
}

fn parse_shard(s: &str) -> std::result::Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("'{s}' is not I/N, e.g. 0/4"))?;
    let index: usize = i
        .parse()
        .map_err(|_| format!("shard index '{i}' is not a number"))?;
    let count: usize = n
        .parse()
        .map_err(|_| format!("shard count '{n}' is not a number"))?;
    if index >= count {
        return Err(format!(
            "shard index {index} must be below the shard count {count}"
        ));
    }
    Ok(Shard { index, count })
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

/// `OUTPUT.scored.jsonl`: every scored record, before the filters.
fn scored_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".scored.jsonl");
    PathBuf::from(name)
}

fn is_stdio(path: &Path) -> bool {
    path == Path::new("-")
}

fn score(a: ScoreArgs) -> Result<()> {
    let filtering = a.keep_top.is_some() || a.min_alignment.is_some();
    if filtering && is_stdio(&a.output) {
        return Err(Error::invalid_argument(
            "--output",
            "--keep-top and --min-alignment need an output file: they stage all scores in OUTPUT.scored.jsonl first",
        ));
    }
    if a.negatives as u64 >= a.batch {
        return Err(Error::invalid_argument(
            "--negatives",
            format!(
                "{} negatives are drawn from the same batch: --batch must be above it (it is {})",
                a.negatives, a.batch
            ),
        ));
    }
    let format = match (&a.instruction_field, &a.response_field) {
        (Some(instruction), Some(response)) => Format::Fields {
            instruction: instruction.clone(),
            response: response.clone(),
            input: a.input_field.clone(),
        },
        _ => Format::Auto,
    };
    let shard = a.shard.unwrap_or(Shard { index: 0, count: 1 });
    let input_name = if is_stdio(&a.input) {
        "stdin".to_string()
    } else {
        a.input.display().to_string()
    };
    let staged = if filtering {
        scored_path(&a.output)
    } else {
        a.output.clone()
    };

    // The output is checked before the model loads, so a wrong --output fails at once.
    let mut summary = Summary::default();
    let (sink, done_lines) = Sink::open(&staged, &mut summary)?;
    let resumed = done_lines.len();

    let model_path = match a.model.clone() {
        Some(p) => p,
        None => default_model()?,
    };
    let precision = chosen_precision(a.exact, a.precision, a.device)?;
    if !is_stdio(&staged) {
        let made_of = Provenance::of_run(&a, &model_path, precision)?;
        made_of.check_or_start(&staged, resumed)?;
    }
    if resumed > 0 {
        eprintln!(
            "main-score: {}: resuming after {resumed} records",
            staged.display()
        );
    }

    let forward = Arc::new(Model::load(&model_path)?);
    let reverse = a
        .reverse_model
        .as_deref()
        .map(Model::load)
        .transpose()?
        .map(Arc::new);
    let params = ScorerParams {
        n_threads: a.threads,
        max_tokens: a.max_tokens,
        combine: Combine::parse(&a.combine)?,
        negatives: a.negatives,
        tokens: a.tokens,
        precision,
        device: a.device,
        ..ScorerParams::default()
    };
    let scorer = Scorer::new(forward, reverse, params)?;

    let show_progress = a.progress || std::io::stderr().is_terminal();
    // Stdin cannot be read twice, so its bar has no total.
    let total = if show_progress && !is_stdio(&a.input) {
        Some(count_in_shard(&a.input, shard)?.saturating_sub(resumed))
    } else {
        None
    };
    let mut job = ScoreJob {
        scorer,
        batch_size: a.batch as usize,
        negatives: a.negatives,
        batch: Vec::new(),
        previous: Vec::new(),
        sink,
        summary,
        progress: Progress::new(show_progress, total),
    };

    let mut reader: Box<dyn BufRead> = if is_stdio(&a.input) {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(BufReader::new(
            File::open(&a.input).map_err(|e| Error::io(&a.input, e))?,
        ))
    };
    let mut done_lines = done_lines.into_iter();
    let (mut to_skip, mut invalid) = (resumed, 0usize);
    let mut buf = Vec::new();
    for line_index in 0.. {
        buf.clear();
        if reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(&a.input, e))?
            == 0
        {
            break;
        }
        if !shard.holds(line_index) {
            continue;
        }
        let parsed = match record_text(&buf, line_index) {
            Ok(None) => continue,
            Ok(Some(text)) => parse_record(text, line_index, &format).map(|sample| (text, sample)),
            Err(e) => Err(e),
        };
        match parsed {
            Ok((text, sample)) => {
                // Records already in the output still join their batch, so
                // batches (and the negatives drawn from them) match an
                // uninterrupted run.
                let line = if to_skip > 0 {
                    to_skip -= 1;
                    let done = done_lines.next().unwrap_or(0);
                    if done != line_index + 1 {
                        return Err(record_mismatch(
                            &staged,
                            resumed - to_skip,
                            done,
                            &input_name,
                            line_index + 1,
                        ));
                    }
                    None
                } else {
                    Some(text.to_string())
                };
                job.push(Entry {
                    line,
                    line_no: line_index + 1,
                    sample,
                })?;
            }
            Err(e) if a.skip_invalid => {
                eprintln!("main-score: skipping {input_name} {e}");
                invalid += 1;
            }
            Err(e) => {
                job.finish()?;
                return Err(Error::Input(format!("{input_name}, {e}")));
            }
        }
    }
    job.finish()?;
    if to_skip > 0 {
        return Err(Error::invalid_argument(
            "--output",
            format!(
                "{} holds {resumed} records but {input_name} has only {} eligible ones: not an output of this input, shard and format; {}",
                staged.display(),
                resumed - to_skip,
                start_afresh(&staged)
            ),
        ));
    }

    let ScoreJob {
        summary, progress, ..
    } = job;
    let scored_now = progress.done;
    let kept = if filtering {
        let rules = Filter {
            keep_top: a.keep_top,
            rank_by: a.keep_top.map(|_| a.rank_by.to_string()),
            min_alignment: a.min_alignment,
            min_alignment_field: a.min_alignment.map(|_| "alignment".to_string()),
            scored: staged.display().to_string(),
            kept: 0,
            of: summary.count(),
        };
        Some((
            filter(&staged, &a.output, &a.rank_by, rules)?,
            a.output.as_path(),
        ))
    } else {
        None
    };
    print_summary(&summary, &staged, scored_now, resumed, invalid, kept);
    Ok(())
}

/// The JSON text of one input line, `None` for a blank one.
fn record_text(
    buf: &[u8],
    line_index: usize,
) -> std::result::Result<Option<&str>, pairs::RecordError> {
    let text = std::str::from_utf8(buf).map_err(|e| pairs::RecordError {
        line: line_index + 1,
        reason: format!(
            "not valid UTF-8 (bad byte at column {})",
            e.valid_up_to() + 1
        ),
    })?;
    // Editors on Windows start files with a byte-order mark, which JSON forbids.
    let text = if line_index == 0 {
        text.trim_start_matches('\u{feff}')
    } else {
        text
    };
    let text = text.trim_end();
    Ok((!text.trim_start().is_empty()).then_some(text))
}

fn parse_record(
    text: &str,
    line_index: usize,
    format: &Format,
) -> std::result::Result<Sample, pairs::RecordError> {
    let (record, sample) = pairs::parse_sample_line(text, line_index + 1, format)?;
    // A second "alignment" key would make the output ambiguous JSON.
    if record.contains_key("alignment") {
        return Err(pairs::RecordError {
            line: line_index + 1,
            reason: "the record already has an \"alignment\" key (scored before?)".into(),
        });
    }
    Ok(sample)
}

/// Lines of the input in this shard: the progress bar's total.
fn count_in_shard(path: &Path, shard: Shard) -> Result<usize> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut chunk = vec![0u8; 1 << 16];
    let (mut lines, mut last) = (0usize, b'\n');
    loop {
        let n = file.read(&mut chunk).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        lines += chunk[..n].iter().filter(|&&b| b == b'\n').count();
        last = chunk[n - 1];
    }
    if last != b'\n' {
        lines += 1;
    }
    Ok((lines + shard.count - 1 - shard.index) / shard.count)
}

/// One eligible input record: its text (`None` when already in the output
/// from an earlier run), its 1-based input line number and what it holds.
struct Entry {
    line: Option<String>,
    line_no: usize,
    sample: Sample,
}

/// The scored turns of a sample: a pair is one.
fn turns_of(sample: &Sample) -> Vec<Turn<'_>> {
    match sample {
        Sample::Pair(p) => vec![Turn::of_pair(p)],
        Sample::Conversation(c) => c.turns().collect(),
    }
}

struct ScoreJob {
    scorer: Scorer,
    batch_size: usize,
    negatives: usize,
    batch: Vec<Entry>,
    /// Records of the batch before, to fill a short last batch up to the
    /// `negatives + 1` turns the contrastive score draws from.
    previous: Vec<Sample>,
    sink: Sink,
    summary: Summary,
    progress: Progress,
}

impl ScoreJob {
    fn push(&mut self, entry: Entry) -> Result<()> {
        self.batch.push(entry);
        if self.batch.len() == self.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.progress.finish();
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        let n_new = batch.iter().filter(|e| e.line.is_some()).count();
        if n_new > 0 {
            let k = self.negatives;
            // Without negatives a pair's score does not depend on its batch,
            // so records already written need no scoring.
            let scored: Vec<&Entry> = batch.iter().filter(|e| k > 0 || e.line.is_some()).collect();
            // Every turn of every record, in order (a pair is one turn).
            let mut turns: Vec<Turn> = scored.iter().flat_map(|e| turns_of(&e.sample)).collect();
            if k > 0 && turns.len() < k + 1 {
                let need = k + 1 - turns.len();
                turns.extend(self.previous.iter().flat_map(turns_of).take(need));
                if turns.len() < k + 1 {
                    return Err(Error::invalid_argument(
                        "--negatives",
                        format!(
                            "{k} negatives need at least {} pairs or turns, the input has {}",
                            k + 1,
                            turns.len()
                        ),
                    ));
                }
            }
            // An error about a turn names its record's line, and its turn
            // when the record is a conversation.
            let names: Vec<String> = scored
                .iter()
                .flat_map(|e| match &e.sample {
                    Sample::Pair(_) => vec![format!("line {}", e.line_no)],
                    Sample::Conversation(c) => (1..=c.n_turns())
                        .map(|k| format!("line {} (turn {k})", e.line_no))
                        .collect(),
                })
                .collect();
            let name = |i: usize| {
                names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("a record of the batch before (pair {i})"))
            };
            let mut scores = self.scorer.score_turns_named(&turns, &name)?.into_iter();
            let mut out = Vec::new();
            for entry in &scored {
                let record = match &entry.sample {
                    Sample::Pair(_) => RecordScore::Pair(scores.next().expect("one score a turn")),
                    Sample::Conversation(c) => {
                        RecordScore::Conversation(scores.by_ref().take(c.n_turns()).collect())
                    }
                };
                if let Some(line) = &entry.line {
                    splice_alignment(&mut out, line, entry.line_no, &record)?;
                    self.summary.add_score(record.overall());
                }
            }
            self.sink.write_batch(&out)?;
            self.progress.advance(n_new);
        }
        if !batch.is_empty() {
            self.previous = batch.into_iter().map(|e| e.sample).collect();
        }
        Ok(())
    }
}

/// Where scored records go: stdout, or a file resumed after its last complete line.
enum Sink {
    Stdout(std::io::Stdout),
    File {
        file: File,
        path: PathBuf,
        /// Bytes of complete records: where a failed write is cut back to.
        len: u64,
    },
}

/// The object of a written record that the summary and the filters read.
#[derive(Deserialize)]
struct ScoredRecord {
    alignment: ScoredFields,
}

/// A record's `"alignment"` object: its scores by name (`null` where the
/// scorer produced a NaN) and `"line"`, its 1-based input line (absent in
/// outputs of older versions).
#[derive(Deserialize)]
struct ScoredFields(serde_json::Map<String, serde_json::Value>);

impl ScoredFields {
    fn number(&self, name: &str) -> Option<f64> {
        self.0.get(name).and_then(serde_json::Value::as_f64)
    }

    fn line(&self) -> Option<usize> {
        self.0
            .get("line")
            .and_then(serde_json::Value::as_u64)
            .map(|n| n as usize)
    }
}

fn read_scored(line: &[u8], path: &Path, line_no: usize) -> Result<ScoredFields> {
    serde_json::from_slice::<ScoredRecord>(line).map(|r| r.alignment).map_err(|e| {
        Error::Input(format!(
            "{}, line {line_no}: not a record written by main-score score ({e}); remove the file or choose another --output",
            path.display()
        ))
    })
}

impl Sink {
    /// Opens `path`, cutting a trailing partial line, and returns the input
    /// line of each complete record already there (their scores go into
    /// `summary`); a record without its line is `0`.
    fn open(path: &Path, summary: &mut Summary) -> Result<(Sink, Vec<usize>)> {
        if is_stdio(path) {
            return Ok((Sink::Stdout(std::io::stdout()), Vec::new()));
        }
        let io = |e| Error::io(path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let (mut complete, mut lines) = (0u64, Vec::new());
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let s = read_scored(&line, path, lines.len() + 1)?;
            summary.add(|name| s.number(name));
            lines.push(s.line().unwrap_or(0));
            complete += n as u64;
        }
        drop(reader);
        let len = file.metadata().map_err(io)?.len();
        if len > complete {
            eprintln!(
                "main-score: {}: dropping a partial last line ({} bytes) left by an interrupted run",
                path.display(),
                len - complete
            );
            file.set_len(complete).map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            Sink::File {
                file,
                path: path.to_path_buf(),
                len: complete,
            },
            lines,
        ))
    }

    fn write_batch(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(bytes)
                    .and_then(|_| out.flush())
                    .map_err(|e| Error::io("stdout", e))
            }
            Sink::File { file, path, len } => match file.write_all(bytes) {
                Ok(()) => {
                    *len += bytes.len() as u64;
                    Ok(())
                }
                // A full disk (or a file-size limit) takes part of a batch:
                // cut back to the last complete record, so the file stays a
                // clean checkpoint for the next run.
                Err(e) => {
                    let cut = file
                        .set_len(*len)
                        .and_then(|()| file.seek(SeekFrom::Start(*len)));
                    let note = match cut {
                        Ok(_) => "; the records before this batch are intact: run the same command again to resume",
                        Err(_) => "; a partial record may remain, which the next run drops",
                    };
                    Err(Error::Input(format!(
                        "writing scores to {}: {e}{note}",
                        path.display()
                    )))
                }
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Provenance: what a scored output was made from
// ---------------------------------------------------------------------------

/// Bumped when the records or the provenance file change meaning. 2:
/// `messages` records are conversations, every turn scored (with the system
/// message), so an output begun before must not be continued.
const PROVENANCE_VERSION: u32 = 2;

/// `OUTPUT.provenance.json`: what OUTPUT was made from.
fn provenance_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".provenance.json");
    PathBuf::from(name)
}

/// The advice every refused resume ends with.
fn start_afresh(output: &Path) -> String {
    format!(
        "to start afresh, remove {} and {} (or choose another --output)",
        output.display(),
        provenance_path(output).display()
    )
}

fn record_mismatch(
    output: &Path,
    record: usize,
    its_line: usize,
    input_name: &str,
    line: usize,
) -> Error {
    let was = match its_line {
        0 => "has no input line (written by an older main-score)".to_string(),
        n => format!("is for input line {n}"),
    };
    Error::invalid_argument(
        "--output",
        format!(
            "record {record} of {} {was}, but the next record of {input_name} to resume after is on line {line}: the output does not match this input, shard and format; {}",
            output.display(),
            start_afresh(output)
        ),
    )
}

/// A file by content: two files are the same input when length and hash
/// agree, wherever they lie (data sets move between machines).
#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct FileId {
    /// Where it was read (shown in messages; not compared).
    path: String,
    bytes: u64,
    blake3: String,
}

impl FileId {
    fn of(path: &Path) -> Result<FileId> {
        let io = |e| Error::io(path, e);
        let mut hasher = blake3::Hasher::new();
        let file = File::open(path).map_err(io)?;
        hasher.update_reader(file).map_err(io)?;
        Ok(FileId {
            path: path.display().to_string(),
            bytes: std::fs::metadata(path).map_err(io)?.len(),
            blake3: hasher.finalize().to_hex().to_string(),
        })
    }

    fn same_content(&self, other: &FileId) -> bool {
        self.bytes == other.bytes && self.blake3 == other.blake3
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} bytes, BLAKE3 {}...)",
            self.path,
            self.bytes,
            &self.blake3[..self.blake3.len().min(12)]
        )
    }
}

/// A model's files: the GGUF file, or every JSON and safetensors file of a
/// Hugging Face folder (what the loader may read), by name.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct ModelId {
    path: String,
    files: Vec<FileId>,
}

impl ModelId {
    fn of(path: &Path) -> Result<ModelId> {
        let mut files = Vec::new();
        if path.is_dir() {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
                let entry = entry.map_err(|e| Error::io(path, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") || name.ends_with(".safetensors") {
                    names.push(name);
                }
            }
            names.sort();
            for name in names {
                let mut id = FileId::of(&path.join(&name))?;
                id.path = name;
                files.push(id);
            }
        } else {
            let mut id = FileId::of(path)?;
            id.path = path
                .file_name()
                .map_or(id.path, |n| n.to_string_lossy().into_owned());
            files.push(id);
        }
        Ok(ModelId {
            path: path.display().to_string(),
            files,
        })
    }

    fn same_content(&self, other: &ModelId) -> bool {
        self.files.len() == other.files.len()
            && self
                .files
                .iter()
                .zip(&other.files)
                .all(|(a, b)| a.same_content(b))
    }

    fn describe(&self) -> String {
        let files: Vec<String> = self.files.iter().map(FileId::describe).collect();
        format!("{}: {}", self.path, files.join(", "))
    }
}

/// What a scored output was made from (OUTPUT.provenance.json).
#[derive(Serialize, Deserialize)]
struct Provenance {
    provenance_version: u32,
    /// The main-score that wrote it: another version may score differently.
    main_score: String,
    /// `None`: stdin, which cannot be identified.
    input: Option<FileId>,
    model: ModelId,
    reverse_model: Option<ModelId>,
    /// Every option that changes a record, as given on the command line.
    options: BTreeMap<String, String>,
    /// Only in a filtered output's provenance: how it was cut from the
    /// scored records (such an output is not resumable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filter: Option<Filter>,
}

impl Provenance {
    fn of_run(a: &ScoreArgs, model: &Path, precision: Precision) -> Result<Provenance> {
        let format = match (&a.instruction_field, &a.response_field) {
            (Some(i), Some(r)) => format!(
                "instruction={i} response={r} input={}",
                a.input_field.as_deref().unwrap_or("(none)")
            ),
            _ => "auto".to_string(),
        };
        let shard = a
            .shard
            .map_or("0/1".to_string(), |s| format!("{}/{}", s.index, s.count));
        let mut options = BTreeMap::new();
        let mut set = |k: &str, v: String| options.insert(k.to_string(), v);
        set("--precision", precision.name().to_string());
        set("--device", a.device.to_string());
        set("--max-tokens", a.max_tokens.to_string());
        set("--combine", a.combine.clone());
        set("--negatives", a.negatives.to_string());
        set("--tokens", a.tokens.to_string());
        set("--shard", shard);
        set("format", format);
        // Without negatives a pair's score does not depend on its batch.
        if a.negatives > 0 {
            set("--batch", a.batch.to_string());
        }
        Ok(Provenance {
            provenance_version: PROVENANCE_VERSION,
            main_score: env!("CARGO_PKG_VERSION").to_string(),
            input: (!is_stdio(&a.input))
                .then(|| FileId::of(&a.input))
                .transpose()?,
            model: ModelId::of(model)?,
            reverse_model: a.reverse_model.as_deref().map(ModelId::of).transpose()?,
            options,
            filter: None,
        })
    }

    /// For a fresh output (no records yet), writes this run's provenance
    /// beside it; for one with `records`, checks that it was made by a run
    /// like this one.
    fn check_or_start(&self, output: &Path, records: usize) -> Result<()> {
        let path = provenance_path(output);
        if records == 0 {
            let text = serde_json::to_string_pretty(self)
                .map_err(|e| Error::Input(format!("serializing provenance: {e}")))?;
            return write_atomic(&path, format!("{text}\n").as_bytes());
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::invalid_argument(
                    "--output",
                    format!(
                        "{} holds {records} records but has no {}, so what made them is unknown (an older main-score, or another tool) and resuming could mix runs; {}",
                        output.display(),
                        path.display(),
                        start_afresh(output)
                    ),
                ))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let before: Provenance = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Input(format!(
                "{}: not a provenance file written by main-score ({e}); {}",
                path.display(),
                start_afresh(output)
            ))
        })?;
        if let Some(f) = &before.filter {
            return Err(Error::invalid_argument(
                "--output",
                format!(
                    "{} holds the {} records a filter kept of {} (its scored records are in {}): a filtered output cannot be resumed; to filter again, run with --keep-top or --min-alignment, or {}",
                    output.display(),
                    f.kept,
                    f.of,
                    f.scored,
                    start_afresh(output)
                ),
            ));
        }
        let differences = before.differences(self);
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::invalid_argument(
            "--output",
            format!(
                "{} holds {records} records of another run, and resuming would mix them with this one's: {}; {}",
                output.display(),
                differences.join("; "),
                start_afresh(output)
            ),
        ))
    }

    /// What differs between the run that wrote an output (`self`) and this one.
    fn differences(&self, now: &Provenance) -> Vec<String> {
        let mut d = Vec::new();
        if self.provenance_version != now.provenance_version || self.main_score != now.main_score {
            d.push(format!(
                "it was written by main-score {}, this is {}",
                self.main_score, now.main_score
            ));
        }
        match (&self.input, &now.input) {
            (Some(a), Some(b)) if a.same_content(b) => {}
            (None, _) => d.push(
                "its input was stdin, which cannot be checked against this run's".to_string(),
            ),
            (Some(_), None) => d.push(
                "this run reads stdin, which cannot be checked against its input".to_string(),
            ),
            (Some(a), Some(b)) => d.push(format!(
                "its input was {}, this run reads {}",
                a.describe(),
                b.describe()
            )),
        }
        if !self.model.same_content(&now.model) {
            d.push(format!(
                "its model was {}, this run uses {}",
                self.model.describe(),
                now.model.describe()
            ));
        }
        match (&self.reverse_model, &now.reverse_model) {
            (None, None) => {}
            (Some(a), Some(b)) if a.same_content(b) => {}
            (a, b) => {
                let describe = |m: &Option<ModelId>| {
                    m.as_ref()
                        .map_or("none (the forward model)".to_string(), ModelId::describe)
                };
                d.push(format!(
                    "its reverse model was {}, this run uses {}",
                    describe(a),
                    describe(b)
                ));
            }
        }
        let keys: std::collections::BTreeSet<&String> =
            self.options.keys().chain(now.options.keys()).collect();
        for key in keys {
            let (a, b) = (self.options.get(key), now.options.get(key));
            if a != b {
                let show = |v: Option<&String>| v.map_or("(not set)", String::as_str).to_string();
                d.push(format!("{key} was {}, now {}", show(a), show(b)));
            }
        }
        d
    }
}

/// What a filtered output was cut from and by which rules: the `"filter"`
/// of its provenance file, so the file says which field ranked it.
#[derive(Serialize, Deserialize, Clone)]
struct Filter {
    keep_top: Option<f64>,
    /// The field `keep_top` ranked by (a leading '-': the lowest were kept).
    rank_by: Option<String>,
    min_alignment: Option<f64>,
    /// The field `min_alignment` is a threshold of.
    min_alignment_field: Option<String>,
    /// The file of every scored record the filter read.
    scored: String,
    kept: usize,
    of: usize,
}

/// What [`filter`] calls with each scored line, its ranking key and its alignment.
type LineVisitor<'a> = dyn FnMut(&[u8], f64, f64) -> Result<()> + 'a;

/// Writes the records of `scored` that pass the filters to `output`
/// (atomically), in input order, and `output`'s provenance: the scored
/// file's, with the filter added. Returns how many were kept.
fn filter(scored: &Path, output: &Path, rank_by: &RankBy, mut rules: Filter) -> Result<usize> {
    let io = |p: &Path, e| Error::io(p, e);
    // Calls `f` with each record's line, its ranking key (better is higher;
    // a missing or NaN value ranks below all) and its alignment (NaN passes
    // no threshold).
    let each_line = |f: &mut LineVisitor| -> Result<()> {
        let mut reader = BufReader::new(File::open(scored).map_err(|e| io(scored, e))?);
        let mut line = Vec::new();
        for line_no in 1.. {
            line.clear();
            if reader
                .read_until(b'\n', &mut line)
                .map_err(|e| io(scored, e))?
                == 0
            {
                return Ok(());
            }
            let s = read_scored(&line, scored, line_no)?;
            let alignment = s.number("alignment").unwrap_or(f64::NAN);
            f(&line, rank_by.key(s.number(rank_by.field)), alignment)?;
        }
        Ok(())
    };
    // --keep-top: exactly round(fraction x count) records, ties in input order.
    let top = match rules.keep_top {
        Some(fraction) => {
            let mut keys = Vec::new();
            each_line(&mut |_, key, _| {
                keys.push(key);
                Ok(())
            })?;
            Some(rank::keep_top(&keys, fraction))
        }
        None => None,
    };
    let (mut kept, mut index) = (0usize, 0usize);
    write_atomic_with(output, |out| {
        each_line(&mut |line, _, alignment| {
            let keep = rules.min_alignment.is_none_or(|m| alignment >= m)
                && top
                    .as_ref()
                    .is_none_or(|t| t.get(index).copied().unwrap_or(false));
            index += 1;
            if keep {
                kept += 1;
                out.write_all(line).map_err(|e| io(output, e))?;
            }
            Ok(())
        })
    })?;

    let from = provenance_path(scored);
    let bytes = std::fs::read(&from).map_err(|e| io(&from, e))?;
    let mut made_of: Provenance = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Input(format!(
            "{}: not a provenance file written by main-score ({e})",
            from.display()
        ))
    })?;
    rules.kept = kept;
    rules.of = index;
    made_of.filter = Some(rules);
    let text = serde_json::to_string_pretty(&made_of)
        .map_err(|e| Error::Input(format!("serializing provenance: {e}")))?;
    write_atomic(&provenance_path(output), format!("{text}\n").as_bytes())?;
    Ok(kept)
}

/// The closing summary on stderr: counts, what the filters kept, and for
/// each main score its quantiles and its rank correlation with response
/// length, with a warning where a score mostly measures length.
fn print_summary(
    summary: &Summary,
    staged: &Path,
    scored_now: usize,
    resumed: usize,
    invalid: usize,
    kept: Option<(usize, &Path)>,
) {
    let name = if is_stdio(staged) {
        "stdout".to_string()
    } else {
        staged.display().to_string()
    };
    eprintln!(
        "main-score: {} records in {name} ({scored_now} scored now, {resumed} from before), {invalid} invalid skipped",
        summary.count()
    );
    if let Some((kept, output)) = kept {
        eprintln!(
            "main-score: kept {kept} of {} in {}",
            summary.count(),
            output.display()
        );
    }
    let rows = summary.rows();
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

/// Pairs done / total, pairs per second and time left, on stderr (an
/// indicatif bar): redrawn in place on a terminal; with `--progress`
/// elsewhere, plain lines at most once a second, so logs stay readable.
struct Progress {
    bar: ProgressBar,
    done: usize,
}

impl Progress {
    fn new(enabled: bool, total: Option<usize>) -> Progress {
        let target = if !enabled {
            ProgressDrawTarget::hidden()
        } else if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::term_like_with_hz(Box::new(LogLines), 1)
        };
        let template = match total {
            Some(_) => "[{bar:30}] {pos}/{len} pairs  {rate}  ETA {eta}",
            None => "{pos} pairs  {rate}",
        };
        let style = ProgressStyle::with_template(template)
            .expect("the progress template is valid")
            .progress_chars("#>-")
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.2} pairs/s", state.per_sec());
                },
            );
        let bar = ProgressBar::with_draw_target(total.map(|t| t as u64), target).with_style(style);
        bar.tick();
        Progress { bar, done: 0 }
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
        self.bar.inc(n as u64);
    }

    fn finish(&self) {
        self.bar.finish();
    }
}

/// A terminal for logs: every drawing of the bar becomes one line, and the
/// cursor moves that would redraw in place are ignored.
#[derive(Debug)]
struct LogLines;

impl indicatif::TermLike for LogLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    // Blank writes are the padding that would erase an old drawing.
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        if s.trim().is_empty() {
            return Ok(());
        }
        writeln!(std::io::stderr(), "{s}")
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `--exact`, else `--precision`, else the device's default (the engine's
/// choice for this CPU, bf16 on a GPU); checked against the device.
fn chosen_precision(
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

fn parse_device(s: &str) -> std::result::Result<Device, String> {
    s.parse::<Device>().map_err(|e| match e {
        Error::InvalidArgument { reason, .. } => reason,
        e => e.to_string(),
    })
}

fn parse_precision(s: &str) -> std::result::Result<Precision, String> {
    Precision::parse(s).ok_or_else(|| format!("{s:?}: expected exact, fast, int8 or bf16 (GPU)"))
}
