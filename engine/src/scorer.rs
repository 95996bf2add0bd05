//! The fused bidirectional scorer (DESIGN.md §4).
//!
//! The four views of many pairs are packed into large prefill batches so
//! each weight is read once for many tokens; the LM head runs only at
//! positions whose next token is a target, in vocabulary chunks
//! (`logprob::head_logprobs`). The unconditional prompt of each model is
//! computed once, when the scorer is made, and every view continues from the
//! longest part of it that it shares (the system prompt for conditional
//! views, all of it for unconditional ones).
//!
//! ```
//! use std::sync::Arc;
//! use main_engine::model::Model;
//! use main_engine::score::Pair;
//! use main_engine::scorer::{Scorer, ScorerParams};
//!
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/SmolLM2-135M-Instruct.Q4_1.gguf");
//! let model = Arc::new(Model::load(path.as_ref())?);
//! let mut scorer = Scorer::new(model, None, ScorerParams::default())?;
//! let good = scorer.score_pair(&Pair::new("What is the capital of France?", "Paris."))?;
//! let bad = scorer.score_pair(&Pair::new("What is the capital of France?", "17 + 25 = 42."))?;
//! println!("alignment {:.3} (fwd {:.3}, rev {:.3})", good.alignment, good.fwd_pmi, good.rev_pmi);
//! assert!(good.alignment > bad.alignment);
//! # Ok::<(), main_engine::Error>(())
//! ```

use std::sync::Arc;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::logprob::head_logprobs;
use crate::matmul::Precision;
use crate::model::{KvCache, Model, Runtime};
use crate::score::{self, Combine, Pair, PairScore, TokenScore, ViewLogprobs};
use crate::template::ChatTemplate;
use crate::views::{build_view, pair_views, reverse_content, ViewTokens};

/// Settings of a [`Scorer`].
#[derive(Clone, Debug)]
pub struct ScorerParams {
    /// Worker threads; 0 = one per core.
    pub n_threads: usize,
    /// Longest view in tokens; longer content is cut and the pair flagged.
    pub max_tokens: usize,
    pub combine: Combine,
    /// Other responses of the same batch per pair for the contrastive score (0 = off).
    pub negatives: usize,
    /// Per-token detail in the results.
    pub tokens: bool,
    pub precision: Precision,
    /// New tokens per forward call: bounds activation memory, and is large
    /// enough that weights are read once for many tokens.
    pub batch_tokens: usize,
    /// Where the forward passes run. A GPU takes `Precision::Bf16` or
    /// `Precision::Exact` (`Device::default_precision` gives its default).
    pub device: Device,
}

impl Default for ScorerParams {
    fn default() -> Self {
        ScorerParams {
            n_threads: 0,
            max_tokens: 1024,
            combine: Combine::Min,
            negatives: 0,
            tokens: false,
            precision: Precision::default(),
            batch_tokens: 2048,
            device: Device::Cpu,
        }
    }
}

/// One model with what the scorer precomputes for it.
struct Side {
    model: Arc<Model>,
    template: ChatTemplate,
    /// Tokens of the end-of-turn marker that closes every target.
    n_end_of_turn: usize,
    /// The unconditional prompt and its keys/values, shared by every view.
    prefix_ids: Vec<u32>,
    prefix: KvCache,
}

impl Side {
    fn new(model: Arc<Model>, rt: &Runtime) -> Result<Side> {
        let template = ChatTemplate::for_model(&model)?;
        let prompt = template.render_prompt("")?;
        let tok = &model.tokenizer;
        let prefix_ids = tok.encode(&prompt, tok.add_bos_default(), true)?;
        let n_end_of_turn = tok.encode(template.end_of_turn(), false, true)?.len();
        let mut prefix = model.new_cache(prefix_ids.len());
        model.forward(rt, std::slice::from_mut(&mut prefix), &[&prefix_ids])?;
        Ok(Side {
            model,
            template,
            n_end_of_turn,
            prefix_ids,
            prefix,
        })
    }

    /// Target log-probs of every view, in order.
    fn run(
        &self,
        rt: &Runtime,
        views: &[&ViewTokens],
        batch_tokens: usize,
    ) -> Result<Vec<Vec<f64>>> {
        let mut out = Vec::with_capacity(views.len());
        let mut start = 0;
        while start < views.len() {
            // Greedy packing: as many views as fit in `batch_tokens` new tokens (at least one).
            let mut end = start;
            let mut n_new = 0;
            while end < views.len() {
                let add = views[end].ids.len() - self.shared_len(views[end]);
                if end > start && n_new + add > batch_tokens {
                    break;
                }
                n_new += add;
                end += 1;
            }
            out.extend(self.run_batch(rt, &views[start..end])?);
            start = end;
        }
        Ok(out)
    }

    /// How many leading tokens of a view the precomputed prefix covers. The
    /// last prompt token is always recomputed: its hidden state predicts the
    /// first target.
    fn shared_len(&self, v: &ViewTokens) -> usize {
        let lcp = v
            .ids
            .iter()
            .zip(&self.prefix_ids)
            .take_while(|(a, b)| a == b)
            .count();
        lcp.min(v.n_prompt.saturating_sub(1))
    }

    fn run_batch(&self, rt: &Runtime, views: &[&ViewTokens]) -> Result<Vec<Vec<f64>>> {
        let d = self.model.config.d_model;
        let shared: Vec<usize> = views.iter().map(|v| self.shared_len(v)).collect();
        let mut caches: Vec<KvCache> = views
            .iter()
            .zip(&shared)
            .map(|(v, &s)| KvCache::from_prefix(&self.prefix, s, v.ids.len()))
            .collect();
        let new_tokens: Vec<&[u32]> = views
            .iter()
            .zip(&shared)
            .map(|(v, &s)| &v.ids[s..])
            .collect();
        let hidden = self.model.forward(rt, &mut caches, &new_tokens)?;
        drop(caches);

        // Rows whose next token is a target: positions n_prompt-1 ..= len-2.
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        let mut base = 0;
        for (v, &s) in views.iter().zip(&shared) {
            for p in v.n_prompt - 1..v.ids.len() - 1 {
                let r = base + p - s;
                rows.extend_from_slice(&hidden[r * d..(r + 1) * d]);
                targets.push(v.ids[p + 1]);
            }
            base += v.ids.len() - s;
        }
        drop(hidden);
        let lps = head_logprobs(&self.model.output_weight(), rt, &rows, &targets);
        let mut out = Vec::with_capacity(views.len());
        let mut at = 0;
        for v in views {
            let n = v.ids.len() - v.n_prompt;
            out.push(lps[at..at + n].to_vec());
            at += n;
        }
        Ok(out)
    }

    fn pieces(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.model.tokenizer.piece(id))
            .collect()
    }
}

/// Scores pairs with a forward model and, optionally, a separate reverse
/// model. Owns its threads and scratch: use one scorer per thread; the
/// models behind it may be shared.
pub struct Scorer {
    rt: Runtime,
    params: ScorerParams,
    forward: Side,
    /// `None`: zero-shot, the forward model serves both directions.
    reverse: Option<Side>,
}

impl Scorer {
    pub fn new(
        forward: Arc<Model>,
        reverse: Option<Arc<Model>>,
        params: ScorerParams,
    ) -> Result<Scorer> {
        if params.max_tokens < 8 {
            return Err(Error::invalid_argument(
                "max_tokens",
                format!("{} is too small (at least 8)", params.max_tokens),
            ));
        }
        if params.batch_tokens == 0 {
            return Err(Error::invalid_argument(
                "batch_tokens",
                "must be at least 1",
            ));
        }
        params.device.check_precision(params.precision)?;
        if let Device::Cuda(_) = params.device {
            return Err(Error::unsupported(
                "device",
                format!("{}: the GPU scorer is not built yet", params.device),
            ));
        }
        let rt = Runtime::new(params.n_threads, params.precision);
        let forward = Side::new(forward, &rt)?;
        let reverse = match reverse {
            Some(m) => Some(Side::new(m, &rt)?),
            None => None,
        };
        Ok(Scorer {
            rt,
            params,
            forward,
            reverse,
        })
    }

    pub fn params(&self) -> &ScorerParams {
        &self.params
    }

    fn reverse_side(&self) -> &Side {
        self.reverse.as_ref().unwrap_or(&self.forward)
    }

    pub fn score_pair(&mut self, pair: &Pair) -> Result<PairScore> {
        let mut v = self.score_batch(std::slice::from_ref(pair))?;
        Ok(v.remove(0))
    }

    /// Scores many pairs in fused batches. With `negatives = K > 0`, pair i's
    /// contrastive score uses the responses of pairs i+1 ..= i+K (cyclically)
    /// of the same batch, so it needs at least K+1 pairs.
    pub fn score_batch(&mut self, pairs: &[Pair]) -> Result<Vec<PairScore>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let (fwd, rev) = (&self.forward, self.reverse_side());
        let max = self.params.max_tokens;
        let mut views = Vec::with_capacity(pairs.len());
        for (i, p) in pairs.iter().enumerate() {
            let v = pair_views(
                (&fwd.model.tokenizer, &fwd.template),
                (&rev.model.tokenizer, &rev.template),
                p,
                max,
            )
            .map_err(|e| Error::Input(format!("pair {i}: {e}")))?;
            views.push(v);
        }
        let k = self.params.negatives;
        if k > 0 && pairs.len() < k + 1 {
            return Err(Error::invalid_argument(
                "negatives",
                format!(
                    "{k} negatives need batches of at least {} pairs, got {}",
                    k + 1,
                    pairs.len()
                ),
            ));
        }
        // Conditional views of x_i with other responses y_j.
        let mut negative_views = Vec::new();
        if k > 0 {
            for (i, p) in pairs.iter().enumerate() {
                for step in 1..=k {
                    let other = &pairs[(i + step) % pairs.len()];
                    negative_views.push(build_view(
                        &fwd.model.tokenizer,
                        &fwd.template,
                        &p.instruction,
                        &other.response,
                        max,
                    )?);
                }
            }
        }

        let mut fwd_jobs: Vec<&ViewTokens> = Vec::new();
        let mut rev_jobs: Vec<&ViewTokens> = Vec::new();
        for v in &views {
            fwd_jobs.push(&v[0]);
            fwd_jobs.push(&v[1]);
            rev_jobs.push(&v[2]);
            rev_jobs.push(&v[3]);
        }
        fwd_jobs.extend(negative_views.iter());
        let bt = self.params.batch_tokens;
        let fwd_lps = fwd.run(&self.rt, &fwd_jobs, bt)?;
        let rev_lps = rev.run(&self.rt, &rev_jobs, bt)?;

        let mut out = Vec::with_capacity(pairs.len());
        for (i, v) in views.iter().enumerate() {
            let (fc, fu) = (&fwd_lps[2 * i], &fwd_lps[2 * i + 1]);
            let (rc, ru) = (&rev_lps[2 * i], &rev_lps[2 * i + 1]);
            let response_ids = &v[0].ids[v[0].n_prompt..];
            let response_pieces = fwd.pieces(response_ids);
            let truncated = v.iter().any(|x| x.truncated);
            let mut s = score::pair_score(
                &ViewLogprobs {
                    fwd_cond: fc,
                    fwd_uncond: fu,
                    rev_cond: rc,
                    rev_uncond: ru,
                    response_pieces: &response_pieces,
                    n_end_of_turn: fwd.n_end_of_turn.min(response_ids.len()),
                },
                self.params.combine,
                truncated,
            );
            if k > 0 {
                let mut sims = vec![score::mean(fc)];
                let base = 2 * pairs.len() + i * k;
                sims.extend((0..k).map(|j| score::mean(&fwd_lps[base + j])));
                s.contrastive = Some(score::contrastive(&sims));
            }
            if self.params.tokens {
                s.response_detail = Some(detail(response_ids, response_pieces, fc, fu));
                let instr_ids = &v[2].ids[v[2].n_prompt..];
                s.instruction_detail = Some(detail(instr_ids, rev.pieces(instr_ids), rc, ru));
            }
            out.push(s);
        }
        Ok(out)
    }

    /// The reverse model's guess of the instruction behind a response
    /// (greedy or sampled), for the annotation tool.
    pub fn guess_instruction(
        &mut self,
        response: &str,
        max_new: usize,
        sampler: &mut crate::sample::Sampler,
    ) -> Result<String> {
        let rev = self.reverse_side();
        let tok = &rev.model.tokenizer;
        let prompt = rev.template.render_prompt(&reverse_content(response))?;
        let ids = tok.encode(&prompt, tok.add_bos_default(), true)?;
        let mut stop: Vec<u32> = tok
            .encode(rev.template.end_of_turn(), false, true)?
            .into_iter()
            .take(1)
            .collect();
        stop.extend(tok.eos_id());
        let out = crate::sample::generate(&rev.model, &self.rt, &ids, max_new, &stop, sampler)?;
        let end = out
            .iter()
            .position(|t| stop.contains(t))
            .unwrap_or(out.len());
        Ok(tok.decode(&out[..end]).trim().to_string())
    }
}

fn detail(ids: &[u32], pieces: Vec<String>, cond: &[f64], uncond: &[f64]) -> Vec<TokenScore> {
    ids.iter()
        .zip(pieces)
        .zip(cond.iter().zip(uncond))
        .map(|((&id, text), (&c, &u))| TokenScore {
            id,
            text,
            cond: c,
            uncond: u,
            pmi: c - u,
        })
        .collect()
}
