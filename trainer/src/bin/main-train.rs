//! `main-train`: fine-tune LLaMA/Mistral models (sft), run the MAIN
//! pipeline, export to GGUF. Errors go to stderr with exit code 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use main_trainer::data::{read_pairs, Direction};
use main_trainer::sft::{train_parallel, TrainConfig};
use main_trainer::{Error, Result};

#[derive(Parser)]
#[command(
    name = "main-train",
    version,
    about = "MAIN trainer: fine-tuning on candle",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fine-tune every weight in one direction (loss on target tokens only).
    #[command(args_override_self = true)]
    Sft(Box<SftArgs>),
    /// Write a trained model folder as GGUF for the engine and llama.cpp.
    Export {
        /// Hugging Face model folder (a run's `model/`).
        #[arg(long)]
        model: PathBuf,
        /// A GGUF of the same base model: its tokenizer metadata is copied.
        #[arg(long)]
        vocab: PathBuf,
        /// Weight type: f32, f16, q8_0, q4_k, ...
        #[arg(long, default_value = "q8_0")]
        r#type: String,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Write a randomly initialised model folder (tests, training from scratch).
    Init {
        /// A config.json (llama or mistral).
        #[arg(long)]
        config: PathBuf,
        /// Folder with tokenizer.json (and tokenizer_config.json).
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long, default_value_t = 0.02)]
        std: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Print the peak memory a run will take, by part, from config.json
    /// alone (nothing is allocated).
    #[command(args_override_self = true)]
    Plan(PlanArgs),
    /// Run the MAIN loop described by a TOML config.
    Pipeline {
        #[arg(long)]
        config: PathBuf,
        /// An OpenAI-compatible server (http://HOST:PORT: vLLM, SGLang,
        /// llama.cpp's server) writes the guesses and answers; overrides
        /// `[synthesis.generator] url`.
        #[arg(long, value_name = "URL")]
        generator: Option<String>,
    },
}

#[derive(clap::Args)]
struct SftArgs {
    /// Hugging Face model folder (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Pairs: Alpaca, prompt/response or messages JSONL; optional "weight".
    #[arg(long)]
    data: PathBuf,
    /// forward (instruction -> response) or reverse (response -> instruction).
    #[arg(long, default_value = "forward")]
    direction: String,
    /// Run folder: metrics.jsonl, checkpoints/, model/, report.json.
    #[arg(long, short)]
    out: PathBuf,
    /// Continue from the run folder's latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Settings as TOML (the `[train]` table of main.toml); flags override.
    #[arg(long)]
    train_config: Option<PathBuf>,
    #[arg(long)]
    steps: Option<usize>,
    #[command(flatten)]
    mem: MemoryArgs,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    warmup: Option<usize>,
    #[arg(long)]
    eval_fraction: Option<f64>,
    #[arg(long)]
    eval_every: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Only the first N pairs of the data file.
    #[arg(long)]
    limit: Option<usize>,
    /// Add the differentiable alignment loss (λ1 sampled InfoNCE + λ2
    /// consistency), on this direction's views only.
    #[arg(long)]
    align_loss: bool,
    /// Negatives sampled per pair from the micro-batch (default 3).
    #[arg(long)]
    align_negatives: Option<usize>,
    #[arg(long)]
    lambda1: Option<f64>,
    #[arg(long)]
    lambda2: Option<f64>,
    /// CPU threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The settings that decide a run's memory: `sft` and `plan` take the same
/// flags and apply them to a [`TrainConfig`] the same way.
#[derive(clap::Args)]
struct MemoryArgs {
    /// Examples per micro-batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Longest training sequence.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Global gradient-norm bound (0: none; must be 0 with --step-in-backward).
    #[arg(long)]
    clip: Option<f64>,
    /// Tokens per optimizer step: examples packed without padding up to
    /// this budget (0: --batch-size examples per micro-batch).
    #[arg(long)]
    tokens: Option<usize>,
    /// true: the memory-saving layerwise step (per-layer recomputation,
    /// query-block attention, chunked LM head); false: whole-graph autograd.
    #[arg(long, value_name = "true|false")]
    recompute: Option<bool>,
    /// Apply the optimizer to each weight as soon as its gradient is
    /// complete (needs --clip 0: no clipping by the global norm).
    #[arg(long)]
    step_in_backward: bool,
    /// Query rows per attention block of the layerwise step.
    #[arg(long)]
    q_block: Option<usize>,
    /// AdamW moments: f32, bf16 or 8bit (blockwise, as bitsandbytes).
    #[arg(long)]
    moments: Option<String>,
    /// Weight storage: f32 or bf16.
    #[arg(long)]
    param_dtype: Option<String>,
    /// With bf16 weights, keep an f32 master copy in the optimizer.
    #[arg(long)]
    master: bool,
}

impl MemoryArgs {
    fn apply(&self, cfg: &mut TrainConfig) -> Result<()> {
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { cfg.$f = v; })* };
        }
        set!(batch_size, grad_accum, max_tokens, clip, tokens, recompute, q_block);
        if self.step_in_backward {
            cfg.step_in_backward = true;
        }
        if let Some(m) = &self.moments {
            cfg.moments = main_trainer::optim::MomentsKind::parse(m)?;
        }
        if let Some(p) = &self.param_dtype {
            cfg.param_dtype = main_trainer::model::ParamDtype::parse(p)?;
        }
        if self.master {
            cfg.master = true;
        }
        Ok(())
    }
}

/// The `[train]` settings of `--train-config`, or the defaults, with the
/// keys the file sets.
fn read_train_config(path: Option<&PathBuf>) -> Result<(TrainConfig, Vec<String>)> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            let bad = |e: toml::de::Error| Error::invalid(p.display().to_string(), e.to_string());
            let keys = main_trainer::train_config::toml_keys(&text, None).map_err(bad)?;
            Ok((toml::from_str::<TrainConfig>(&text).map_err(bad)?, keys))
        }
        None => Ok((TrainConfig::default(), Vec::new())),
    }
}

/// On a GPU, the storage the run left unset gets the GPU's defaults
/// ([`TrainConfig::use_gpu_storage_defaults`]).
fn storage_defaults(cfg: &mut TrainConfig, keys: &[String], mem: &MemoryArgs, gpu: bool) {
    if gpu {
        cfg.use_gpu_storage_defaults(&|k| {
            keys.iter().any(|x| x == k)
                || (k == "param_dtype" && mem.param_dtype.is_some())
                || (k == "moments" && mem.moments.is_some())
        });
    }
}

#[derive(clap::Args)]
struct PlanArgs {
    /// A model folder with config.json (weights not needed), or the file.
    #[arg(long)]
    model: PathBuf,
    /// cpu (f32 compute) or cuda (bf16 compute).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// One JSON object (the parts and total_bytes) instead of a table.
    #[arg(long)]
    json: bool,
    /// Settings as TOML (the `[train]` table of main.toml); flags override,
    /// as for `sft`.
    #[arg(long)]
    train_config: Option<PathBuf>,
    /// `sft`'s memory flags, with `sft`'s defaults.
    #[command(flatten)]
    mem: MemoryArgs,
}

fn plan(a: PlanArgs) -> Result<()> {
    use main_trainer::plan::{PlanDevice, PlanSettings};
    let (config, tied) = main_trainer::plan::read_config(&a.model)?;
    let device = PlanDevice::parse(&a.device)?;
    let (mut cfg, keys) = read_train_config(a.train_config.as_ref())?;
    a.mem.apply(&mut cfg)?;
    storage_defaults(&mut cfg, &keys, &a.mem, device == PlanDevice::Cuda);
    cfg.validate()?;
    let s = PlanSettings::from_train_config(&cfg, device);
    let p = main_trainer::plan::plan(&config, tied, &s)?;
    if a.json {
        let mut v = serde_json::json!({"total_bytes": p.total_bytes, "n_params": p.n_params,
            "peak_at": p.peak_at, "save_host_bytes": p.save_host_bytes,
            "settings": p.settings});
        for part in &p.parts {
            v[part.name] = part.bytes.into();
        }
        println!("{v}");
    } else {
        println!("{}", p.text());
    }
    Ok(())
}

/// Refuses a run that the plan says will not fit the device (and on CUDA
/// a save that will not fit the host), before the model is loaded: the
/// plan of the path `cfg` runs (the layerwise step, or the whole graph
/// with `--recompute false` or the alignment loss).
fn check_memory(a: &SftArgs, cfg: &TrainConfig, device: &candle_core::Device) -> Result<()> {
    use main_trainer::plan::{PlanDevice, PlanSettings};
    let (config, tied) = main_trainer::plan::read_config(&a.model)?;
    let pd = if device.is_cuda() {
        PlanDevice::Cuda
    } else {
        PlanDevice::Cpu
    };
    let p = main_trainer::plan::plan(&config, tied, &PlanSettings::from_train_config(cfg, pd))?;
    main_trainer::plan::check_fits(
        &p,
        main_trainer::plan::available(device)?,
        main_trainer::plan::host_available()?,
    )
}

fn sft(a: SftArgs) -> Result<()> {
    let (mut cfg, keys) = read_train_config(a.train_config.as_ref())?;
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = a.$f { cfg.$f = v; })* };
    }
    set!(
        steps,
        lr,
        warmup,
        eval_fraction,
        eval_every,
        checkpoint_every,
        seed,
        align_negatives
    );
    a.mem.apply(&mut cfg)?;
    if a.align_loss {
        cfg.align_loss = true;
    }
    if let Some(l) = a.lambda1 {
        cfg.lambda_contrastive = l;
    }
    if let Some(l) = a.lambda2 {
        cfg.lambda_consistency = l;
    }
    cfg.validate()?;
    let direction = Direction::parse(&a.direction)?;
    let mut pairs = read_pairs(&a.data)?;
    if let Some(n) = a.limit {
        pairs.truncate(n);
    }
    #[cfg(feature = "nccl")]
    let launch = main_trainer::dist::Launch::from_env()?;
    #[cfg(feature = "nccl")]
    let (device, dtype) = match &launch {
        Some(l) => (l.device()?, candle_core::DType::BF16),
        None => main_trainer::device::select()?,
    };
    #[cfg(not(feature = "nccl"))]
    let (device, dtype) = main_trainer::device::select()?;
    storage_defaults(&mut cfg, &keys, &a.mem, device.is_cuda());
    cfg.validate()?;
    check_memory(&a, &cfg, &device)?;
    let mut model = main_trainer::model::TrainModel::load(&a.model, &device, dtype)?;
    model.cast_params(cfg.param_dtype.dtype())?;
    #[cfg(feature = "nccl")]
    let dp = match &launch {
        Some(l) => Some(main_trainer::dist::join(l, &device)?),
        None => None,
    };
    #[cfg(not(feature = "nccl"))]
    let dp = None;
    eprintln!(
        "main-train sft: {} ({} parameters, {:?} on {:?}), {} pairs, {} direction",
        a.model.display(),
        model.n_params(),
        dtype,
        device,
        pairs.len(),
        direction.name()
    );
    let report = train_parallel(
        &model,
        &pairs,
        direction,
        &cfg,
        &a.out,
        a.resume,
        !a.quiet,
        dp.as_ref(),
    )?;
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| Error::invalid("report", e.to_string()))?
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Sft(a) => {
            main_trainer::device::set_threads(a.threads);
            sft(*a)
        }
        Cmd::Export {
            model,
            vocab,
            r#type,
            out,
        } => {
            let ty = main_engine::quant::DType::from_name(&r#type.to_uppercase())
                .or_else(|| main_engine::quant::DType::from_name(&r#type))
                .ok_or_else(|| {
                    Error::invalid("type", format!("'{}' is not a GGUF type", r#type))
                })?;
            let n = main_trainer::export::export_gguf(&model, &vocab, ty, &out)?;
            eprintln!(
                "wrote {} ({n} bytes of weights, {})",
                out.display(),
                ty.name()
            );
            Ok(())
        }
        Cmd::Init {
            config,
            tokenizer,
            std,
            seed,
            out,
        } => {
            let bytes = std::fs::read(&config).map_err(|e| Error::io(&config, e))?;
            let json: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::invalid(config.display().to_string(), e.to_string()))?;
            let tied = json
                .get("tie_word_embeddings")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let c = main_engine::config::Config::from_hf_json(&bytes)?;
            main_trainer::model::write_random(&out, &c, tied, &tokenizer, std, seed)
        }
        Cmd::Plan(a) => plan(a),
        Cmd::Pipeline { config, generator } => {
            main_trainer::pipeline::run_file(&config, generator.as_deref())
        }
    }
}

/// candle allocates fresh tensors for every op of every step, and glibc's
/// malloc returns big blocks to the kernel when they are freed (mmap, trim),
/// so every step page-faults and zeroes them again: about a third of CPU
/// training time. Keeping freed memory in the heap made CPU training 1.3-1.45x
/// faster here (BENCHMARKS.md); the peak stays what it was.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator tunables, and runs before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("main-train: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    /// clap's own checks (no flag defined twice: `sft` and `plan` share
    /// `MemoryArgs`), and the memory flags parse the same for both.
    #[test]
    fn a_gpu_run_defaults_to_bf16_weights_and_8bit_moments_unless_set() {
        use main_trainer::model::ParamDtype;
        use main_trainer::optim::MomentsKind;
        let run = |flags: &[&str], keys: &[&str], gpu: bool| {
            let cmd = ["main-train", "plan", "--model", "m"];
            let cli = super::Cli::try_parse_from(cmd.iter().chain(flags)).unwrap();
            let super::Cmd::Plan(a) = cli.cmd else {
                unreachable!()
            };
            let mut cfg = main_trainer::sft::TrainConfig::default();
            a.mem.apply(&mut cfg).unwrap();
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            super::storage_defaults(&mut cfg, &keys, &a.mem, gpu);
            (cfg.param_dtype, cfg.moments)
        };
        assert_eq!(run(&[], &[], false), (ParamDtype::F32, MomentsKind::F32));
        assert_eq!(run(&[], &[], true), (ParamDtype::Bf16, MomentsKind::Bit8));
        assert_eq!(
            run(&["--param-dtype", "f32"], &[], true),
            (ParamDtype::F32, MomentsKind::Bit8)
        );
        assert_eq!(
            run(&["--moments", "bf16"], &[], true),
            (ParamDtype::Bf16, MomentsKind::Bf16)
        );
        // Set in --train-config's TOML (its defaults are then the CPU's).
        assert_eq!(
            run(&[], &["param_dtype", "moments"], true),
            (ParamDtype::F32, MomentsKind::F32)
        );
    }

    #[test]
    fn sft_and_plan_take_the_same_memory_flags() {
        super::Cli::command().debug_assert();
        let flags = [
            "--tokens",
            "4096",
            "--max-tokens",
            "1024",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--recompute",
            "true",
            "--step-in-backward",
            "--clip",
            "0",
            "--q-block",
            "64",
            "--moments",
            "8bit",
            "--param-dtype",
            "bf16",
            "--master",
        ];
        let mut from = Vec::new();
        for cmd in [
            vec![
                "main-train",
                "sft",
                "--model",
                "m",
                "--data",
                "d",
                "-o",
                "o",
            ],
            vec!["main-train", "plan", "--model", "m"],
        ] {
            let cli = super::Cli::try_parse_from(cmd.into_iter().chain(flags)).unwrap();
            let mem = match cli.cmd {
                super::Cmd::Sft(a) => a.mem,
                super::Cmd::Plan(a) => a.mem,
                _ => unreachable!(),
            };
            let mut cfg = main_trainer::sft::TrainConfig::default();
            mem.apply(&mut cfg).unwrap();
            from.push(cfg);
        }
        assert_eq!(from[0], from[1]);
        let c = &from[0];
        assert_eq!(
            (c.tokens, c.max_tokens, c.q_block, c.clip),
            (4096, 1024, 64, 0.0)
        );
        assert!(c.step_in_backward && c.master && c.recompute);
        assert_eq!(c.moments, main_trainer::optim::MomentsKind::Bit8);
    }
}
