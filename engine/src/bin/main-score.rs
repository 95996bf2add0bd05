//! `main-score`: the command-line face of the engine.
//!
//! Subcommands: `inspect` (model metadata), `logprobs` (per-token log-probs
//! and perplexity of a text), `quantize` (re-encode weights to GGUF),
//! `export` (an F32 Hugging Face safetensors copy).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use main_engine::logprob::{perplexity, sequence_logprobs};
use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};
use main_engine::quant::DType;
use main_engine::{convert, Error, Result};

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
    /// Print a model's architecture, sizes, tensor types, tokenizer and chat template.
    Inspect {
        /// A GGUF file or a Hugging Face folder (config.json + safetensors).
        model: PathBuf,
        /// Also list every tensor.
        #[arg(long)]
        tensors: bool,
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
        /// f32 activations against dequantized weights instead of the fast int8 path.
        #[arg(long)]
        exact: bool,
        /// Print one JSON object: {"ids", "pieces", "logprobs", "perplexity"}.
        #[arg(long)]
        json: bool,
        /// Print `{"tokens": n, "seconds": s}` for the forward pass to stderr (benchmarks).
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
        Command::Inspect { model, tensors } => inspect(&model, tensors),
        Command::Logprobs {
            model,
            text_file,
            threads,
            exact,
            json,
            report_speed,
        } => logprobs(&model, &text_file, threads, exact, json, report_speed),
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
    exact: bool,
    json: bool,
    report_speed: bool,
) -> Result<()> {
    let text = read_text(text_file)?;
    let model = Model::load(model_path)?;
    let rt = Runtime::new(
        threads,
        if exact {
            Precision::Exact
        } else {
            Precision::Fast
        },
    );
    let ids = model
        .tokenizer
        .encode(&text, model.tokenizer.add_bos_default(), false)?;
    let start = std::time::Instant::now();
    let lps = sequence_logprobs(&model, &rt, &ids)?;
    if report_speed {
        let secs = start.elapsed().as_secs_f64();
        eprintln!("{}", serde_json::json!({ "tokens": ids.len(), "seconds": secs }));
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
