//! `main-score generate`: its options, turned into the engine's
//! [`GenerateParams`]; the job itself (reading records, rendering prompts,
//! batched decoding, resume) is `main_engine::job::generate`. Here: the
//! arguments, the progress bar and what is printed on stderr.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::PathBuf;

use main_engine::job::generate::{self, GenerateParams};
use main_engine::job::JobEvent;
use main_engine::matmul::Precision;
use main_engine::Device;
use main_engine::Result;

use crate::progress::{resume_note, Progress};
use crate::{parse_device, parse_precision};

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// JSONL records, each with a "prompt" (a string, asked as one user
    /// message) or chat "messages"; "-" for stdin.
    input: PathBuf,
    /// Where each record goes, unchanged plus a "completion" ("-" for stdout,
    /// which cannot resume). Resumable: re-run with the same --output.
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
    /// The model (GGUF or HF folder); prompts are rendered with its chat template.
    #[arg(long)]
    model: PathBuf,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Most tokens per completion.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// 0: greedy (the default); above 0, seeded sampling.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sampling seed; a record's own seed is this plus its input line.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// A text that ends a completion (cut before it); may be repeated. The
    /// model's end of turn always ends one.
    #[arg(long)]
    stop: Vec<String>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// exact, fast or int8 on the CPU, bf16 or exact on a GPU (see
    /// `main-score score --help`); default: the faster of fast and exact on
    /// this CPU, bf16 on a GPU.
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
    /// cpu, or cuda / cuda:N: generate on an NVIDIA GPU (a build with
    /// `--features cuda`), every sequence's KV cache in its memory.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Show the progress bar even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
}

/// Runs `main-score generate`: the engine's job, with a progress bar and
/// notes on stderr.
pub fn generate(a: GenerateArgs) -> Result<()> {
    let params = GenerateParams {
        model: a.model,
        input: a.input,
        output: a.output,
        n_threads: a.threads,
        precision: a.precision,
        device: a.device,
        batch: a.batch as usize,
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        stop: a.stop,
    };
    let show_progress = a.progress || std::io::stderr().is_terminal();
    let mut bar: Option<Progress> = None;
    let started = std::time::Instant::now();
    let result = generate::run(&params, &mut |event| {
        match event {
            e @ (JobEvent::DroppedPartialLine { .. } | JobEvent::Resuming { .. }) => resume_note(e),
            JobEvent::Started { total } => {
                bar = Some(Progress::counting(show_progress, *total, "records"))
            }
            JobEvent::Scored { done, .. } => {
                if let Some(bar) = &bar {
                    bar.set(*done);
                }
            }
            JobEvent::Skipped { .. } => {}
        }
        ControlFlow::Continue(())
    });
    if let Some(bar) = &bar {
        bar.finish();
    }
    let report = result?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "main-score: {} records completed now ({} from before), {} tokens in {seconds:.1} s ({:.1} tokens/s)",
        report.completed_now,
        report.resumed,
        report.tokens,
        report.tokens as f64 / seconds.max(1e-9)
    );
    Ok(())
}
