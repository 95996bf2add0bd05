//! Supervised fine-tuning in one direction: the loss is the per-example
//! weighted negative log-probability of the target tokens only, divided by
//! one constant of the run ([`loss_normaliser`]).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};

use crate::align::{align_loss, AlignPair};
use crate::checkpoint::{self, TrainState};
use crate::data::{example, split, Direction, Example, Rng, WeightedPair};
use crate::error::{CandleExt, Error, Result};
use crate::layerwise::{self, GradSink};
use crate::model::{Batch, Param, TrainModel};
use crate::optim::{clip_scale, global_grad_norm, lr_at, AdamW, AdamWParams};
use crate::pack::{packed_loss_normaliser, take_fitting, Packed};
pub use crate::train_config::TrainConfig;

/// What a run did.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainReport {
    pub direction: Direction,
    pub steps: usize,
    pub n_train: usize,
    pub n_eval: usize,
    /// Held-out loss (mean target NLL, nats) before training; `None` without a split.
    pub eval_loss_before: Option<f64>,
    pub eval_loss_after: Option<f64>,
    #[serde(deserialize_with = "crate::json_float::null_as_nan")]
    pub final_train_loss: f64,
    /// Real (unpadded) tokens through the training forward passes.
    pub tokens: usize,
    #[serde(deserialize_with = "crate::json_float::null_as_nan")]
    pub seconds: f64,
    #[serde(deserialize_with = "crate::json_float::null_as_nan")]
    pub tokens_per_s: f64,
    /// Step the run resumed from (0 for a fresh run).
    pub resumed_from: usize,
}

/// Where a run writes: `metrics.jsonl`, `checkpoints/`, and the final
/// model (Hugging Face folder) in `model/`.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    pub fn model(&self) -> PathBuf {
        self.0.join("model")
    }
}

/// Mean target NLL of `examples` (unweighted), in batches of `batch_size`.
pub fn eval_loss(model: &TrainModel, examples: &[Example], batch_size: usize) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let seqs: Vec<(&[u32], usize)> = chunk.iter().map(|e| (&e.ids[..], e.n_prompt)).collect();
        let batch = Batch::new(&seqs, &model.device)?;
        let lp = model.target_logprobs(&batch)?;
        sum -= lp
            .to_dtype(DType::F64)
            .and_then(|x| x.sum_all())
            .and_then(|x| x.to_scalar::<f64>())
            .op("eval loss")?;
        n += batch.n_targets();
    }
    Ok(sum / n.max(1) as f64)
}

/// The loss normaliser of a run: the mean number of target tokens in a
/// micro-batch, `batch_size x (target tokens of the training set / its
/// examples)`, unweighted.
///
/// Why a constant, and why this one: dividing each micro-batch by its own
/// `sum_i w_i n_i` cancels any weight shared by the whole micro-batch (a
/// micro-batch of synthetic pairs at 0.3 then pulled exactly as hard as one
/// at 1.0), so the loss divides by one number of the run instead, the same
/// for every micro-batch of every step (accumulation and data parallelism
/// then sum gradients that are all on one scale). It is the *unweighted*
/// count so that a weight means the same thing in every run: a pair at
/// weight 1 gets the step it gets in plain SFT, whatever the weights of the
/// other pairs (a weighted count would shrink when low-weight synthetic
/// pairs join and so raise the seed pairs' step), and a run with every
/// weight 1 has the token-mean loss of plain SFT on average. `None`: the
/// training set has no target tokens.
pub fn loss_normaliser(train: &[Example], batch_size: usize) -> Option<f64> {
    let n_targets: usize = train.iter().map(Example::n_targets).sum();
    if n_targets == 0 {
        return None;
    }
    Some(batch_size as f64 * n_targets as f64 / train.len() as f64)
}

/// The loss of one micro-batch, `sum_i w_i sum_t nll_it / norm` (nats)
/// with `norm` the run's [`loss_normaliser`], and its real tokens. `None`
/// when no example has a positive weight (nothing to learn).
pub fn lm_loss(
    model: &TrainModel,
    batch_examples: &[&Example],
    norm: f64,
) -> Result<Option<(Tensor, usize)>> {
    if !(norm > 0.0 && norm.is_finite()) {
        return Err(Error::invalid(
            "loss normaliser",
            format!("{norm} (must be a positive number)"),
        ));
    }
    if !batch_examples
        .iter()
        .any(|e| e.weight > 0.0 && e.n_targets() > 0)
    {
        return Ok(None);
    }
    let seqs: Vec<(&[u32], usize)> = batch_examples
        .iter()
        .map(|e| (&e.ids[..], e.n_prompt))
        .collect();
    let batch = Batch::new(&seqs, &model.device)?;
    let w: Vec<f32> = batch
        .target_seq
        .iter()
        .map(|&s| (batch_examples[s].weight / norm) as f32)
        .collect();
    let lp = model.target_logprobs(&batch)?;
    let w = Tensor::from_vec(w, batch.n_targets(), &model.device)
        .and_then(|w| w.to_dtype(lp.dtype()))
        .op("loss weights")?;
    let loss = (lp * w)
        .and_then(|x| x.sum_all())
        .and_then(|x| x.neg())
        .op("weighted NLL")?;
    let tokens = batch_examples.iter().map(|e| e.ids.len()).sum();
    Ok(Some((loss, tokens)))
}

fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)
        .and_then(|x| x.to_scalar::<f64>())
        .op("read scalar")
}

/// The data order: one seeded shuffle per epoch; `(epoch_rng, cursor)`
/// of the [`TrainState`] pins it.
#[derive(Clone)]
struct Order {
    rng: Rng,
    order: Vec<usize>,
}

impl Order {
    fn new(epoch_rng: u64, n: usize) -> Order {
        let mut rng = Rng(epoch_rng);
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        Order { rng, order }
    }

    /// The next example, advancing `state.cursor` (and the epoch).
    fn next(&mut self, state: &mut TrainState) -> usize {
        let n = self.order.len();
        let pos = state.cursor % n;
        if pos == 0 && state.cursor > 0 {
            // A new epoch: a new order from the RNG where the last one left it.
            state.epoch_rng = self.rng.0;
            self.order = (0..n).collect();
            self.rng.shuffle(&mut self.order);
        }
        state.cursor += 1;
        self.order[pos]
    }
}

/// Keeps every gradient (f32, summed over the micro-batches of a step):
/// what clipping by the global norm, gradient accumulation and data
/// parallelism need, at the cost of one f32 gradient per weight.
pub struct Accumulate(pub Vec<Option<Tensor>>);

impl GradSink for Accumulate {
    fn take(&mut self, param: usize, grad: Tensor) -> Result<()> {
        let grad = grad.to_dtype(DType::F32).op("grad")?;
        let slot = &mut self.0[param];
        *slot = Some(match slot.take() {
            None => grad,
            Some(a) => (a + grad).op("accumulate grad")?,
        });
        Ok(())
    }
}

/// The optimizer step inside backward: each weight is updated as soon as
/// its gradient arrives and the gradient dropped, so at most one layer's
/// gradients exist at once. No clipping (the global norm is known only
/// after the last gradient); the norm is still summed on the device for
/// the metrics, read once per step.
pub struct StepNow<'a> {
    pub opt: &'a mut AdamW,
    pub params: &'a [Param],
    pub lr: f64,
    sum_sq: Option<Tensor>,
}

impl<'a> StepNow<'a> {
    /// A sink stepping `params` with `opt` at `lr` (after `opt.begin_step()`).
    pub fn new(opt: &'a mut AdamW, params: &'a [Param], lr: f64) -> StepNow<'a> {
        StepNow {
            opt,
            params,
            lr,
            sum_sq: None,
        }
    }
}

impl GradSink for StepNow<'_> {
    fn take(&mut self, param: usize, grad: Tensor) -> Result<()> {
        let grad = grad.to_dtype(DType::F32).op("grad")?;
        // The same sum as `global_grad_norm`'s (f64 on the CPU), so the
        // norm reported in backward equals the step-after-backward one.
        let sq = crate::optim::sum_squares(&grad)?
            .to_dtype(DType::F64)
            .op("grad norm")?;
        self.sum_sq = Some(match self.sum_sq.take() {
            None => sq,
            Some(a) => (a + sq).op("grad norm")?,
        });
        self.opt
            .update_one(param, &self.params[param], &grad, self.lr)
    }
}

/// The held-out loss in the run's path: the layerwise forward over packed
/// chunks (`tokens`, else `batch_size` examples) with `recompute`, else
/// [`eval_loss`].
fn run_eval(model: &TrainModel, examples: &[Example], cfg: &TrainConfig) -> Result<f64> {
    if !cfg.recompute {
        return eval_loss(model, examples, cfg.batch_size);
    }
    let set = cfg.layerwise();
    let (mut sum, mut n, mut at) = (0f64, 0usize, 0usize);
    while at < examples.len() {
        let take = if cfg.tokens > 0 {
            take_fitting(
                examples[at..].iter().map(|e| e.ids.len()),
                cfg.tokens,
                |k| format!("held-out example {}", at + k),
            )?
        } else {
            cfg.batch_size.max(1).min(examples.len() - at)
        };
        let chunk: Vec<&Example> = examples[at..at + take].iter().collect();
        let packed = Packed::new(&chunk, |_| 1.0)?;
        sum += layerwise::target_nll(model, &packed, &set)?
            .iter()
            .sum::<f64>();
        n += packed.n_targets();
        at += take;
    }
    Ok(sum / n.max(1) as f64)
}

/// A one-line progress bar on stderr (redrawn in place on a terminal).
struct Progress {
    tty: bool,
    total: usize,
    start: Instant,
    start_step: usize,
}

impl Progress {
    fn show(&self, step: usize, loss: f64, tok_s: f64) {
        let done = step - self.start_step;
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if done > 0 {
            elapsed / done as f64 * (self.total - step) as f64
        } else {
            0.0
        };
        let width = 24;
        let filled = width * step / self.total.max(1);
        let bar: String = "#".repeat(filled) + &".".repeat(width - filled);
        let line = format!(
            "[{bar}] step {step}/{} loss {loss:.4} {tok_s:.0} tok/s ETA {}m{:02}s",
            self.total,
            (eta / 60.0) as u64,
            (eta % 60.0) as u64
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
            if step == self.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}

/// Averages one gradient over all processes of a data-parallel job.
pub type GradMean = Box<dyn Fn(&Tensor) -> Result<Tensor>>;

/// Data parallelism (`dist`, `--features nccl`): this process's rank among
/// `world_size`, and the mean of a gradient over all processes.
pub struct DataParallel {
    pub rank: usize,
    pub world_size: usize,
    pub mean: GradMean,
}

/// Trains `model` on `pairs` in `direction`, writing into `run`. With
/// `resume`, continues from the run's latest checkpoint if it has one.
pub fn train(
    model: &TrainModel,
    pairs: &[WeightedPair],
    direction: Direction,
    cfg: &TrainConfig,
    run: &Path,
    resume: bool,
    show_progress: bool,
) -> Result<TrainReport> {
    train_parallel(
        model,
        pairs,
        direction,
        cfg,
        run,
        resume,
        show_progress,
        None,
    )
}

/// [`train`] as one process of a data-parallel job: every global
/// micro-batch holds `batch_size` examples per process, gradients are
/// averaged over the processes, and only rank 0 writes.
#[allow(clippy::too_many_arguments)]
pub fn train_parallel(
    model: &TrainModel,
    pairs: &[WeightedPair],
    direction: Direction,
    cfg: &TrainConfig,
    run: &Path,
    resume: bool,
    show_progress: bool,
    dp: Option<&DataParallel>,
) -> Result<TrainReport> {
    cfg.validate()?;
    let (rank, world) = dp.map_or((0, 1), |d| (d.rank, d.world_size));
    if world > 1 && (cfg.tokens > 0 || cfg.step_in_backward) {
        return Err(Error::invalid(
            "data parallelism",
            "--tokens and --step-in-backward are single-process: a data-parallel job steps by --batch-size (the layerwise step and clipping work there)",
        ));
    }
    let main = rank == 0;
    let show_progress = show_progress && main;
    let run = RunDir(run.to_path_buf());
    std::fs::create_dir_all(&run.0).map_err(|e| Error::io(&run.0, e))?;
    let (train_idx, eval_idx) = split(pairs.len(), cfg.eval_fraction, cfg.seed);
    if train_idx.is_empty() {
        return Err(Error::invalid(
            "pairs",
            "no training pairs left after the held-out split",
        ));
    }
    let build = |idx: &[usize]| -> Result<Vec<Example>> {
        idx.iter()
            .map(|&i| example(model, &pairs[i], direction, cfg.max_tokens))
            .collect()
    };
    let train_ex = build(&train_idx)?;
    let eval_ex = build(&eval_idx)?;
    // Every micro-batch of every step (and of every rank: each holds
    // `batch_size` examples of the same data set) divides by this one number.
    let norm = if cfg.tokens > 0 {
        packed_loss_normaliser(&train_ex, cfg.tokens)
    } else {
        loss_normaliser(&train_ex, cfg.batch_size)
    }
    .ok_or_else(|| Error::invalid("pairs", "the training pairs have no target tokens"))?;
    if model.param_dtype() != cfg.param_dtype.dtype() {
        return Err(Error::invalid(
            "param_dtype",
            format!(
                "the run asks for {} weights but the model holds {:?} (cast it with TrainModel::cast_params before training)",
                cfg.param_dtype.name(),
                model.param_dtype()
            ),
        ));
    }
    let mut opt = AdamW::new(
        &model.params,
        AdamWParams {
            weight_decay: cfg.weight_decay,
            moments: cfg.moments,
            master: cfg.master,
            seed: cfg.seed,
            ..Default::default()
        },
    )?;
    let fingerprint = cfg.fingerprint(direction, pairs.len());
    let mut state = TrainState {
        step: 0,
        cursor: 0,
        epoch_rng: cfg.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xda7a,
        fingerprint: fingerprint.clone(),
    };
    // The metrics of the steps a resumed run does not redo.
    let mut earlier: Vec<serde_json::Value> = Vec::new();
    if resume {
        if let Some(dir) = checkpoint::latest(&run.0)? {
            state = checkpoint::load(&dir, model, &mut opt)?;
            if state.fingerprint != fingerprint {
                return Err(Error::checkpoint(
                    &dir,
                    format!(
                        "made with other settings ({}), this run has {fingerprint}",
                        state.fingerprint
                    ),
                ));
            }
            if main {
                earlier = truncate_metrics(&run.metrics(), state.step)?;
            }
        } else if main {
            let _ = std::fs::remove_file(run.metrics());
        }
    } else if main {
        let _ = std::fs::remove_file(run.metrics());
    }
    let resumed_from = state.step;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.metrics())
        .map_err(|e| Error::io(run.metrics(), e))?;
    let mut log = |v: serde_json::Value| -> Result<()> {
        if !main {
            return Ok(());
        }
        writeln!(metrics, "{v}").map_err(|e| Error::io(run.metrics(), e))
    };

    let n_train = train_ex.len();
    let mut order = Order::new(state.epoch_rng, n_train);
    let set = cfg.layerwise();

    // A resumed run reports the losses of the steps it did not redo as the
    // run that did them logged them, so its report is the uninterrupted
    // run's (the pipeline compares them after a kill).
    let logged = |step: usize, key: &str| {
        earlier
            .iter()
            .find(|v| v["step"].as_u64() == Some(step as u64))
            .and_then(|v| v.get(key)?.as_f64())
    };
    let eval_loss_before = if eval_ex.is_empty() {
        None
    } else if resumed_from == 0 {
        let l = run_eval(model, &eval_ex, cfg)?;
        log(serde_json::json!({"step": 0, "eval_loss": l}))?;
        Some(l)
    } else {
        logged(0, "eval_loss")
    };

    let progress = Progress {
        tty: std::io::stderr().is_terminal(),
        total: cfg.steps,
        start: Instant::now(),
        start_step: resumed_from,
    };
    let (mut tokens, mut last_loss, mut last_eval) = (0usize, f64::NAN, None);
    if resumed_from > 0 {
        last_loss = logged(resumed_from, "loss").unwrap_or(f64::NAN);
        if resumed_from == cfg.steps {
            last_eval = logged(resumed_from, "eval_loss");
        }
    }
    let t0 = Instant::now();
    for step in state.step..cfg.steps {
        let lr = lr_at(step, cfg.steps, cfg.warmup, cfg.lr, cfg.min_lr_ratio);
        let mut acc = Accumulate(vec![None; model.params.len()]);
        // With the step inside backward: the step's sum of squared gradients.
        let mut in_backward: Option<Option<Tensor>> = None;
        let (mut step_loss, mut step_tokens) = (0f64, 0usize);
        let n_micro = if cfg.tokens > 0 { 1 } else { cfg.grad_accum };
        for micro_index in 0..n_micro {
            let micro = if cfg.tokens > 0 {
                // As many examples as fit in the step's tokens, in data order.
                let mut peek = (order.clone(), state.clone());
                let lens = std::iter::from_fn(|| Some(peek.0.next(&mut peek.1)))
                    .take(n_train)
                    .map(|i| train_ex[i].ids.len());
                let n = take_fitting(lens, cfg.tokens, |k| {
                    format!("training example at cursor {}", state.cursor + k)
                })?;
                (0..n).map(|_| order.next(&mut state)).collect()
            } else {
                let mut micro = Vec::with_capacity(cfg.batch_size);
                for k in 0..cfg.batch_size * world {
                    let i = order.next(&mut state);
                    // Every rank walks the same global order and keeps its slice.
                    if k / cfg.batch_size == rank {
                        micro.push(i);
                    }
                }
                micro
            };
            let exs: Vec<&Example> = micro.iter().map(|&i| &train_ex[i]).collect();
            if !exs.iter().any(|e| e.weight > 0.0 && e.n_targets() > 0) {
                continue;
            }
            if cfg.recompute && !cfg.align_loss {
                let packed = Packed::new(&exs, |e| e.weight / norm)?;
                let scale = 1.0 / n_micro as f64;
                let value = if cfg.step_in_backward {
                    opt.begin_step();
                    let mut sink = StepNow::new(&mut opt, &model.params, lr);
                    let v = layerwise::loss_and_grads(model, &packed, scale, &set, &mut sink)?;
                    in_backward = Some(sink.sum_sq);
                    v
                } else {
                    layerwise::loss_and_grads(model, &packed, scale, &set, &mut acc)?
                };
                if !value.is_finite() {
                    return Err(Error::Training {
                        step,
                        reason: format!("loss is {value}"),
                    });
                }
                step_loss += value;
                step_tokens += packed.n_tokens();
                continue;
            }
            let Some((lm, toks)) = lm_loss(model, &exs, norm)? else {
                continue;
            };
            let mut loss = lm;
            if cfg.align_loss {
                let ps: Vec<AlignPair> = micro
                    .iter()
                    .map(|&i| {
                        let p = &pairs[train_idx[i]];
                        AlignPair {
                            pair: &p.pair,
                            weight: p.weight,
                            target_pmi: p.pmi.map(|s| s.other_than(direction)),
                        }
                    })
                    .collect();
                // Negatives drawn from (seed, step, micro-batch): the same
                // draw after a resume.
                let draw = cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    ^ ((step as u64) << 16)
                    ^ micro_index as u64;
                let a = align_loss(
                    model,
                    direction,
                    &ps,
                    cfg.max_tokens,
                    cfg.align_negatives,
                    draw,
                    cfg.lambda_contrastive,
                    cfg.lambda_consistency,
                )?;
                loss = (loss + a).op("total loss")?;
            }
            let loss = (loss / cfg.grad_accum as f64).op("accumulation")?;
            let value = scalar(&loss)?;
            if !value.is_finite() {
                return Err(Error::Training {
                    step,
                    reason: format!("loss is {value}"),
                });
            }
            step_loss += value;
            step_tokens += toks;
            let g = loss.backward().op("backward")?;
            for (i, p) in model.params.iter().enumerate() {
                if let Some(gi) = g.get(p.var.as_tensor()) {
                    acc.take(i, gi.clone())?;
                }
            }
        }
        let grad_norm = match in_backward {
            // Already applied, weight by weight, during backward.
            Some(sum_sq) => match sum_sq {
                Some(s) => scalar(&s)?.sqrt(),
                None => 0.0,
            },
            None => {
                let mut grads: Vec<Tensor> = acc
                    .0
                    .into_iter()
                    .zip(&model.params)
                    .map(|(g, p)| match g {
                        Some(g) => Ok(g),
                        None => p.var.as_tensor().zeros_like().op("zero grad"),
                    })
                    .collect::<Result<_>>()?;
                if let Some(dp) = dp {
                    for g in grads.iter_mut() {
                        *g = (dp.mean)(g)?;
                    }
                }
                // One host sync for the norm; the clipping factor is
                // applied inside the fused update, not in a pass of its own.
                let grad_norm = global_grad_norm(&grads)?;
                opt.grad_scale = clip_scale(grad_norm, cfg.clip);
                opt.update(&model.params, &grads, lr)?;
                grad_norm
            }
        };
        state.step = step + 1;
        tokens += step_tokens;
        last_loss = step_loss;
        let secs = t0.elapsed().as_secs_f64();
        let tok_s = tokens as f64 / secs.max(1e-9);
        let mut rec = serde_json::json!({
            "step": state.step, "loss": step_loss, "lr": lr, "grad_norm": grad_norm,
            "tokens": step_tokens, "tok_per_s": tok_s, "elapsed_s": secs,
        });
        let last = state.step == cfg.steps;
        if !eval_ex.is_empty()
            && ((cfg.eval_every > 0 && state.step.is_multiple_of(cfg.eval_every)) || last)
        {
            rec["eval_loss"] = run_eval(model, &eval_ex, cfg)?.into();
        }
        log(rec.clone())?;
        if show_progress {
            progress.show(state.step, step_loss, tok_s);
        }
        if main
            && cfg.checkpoint_every > 0
            && (state.step.is_multiple_of(cfg.checkpoint_every) || last)
        {
            checkpoint::save(&run.0, model, &opt, &state, cfg.keep_checkpoints)?;
        }
        if last {
            last_eval = rec.get("eval_loss").and_then(|v| v.as_f64());
        }
    }
    let eval_loss_after = match last_eval {
        Some(e) => Some(e),
        None if eval_ex.is_empty() => None,
        None => Some(run_eval(model, &eval_ex, cfg)?),
    };
    let secs = t0.elapsed().as_secs_f64();
    finish(
        main,
        model,
        &run,
        FinishArgs {
            direction,
            cfg,
            n_train,
            n_eval: eval_ex.len(),
            eval_loss_before,
            eval_loss_after,
            last_loss,
            tokens,
            secs,
            resumed_from,
        },
    )
}

struct FinishArgs<'a> {
    direction: Direction,
    cfg: &'a TrainConfig,
    n_train: usize,
    n_eval: usize,
    eval_loss_before: Option<f64>,
    eval_loss_after: Option<f64>,
    last_loss: f64,
    tokens: usize,
    secs: f64,
    resumed_from: usize,
}

fn finish(main: bool, model: &TrainModel, run: &RunDir, a: FinishArgs) -> Result<TrainReport> {
    if main {
        model.save_hf(&run.model())?;
    }
    let report = TrainReport {
        direction: a.direction,
        steps: a.cfg.steps,
        n_train: a.n_train,
        n_eval: a.n_eval,
        eval_loss_before: a.eval_loss_before,
        eval_loss_after: a.eval_loss_after,
        final_train_loss: a.last_loss,
        tokens: a.tokens,
        seconds: a.secs,
        tokens_per_s: a.tokens as f64 / a.secs.max(1e-9),
        resumed_from: a.resumed_from,
    };
    let json =
        serde_json::to_vec_pretty(&report).map_err(|e| Error::invalid("report", e.to_string()))?;
    checkpoint::write_atomic(&run.0.join("report.json"), &json)?;
    Ok(report)
}

/// Keeps the metrics of steps up to `step` (a resumed run rewrites the
/// rest) and returns them.
fn truncate_metrics(path: &Path, step: usize) -> Result<Vec<serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let (mut kept, mut records) = (String::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            // A line cut by the kill does not parse and goes too.
            continue;
        };
        if let Some(s) = v.get("step").and_then(|s| s.as_u64()) {
            if s as usize <= step {
                kept.push_str(line);
                kept.push('\n');
                records.push(v);
            }
        }
    }
    checkpoint::write_atomic(path, kept.as_bytes())?;
    Ok(records)
}
