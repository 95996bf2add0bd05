//! The memory plan of a training run: the peak bytes a step takes, by part,
//! computed from `config.json` and the run's settings before anything is
//! allocated (`main-train plan`, and `sft`'s refusal of a run that does not
//! fit).
//!
//! The whole-graph path (`--recompute false`) is planned by replaying
//! candle's autograd op by op ([`autograd`]): the forward graph of
//! `model.rs` rebuilt with its shapes (bf16 weights cast as `w()` casts
//! them), then the backward's allocations in candle's order, then the step:
//! `global_grad_norm` and `optim`'s fused AdamW, which allocates nothing
//! (it runs in place; on CUDA its state is in device memory beside the
//! weights, stepped by the kernel `engine/src/cuda/adamw.cu`).
//!
//! The layer-by-layer path (`--recompute true`: packed sequences, per-layer
//! recomputation, attention in query blocks, a chunked LM head, optionally
//! the optimizer step inside backward) is replayed statement by statement
//! ([`layerwise`]). `tests/plan_memory.rs` holds both to a counting
//! allocator, with f32, bf16 + 8-bit and bf16 + master storage.

pub mod autograd;
mod fits;
pub mod layerwise;
mod ops;
mod whole_graph;

pub use fits::{available, check_fits, host_available};

use main_engine::config::Config;

use crate::error::{Error, Result};
use crate::model::ParamDtype;
use crate::optim::MomentsKind;
use crate::sft::TrainConfig;

/// Where the run's tensors live; sets the compute dtype (f32 on the CPU,
/// bf16 on CUDA, as `device::select` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanDevice {
    Cpu,
    Cuda,
}

impl PlanDevice {
    pub fn parse(s: &str) -> Result<PlanDevice> {
        match s {
            "cpu" => Ok(PlanDevice::Cpu),
            "cuda" => Ok(PlanDevice::Cuda),
            other => Err(Error::invalid(
                "device",
                format!("'{other}' (expected cpu or cuda)"),
            )),
        }
    }
    /// Bytes per element of the forward pass.
    fn compute_bytes(self) -> u64 {
        match self {
            PlanDevice::Cpu => 4,
            PlanDevice::Cuda => 2,
        }
    }
}

/// The settings of a run that decide its memory (`sft`'s memory flags).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlanSettings {
    /// Tokens per optimizer step.
    pub tokens: usize,
    /// Longest sequence (`max_tokens`): the whole-graph path pads every
    /// sequence of a micro-batch to it at worst.
    pub seq_len: usize,
    /// Micro-batches per optimizer step (whole-graph path).
    pub grad_accum: usize,
    pub device: PlanDevice,
    /// How the weights are stored (`--param-dtype`).
    pub param_dtype: ParamDtype,
    /// An f32 master copy beside bf16 parameters (`--master`).
    pub master: bool,
    /// How AdamW stores its moments (`--moments`).
    pub moments: MomentsKind,
    /// Per-layer recomputation (the layer-by-layer path); false: the whole
    /// graph is kept.
    pub recompute: bool,
    /// The optimizer step inside backward (layer-by-layer path only).
    pub step_in_backward: bool,
    /// Query rows per attention block (layer-by-layer path).
    pub q_block: usize,
    /// LM head chunk: target rows x vocabulary columns (layer-by-layer path).
    pub head_rows: usize,
    pub head_vocab: usize,
    /// Tokens of the largest eval batch (forward only): `--tokens` packed
    /// on the layerwise path, else `batch_size` sequences of `max_tokens`
    /// (the whole-graph eval pads `batch_size` examples even with
    /// `--tokens`). 0: not known (the plan was not made from a run's
    /// settings).
    pub eval_tokens: usize,
}

impl PlanSettings {
    /// The memory-saving defaults of issue 19 at `tokens` per step.
    pub fn defaults(tokens: usize, device: PlanDevice) -> PlanSettings {
        PlanSettings {
            tokens,
            seq_len: tokens,
            grad_accum: 1,
            device,
            param_dtype: ParamDtype::Bf16,
            master: false,
            moments: MomentsKind::Bit8,
            recompute: true,
            step_in_backward: true,
            q_block: crate::layerwise::DEFAULT_Q_BLOCK,
            head_rows: crate::head::HeadChunks::default().rows,
            head_vocab: crate::head::HeadChunks::default().vocab,
            eval_tokens: 0,
        }
    }

    /// The settings of the run `cfg` describes on `device`: `sft`'s refusal
    /// and `main-train plan` both plan through here, so they read the same
    /// fields the same way. A micro-batch is `--tokens` packed tokens, else
    /// `batch_size` sequences of up to `max_tokens`; the layerwise path
    /// (not taken with the alignment loss) holds one micro-batch's
    /// activations at a time.
    pub fn from_train_config(cfg: &TrainConfig, device: PlanDevice) -> PlanSettings {
        let micro = if cfg.tokens > 0 {
            cfg.tokens
        } else {
            cfg.batch_size * cfg.max_tokens
        };
        let recompute = cfg.recompute && !cfg.align_loss;
        PlanSettings {
            tokens: if recompute {
                micro
            } else {
                micro * cfg.grad_accum
            },
            seq_len: cfg.max_tokens,
            grad_accum: cfg.grad_accum,
            device,
            param_dtype: cfg.param_dtype,
            master: cfg.master,
            moments: cfg.moments,
            recompute,
            step_in_backward: recompute && cfg.step_in_backward,
            q_block: cfg.q_block,
            eval_tokens: if recompute {
                micro
            } else {
                cfg.batch_size * cfg.max_tokens
            },
            ..PlanSettings::defaults(micro, device)
        }
    }

    /// Bytes per stored weight element.
    pub fn param_bytes(&self) -> u64 {
        match self.param_dtype {
            ParamDtype::F32 => 4,
            ParamDtype::Bf16 => 2,
        }
    }

    /// AdamW's state for tensors of `sizes` elements: (moments, master
    /// copies) in bytes, tensor by tensor as `optim::AdamW` allocates it (an
    /// 8-bit moment's last block of each tensor has its own scale), in the
    /// device's memory (on CUDA as tensors the GPU kernel steps).
    fn optimizer_state(&self, sizes: &[u64]) -> (u64, u64) {
        let n_params: u64 = sizes.iter().sum();
        let moments = sizes
            .iter()
            .map(|&n| self.moments.bytes(n as usize) as u64)
            .sum();
        let master = if self.master && self.param_dtype != ParamDtype::F32 {
            4 * n_params
        } else {
            0
        };
        (moments, master)
    }

    /// What `sft` ran before issue 19: f32 weights and moments, the whole graph.
    pub fn whole_graph(
        tokens: usize,
        seq_len: usize,
        grad_accum: usize,
        device: PlanDevice,
    ) -> Self {
        PlanSettings {
            tokens,
            seq_len,
            grad_accum,
            device,
            param_dtype: ParamDtype::F32,
            master: false,
            moments: MomentsKind::F32,
            recompute: false,
            step_in_backward: false,
            ..PlanSettings::defaults(tokens, device)
        }
    }
}

/// One part of the peak.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Part {
    pub name: &'static str,
    pub bytes: u64,
    /// What the part holds, in words.
    pub what: String,
}

/// The peak memory of a run, by part; the parts sum to `total_bytes`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Plan {
    pub n_params: u64,
    pub parts: Vec<Part>,
    pub total_bytes: u64,
    /// Which phase of the step reaches the peak.
    pub peak_at: &'static str,
    /// `total_bytes`; empty on the CPU, where it is in `parts`.
    /// The end-of-run save (`TrainModel::save_hf`), estimated: what the
    /// host already holds then (AdamW's state; on the CPU also the
    /// weights) and the one tensor in flight (the writer reads the weights
    /// one at a time): its f32 values, a reordered copy for GGUF-ordered
    /// Q/K rows, and its encoded bytes.
    pub save_host_bytes: u64,
    pub settings: PlanSettings,
}

impl Plan {
    fn new(
        n_params: u64,
        parts: Vec<Part>,
        total_bytes: u64,
        peak_at: &'static str,
        s: &PlanSettings,
        largest: u64,
    ) -> Plan {
        // What the host holds at the save: on the CPU the weights and
        // AdamW's state (the one memory); on CUDA nothing of the run.
        let resident: u64 = match s.device {
            PlanDevice::Cpu => parts
                .iter()
                .filter(|p| ["weights", "master", "moments"].contains(&p.name))
                .map(|p| p.bytes)
                .sum(),
            PlanDevice::Cuda => 0,
        };
        let save_host_bytes = resident + (4 + 4 + s.param_bytes()) * largest;
        Plan {
            n_params,
            parts,
            total_bytes,
            peak_at,
            save_host_bytes,
            settings: s.clone(),
        }
    }
}

/// The shape of one micro-batch of the whole-graph path: `n_seq`
/// sequences padded to `seq_len`, `n_targets` scored positions.
#[derive(Clone, Copy, Debug)]
pub struct BatchShape {
    pub n_seq: usize,
    pub seq_len: usize,
    pub n_targets: usize,
}

impl BatchShape {
    /// The worst micro-batch of `tokens` tokens in sequences of at most
    /// `seq_len`: every sequence full length, every position but each
    /// sequence's first a target.
    pub fn worst(tokens: usize, seq_len: usize) -> BatchShape {
        let seq_len = seq_len.min(tokens).max(2);
        let n_seq = tokens.div_ceil(seq_len).max(1);
        BatchShape {
            n_seq,
            seq_len,
            n_targets: n_seq * (seq_len - 1),
        }
    }
}

/// Every trainable tensor's element count, in `model.rs`'s order.
pub fn param_sizes(c: &Config, tied: bool) -> Vec<u64> {
    let (d, v, f) = (c.d_model as u64, c.vocab_size as u64, c.d_ff as u64);
    let q = (c.n_heads * c.head_dim) as u64;
    let kv = (c.n_kv_heads * c.head_dim) as u64;
    let mut s = vec![v * d];
    for _ in 0..c.n_layers {
        s.extend([d, q * d, kv * d, kv * d, d * q, d, f * d, f * d, d * f]);
    }
    s.push(d);
    if !tied {
        s.push(v * d);
    }
    s
}

/// Reads `config.json` of a model folder (or the file itself) and whether
/// the LM head is tied to the embedding.
pub fn read_config(path: &std::path::Path) -> Result<(Config, bool)> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(file.display().to_string(), e.to_string()))?;
    let tied = match json.get("tie_word_embeddings") {
        None | Some(serde_json::Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            Error::invalid(
                format!("{} tie_word_embeddings", file.display()),
                format!("{v} is not a boolean"),
            )
        })?,
    };
    let c = Config::from_hf_json(&bytes)?;
    c.validate()?;
    Ok((c, tied))
}

/// The plan of a run of the model `c` with `s`.
pub fn plan(c: &Config, tied: bool, s: &PlanSettings) -> Result<Plan> {
    if s.tokens < 2 {
        return Err(Error::invalid(
            "tokens",
            format!("{} (need at least 2)", s.tokens),
        ));
    }
    if s.recompute {
        if s.q_block == 0 || s.head_rows == 0 || s.head_vocab == 0 {
            return Err(Error::invalid("q-block", "block sizes must be at least 1"));
        }
        Ok(plan_layerwise(c, tied, s))
    } else {
        if s.step_in_backward {
            return Err(Error::invalid(
                "recompute",
                "the whole-graph path (--recompute false) steps after backward \
                 (--step-in-backward needs --recompute true)",
            ));
        }
        let b = BatchShape::worst(s.tokens.div_ceil(s.grad_accum.max(1)), s.seq_len);
        Ok(plan_whole_graph(c, tied, s, b))
    }
}

/// The whole-graph path for one micro-batch shape `b` (tests pass the
/// exact shape of their batch).
pub fn plan_whole_graph(c: &Config, tied: bool, s: &PlanSettings, b: BatchShape) -> Plan {
    let sizes = param_sizes(c, tied);
    let n_params: u64 = sizes.iter().sum();
    let pb = s.param_bytes();
    let weights = pb * n_params;
    let (moments, master) = s.optimizer_state(&sizes);
    let state_here = moments + master;
    let largest = *sizes.iter().max().unwrap_or(&0);
    // The gathered gradients are f32 (`Accumulate`); earlier micro-batches'
    // sums are alive through the later ones.
    let accumulated = if s.grad_accum > 1 { 4 * n_params } else { 0 };
    let (bw_peak, activations, store) = whole_graph::replay_whole_graph(
        c,
        tied,
        s.device.compute_bytes(),
        pb,
        b,
        state_here + accumulated,
    );
    let held = store;
    let base = weights + state_here + accumulated + activations;
    // After backward, the sum with the earlier micro-batches: one new tensor
    // at a time, the graph and the store still alive.
    let acc_peak = if s.grad_accum > 1 {
        base + held + 4 * largest
    } else {
        0
    };
    let opt_peak = weights + state_here + 4 * n_params + step_workspace(s, largest);
    let grads = 4 * n_params + accumulated;
    let (total, peak_at) = [
        (bw_peak, "backward"),
        (acc_peak, "gradient accumulation"),
        (opt_peak, "optimizer update"),
    ]
    .into_iter()
    .max_by_key(|p| p.0)
    .unwrap();
    let mut parts = weight_and_state_parts(s, &sizes);
    let (acts, grads_here) = if peak_at == "optimizer update" {
        (0, grads.min(4 * n_params))
    } else {
        (activations, accumulated + held.min(pb * n_params))
    };
    parts.push(Part {
        name: "gradients",
        bytes: grads_here,
        what: if accumulated > 0 {
            "f32 gradients of every weight, plus the running sum over micro-batches".into()
        } else {
            "gradients of every weight (candle's gradient store, then f32)".into()
        },
    });
    parts.push(Part {
        name: "activations",
        bytes: acts,
        what: format!(
            "the whole forward graph of a {}x{} micro-batch ({} targets): every op's output, \
             six (batch, heads, T, T) attention tensors and four [targets x vocab] head tensors",
            b.n_seq, b.seq_len, b.n_targets
        ),
    });
    let used: u64 = parts.iter().map(|p| p.bytes).sum();
    parts.push(Part {
        name: "workspace",
        bytes: total - used,
        what: match peak_at {
            "optimizer update" => step_workspace_what(s),
            _ => "backward temporaries in flight and the gradients candle keeps for inputs \
                  that need none (mask, RoPE tables)"
                .into(),
        },
    });
    Plan::new(n_params, parts, total, peak_at, s, largest)
}

/// The device bytes of the step after backward beyond the weights, their
/// state and the f32 gradients (`global_grad_norm`, then the fused
/// `AdamW::update`, one tensor at a time): nothing on the CPU (the norm
/// sums in place, the update runs in place); on CUDA the largest tensor's
/// f32 square for the norm (the update kernel runs in place).
fn step_workspace(s: &PlanSettings, largest: u64) -> u64 {
    match s.device {
        PlanDevice::Cpu => 0,
        PlanDevice::Cuda => 4 * largest,
    }
}

fn step_workspace_what(s: &PlanSettings) -> String {
    match s.device {
        PlanDevice::Cpu => "none: the norm and the fused AdamW update run in place".into(),
        PlanDevice::Cuda => "the largest gradient's f32 square for the global norm \
                             (the update kernel then runs in place)"
            .into(),
    }
}

/// The weights and AdamW's state, both in the device's memory.
fn weight_and_state_parts(s: &PlanSettings, sizes: &[u64]) -> Vec<Part> {
    let n_params: u64 = sizes.iter().sum();
    let (moments, master) = s.optimizer_state(sizes);
    let weights = Part {
        name: "weights",
        bytes: s.param_bytes() * n_params,
        what: format!(
            "{} weights; the forward casts each to the compute dtype as it uses it",
            s.param_dtype.name()
        ),
    };
    vec![
        weights,
        Part {
            name: "master",
            bytes: master,
            what: "f32 master copy (--master with bf16 weights)".into(),
        },
        Part {
            name: "moments",
            bytes: moments,
            what: format!("AdamW m and v, {}", s.moments.name()),
        },
    ]
}

/// The layer-by-layer path (`layerwise.rs`): replayed statement by
/// statement ([`layerwise::replay`]), then the step after backward when
/// gradients are kept.
fn plan_layerwise(c: &Config, tied: bool, s: &PlanSettings) -> Plan {
    let shape = pack_shape(s.tokens as u64, s.seq_len as u64);
    plan_layerwise_packed(c, tied, s, &shape)
}

/// The layer-by-layer path for one packed step of exactly `shape` (tests
/// pass the shape of their step).
pub fn plan_layerwise_packed(
    c: &Config,
    tied: bool,
    s: &PlanSettings,
    shape: &layerwise::PackShape,
) -> Plan {
    let sizes = param_sizes(c, tied);
    let n_params: u64 = sizes.iter().sum();
    let e = s.device.compute_bytes();
    let pb = s.param_bytes();
    let weights = pb * n_params;
    let (moments, master) = s.optimizer_state(&sizes);
    let state_here = moments + master;
    let sink = if s.step_in_backward {
        layerwise::SinkKind::StepNow
    } else {
        layerwise::SinkKind::Accumulate
    };
    let (bw_peak, saved) = layerwise::replay(
        c,
        tied,
        e,
        pb,
        shape,
        layerwise::Sizes {
            q_block: s.q_block as u64,
            head_rows: s.head_rows as u64,
            head_vocab: s.head_vocab as u64,
        },
        sink,
        state_here,
    );
    let largest = *sizes.iter().max().unwrap_or(&0);
    // Kept (f32) gradients: the global norm, then the fused update.
    let step_peak = if s.step_in_backward {
        0
    } else {
        weights + state_here + 4 * n_params + step_workspace(s, largest)
    };
    let (total, peak_at) = if step_peak > bw_peak {
        (step_peak, "optimizer update")
    } else {
        (bw_peak, "backward")
    };
    let grads = if s.step_in_backward { 0 } else { 4 * n_params };
    let mut parts = weight_and_state_parts(s, &sizes);
    parts.push(Part {
        name: "gradients",
        bytes: grads,
        what: if s.step_in_backward {
            "none kept: each is stepped as it completes (in flight: workspace)".into()
        } else {
            "every weight's, f32, kept for the global norm and the step".into()
        },
    });
    parts.push(Part {
        name: "activations",
        bytes: if peak_at == "backward" { saved } else { 0 },
        what: format!(
            "the {} saved layer inputs ({} tokens in sequences of at most {})",
            c.n_layers + 1,
            s.tokens,
            s.seq_len
        ),
    });
    let used: u64 = parts.iter().map(|p| p.bytes).sum();
    parts.push(Part {
        name: "workspace",
        bytes: total - used,
        what: match peak_at {
            "optimizer update" => step_workspace_what(s),
            _ => "one layer's recomputed graphs and their backward, an attention block, \
                  the head's chunks and its (vocab x d) gradient, gradients in flight"
                .into(),
        },
    });
    Plan::new(n_params, parts, total, peak_at, s, largest)
}

/// The worst packing of `tokens`: sequences of `seq_len`, the last one
/// shorter; every position but each sequence's first a target.
pub fn pack_shape(tokens: u64, seq_len: u64) -> layerwise::PackShape {
    let seq_len = seq_len.clamp(2, tokens.max(2));
    let mut seq_lens = vec![seq_len; (tokens / seq_len) as usize];
    if tokens % seq_len > 1 {
        seq_lens.push(tokens % seq_len);
    }
    if seq_lens.is_empty() {
        seq_lens.push(tokens.max(2));
    }
    let n_targets = seq_lens.iter().map(|l| l - 1).sum();
    layerwise::PackShape {
        seq_lens,
        n_targets,
    }
}

/// `bytes` in GiB for people.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

impl Plan {
    /// The plan as lines for a terminal or an error message.
    pub fn text(&self) -> String {
        let mut s = format!(
            "memory plan: {} parameters, {} tokens per step, peak at {}\n",
            self.n_params, self.settings.tokens, self.peak_at
        );
        let part = |p: &Part| format!("  {:<12} {:>9.3} GiB  {}\n", p.name, gib(p.bytes), p.what);
        for p in &self.parts {
            s.push_str(&part(p));
        }
        s.push_str(&format!(
            "  {:<12} {:>9.3} GiB ({} bytes)",
            "total",
            gib(self.total_bytes),
            self.total_bytes
        ));
        s.push_str(&format!(
            "\nsave at the end (estimated): {:.3} GiB of host memory (the weights are \
             written one tensor at a time){}",
            gib(self.save_host_bytes),
            if self.settings.device == PlanDevice::Cpu && self.save_host_bytes > self.total_bytes {
                ": more than the step, the run's peak"
            } else {
                ""
            }
        ));
        let st = &self.settings;
        if st.eval_tokens > 0 {
            let micro = if st.recompute {
                st.tokens
            } else {
                st.tokens.div_ceil(st.grad_accum.max(1))
            };
            if st.eval_tokens > micro {
                s.push_str(&format!(
                    "\neval batches of up to {} tokens exceed the step's micro-batch of {} \
                     (the whole-graph eval takes --batch-size examples of --max-tokens): \
                     their forward is not in this plan; lower --batch-size",
                    st.eval_tokens, micro
                ));
            } else {
                s.push_str(&format!(
                    "\neval batches of up to {} tokens, forward only: within the step's \
                     micro-batch of {}",
                    st.eval_tokens, micro
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Config {
        Config::from_hf_json(
            br#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "vocab_size": 1000, "rms_norm_eps": 1e-5, "max_position_embeddings": 512}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_run_that_does_not_fit_is_refused_with_the_plan() {
        let s = PlanSettings::whole_graph(256, 128, 1, PlanDevice::Cpu);
        let p = plan(&tiny(), true, &s).unwrap();
        assert!(p.total_bytes > p.save_host_bytes);
        assert!(check_fits(&p, p.total_bytes, 0).is_ok());
        let e = check_fits(&p, p.total_bytes - 1, u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs") && e.contains("activations") && e.contains("total"),
            "{e}"
        );
    }

    /// On CUDA the save's host memory is checked against the host's, the
    /// step against the device's.
    #[test]
    fn a_cuda_run_is_checked_on_the_device_and_on_the_host() {
        let s = PlanSettings::whole_graph(256, 128, 1, PlanDevice::Cuda);
        let p = plan(&tiny(), true, &s).unwrap();
        let host = p.save_host_bytes;
        assert!(host > 0);
        assert!(check_fits(&p, p.total_bytes, host).is_ok());
        let e = check_fits(&p, p.total_bytes, host - 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("of host memory"), "{e}");
        let e = check_fits(&p, p.total_bytes - 1, host)
            .unwrap_err()
            .to_string();
        assert!(e.contains("of device memory"), "{e}");
    }

    #[test]
    fn parts_sum_to_the_total_and_grow_with_tokens() {
        for recompute in [false, true] {
            let mut last = 0;
            for tokens in [64, 128, 256] {
                let mut s = PlanSettings::whole_graph(tokens, tokens, 1, PlanDevice::Cpu);
                if recompute {
                    s = PlanSettings::defaults(tokens, PlanDevice::Cpu);
                }
                let p = plan(&tiny(), false, &s).unwrap();
                let sum: u64 = p.parts.iter().map(|x| x.bytes).sum();
                assert_eq!(sum, p.total_bytes);
                assert!(p.total_bytes > last);
                last = p.total_bytes;
            }
        }
    }

    #[test]
    fn bad_settings_are_errors_naming_the_setting() {
        let mut s = PlanSettings::defaults(4, PlanDevice::Cpu);
        s.q_block = 0;
        let e = plan(&tiny(), true, &s).unwrap_err().to_string();
        assert!(e.contains("q-block"), "{e}");
        let mut s = PlanSettings::whole_graph(64, 64, 1, PlanDevice::Cpu);
        s.step_in_backward = true;
        let e = plan(&tiny(), true, &s).unwrap_err().to_string();
        assert!(e.contains("recompute"), "{e}");
    }

    #[test]
    fn settings_come_from_the_train_config_sft_runs() {
        let mut cfg = TrainConfig {
            tokens: 1024,
            max_tokens: 256,
            param_dtype: ParamDtype::Bf16,
            moments: MomentsKind::Bit8,
            step_in_backward: true,
            clip: 0.0,
            q_block: 32,
            ..TrainConfig::default()
        };
        let s = PlanSettings::from_train_config(&cfg, PlanDevice::Cuda);
        assert_eq!((s.tokens, s.seq_len, s.q_block), (1024, 256, 32));
        assert_eq!(
            (s.param_dtype, s.moments),
            (ParamDtype::Bf16, MomentsKind::Bit8)
        );
        assert!(s.recompute && s.step_in_backward && !s.master);
        // The alignment loss runs the whole graph, which steps after backward.
        cfg.align_loss = true;
        let s = PlanSettings::from_train_config(&cfg, PlanDevice::Cpu);
        assert!(!s.recompute && !s.step_in_backward);
        // batch_size sequences of max_tokens per micro-batch without --tokens.
        cfg.tokens = 0;
        cfg.grad_accum = 2;
        let s = PlanSettings::from_train_config(&cfg, PlanDevice::Cpu);
        assert_eq!(s.tokens, 2 * cfg.batch_size * 256);
    }

    #[test]
    fn cuda_keeps_the_optimizer_state_beside_the_weights() {
        let mut s = PlanSettings::whole_graph(128, 128, 1, PlanDevice::Cuda);
        s.param_dtype = ParamDtype::Bf16;
        s.master = true;
        let sizes = param_sizes(&tiny(), true);
        let n: u64 = sizes.iter().sum();
        let largest = sizes.iter().max().unwrap();
        let p = plan(&tiny(), true, &s).unwrap();
        let part = |p: &Plan, name: &str| p.parts.iter().find(|x| x.name == name).unwrap().bytes;
        assert_eq!(part(&p, "moments"), 8 * n);
        assert_eq!(part(&p, "master"), 4 * n);
        // The save holds one tensor on the host (f32, its copy, bf16 bytes).
        assert_eq!(p.save_host_bytes, (4 + 4 + 2) * largest);
        // On the CPU the host also holds the weights and the state then.
        s.device = PlanDevice::Cpu;
        let cpu = plan(&tiny(), true, &s).unwrap();
        assert_eq!(part(&cpu, "moments"), 8 * n);
        assert_eq!(cpu.save_host_bytes, (2 + 8 + 4) * n + (4 + 4 + 2) * largest);
    }

    #[test]
    fn the_plan_says_whether_eval_batches_exceed_the_step() {
        // The whole-graph eval pads --batch-size examples even with --tokens.
        let mut cfg = TrainConfig {
            tokens: 512,
            max_tokens: 128,
            batch_size: 8,
            recompute: false,
            ..TrainConfig::default()
        };
        let p = plan(
            &tiny(),
            true,
            &PlanSettings::from_train_config(&cfg, PlanDevice::Cpu),
        );
        let text = p.unwrap().text();
        assert!(text.contains("up to 1024 tokens exceed"), "{text}");
        cfg.recompute = true;
        let p = plan(
            &tiny(),
            true,
            &PlanSettings::from_train_config(&cfg, PlanDevice::Cpu),
        );
        let text = p.unwrap().text();
        assert!(text.contains("up to 512 tokens, forward only"), "{text}");
        assert!(text.contains("save at the end"), "{text}");
    }
}
