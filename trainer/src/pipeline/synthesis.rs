//! A round's synthesis (DESIGN.md §6, steps b-c): the reverse model's
//! guesses of each unlabeled response's instruction, their scores, and the
//! agreement check's answers, from the engine's batched generation or from
//! an external generator (`remote.rs`).

use std::path::Path;
use std::sync::Arc;

use main_engine::model::Model as EngineModel;
use main_engine::sample::{Sampler, SamplerParams};
use main_engine::score::Pair;
use main_engine::scorer::{Scorer, ScorerParams};

use super::{Candidate, FilterConfig, PipelineConfig, SynthesisConfig};
use crate::error::Result;
use crate::remote::{CompletionRequest, GeneratorConfig};

/// Synthesis (b) and scoring (c) of one round with the trained models.
pub(super) fn synthesize(
    cfg: &PipelineConfig,
    round: usize,
    fwd_dir: &Path,
    rev_dir: &Path,
    responses: &[String],
    progress: bool,
) -> Result<Vec<Candidate>> {
    let fwd = Arc::new(EngineModel::load(fwd_dir)?);
    let rev = Arc::new(EngineModel::load(rev_dir)?);
    // On the GPU when training runs there (the mutual filter's scores).
    let (device, precision) = crate::device::scoring();
    let params = ScorerParams {
        n_threads: cfg.threads,
        max_tokens: cfg.filter.max_tokens,
        precision,
        device,
        ..Default::default()
    };
    let mut scorer = Scorer::new(fwd.clone(), Some(rev), params)?;
    let s = &cfg.synthesis;
    // Every candidate of every response guessed in one batched call: the
    // engine decodes them together, each with its own seed, so a guess is
    // the one this seed gives alone.
    let mut asked: Vec<&str> = Vec::with_capacity(responses.len() * s.candidates);
    let mut samplers = Vec::with_capacity(responses.len() * s.candidates);
    let mut seeds = Vec::with_capacity(responses.len() * s.candidates);
    let mut asked_sources = Vec::with_capacity(responses.len() * s.candidates);
    for (i, y) in responses.iter().enumerate() {
        for c in 0..s.candidates {
            let seed = s
                .seed
                .wrapping_add((round as u64) << 40)
                .wrapping_add((i as u64) << 8)
                .wrapping_add(c as u64);
            samplers.push(Sampler::new(SamplerParams {
                temperature: s.temperature,
                top_p: s.top_p,
                seed,
            })?);
            seeds.push(seed);
            asked.push(y);
            asked_sources.push(i);
        }
    }
    let guesses = match &s.generator {
        None => scorer.guess_instructions(&asked, s.max_instruction_tokens, samplers)?,
        Some(g) => remote_guesses(g, s, &scorer, &asked, &seeds, progress)?,
    };
    let mut pairs = Vec::new();
    let mut sources = Vec::new();
    for ((x, y), i) in guesses.into_iter().zip(asked).zip(asked_sources) {
        if x.is_empty() {
            continue;
        }
        pairs.push(Pair::new(x, y));
        sources.push(i);
    }
    // Every candidate of the round in one call: the scorer packs them into
    // large batches.
    let scores = scorer.score_batch(&pairs)?;
    let mut out: Vec<Candidate> = pairs
        .into_iter()
        .zip(sources)
        .zip(scores)
        .map(|((p, source), sy)| Candidate {
            round,
            source,
            instruction: p.instruction,
            response: p.response,
            answer: None,
            alignment: sy.alignment,
            fwd_pmi: sy.fwd_pmi,
            rev_pmi: sy.rev_pmi,
            fwd_cond: sy.fwd_cond,
            rev_cond: sy.rev_cond,
            agreement: None,
            kept: false,
            weight: 0.0,
        })
        .collect();
    if cfg.filter.check_agreement {
        check_agreement(cfg, &mut scorer, &mut out)?;
    }
    Ok(out)
}

/// The guesses of [`synthesize`] written by the external generator: the
/// same prompts (the reverse template, as the engine renders and cuts them),
/// seeds, temperature and top-p, sent as text.
fn remote_guesses(
    g: &GeneratorConfig,
    s: &SynthesisConfig,
    scorer: &Scorer,
    responses: &[&str],
    seeds: &[u64],
    progress: bool,
) -> Result<Vec<String>> {
    let client = g.client(g.reverse_model.as_deref())?;
    let requests = responses
        .iter()
        .zip(seeds)
        .map(|(y, &seed)| {
            let p = scorer.guess_prompt(y, s.max_instruction_tokens)?;
            Ok(CompletionRequest {
                prompt: p.text,
                max_tokens: s.max_instruction_tokens,
                temperature: f64::from(s.temperature),
                top_p: f64::from(s.top_p),
                seed,
                stop: p.stop,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let n = requests.len();
    let texts = client.complete(&requests, &|done| {
        if progress && (done == 1 || done % 64 == 0 || done == n) {
            eprintln!("pipeline: {done}/{n} guesses from {}", client.endpoint());
        }
    })?;
    Ok(texts.into_iter().map(|t| t.trim().to_string()).collect())
}

/// The agreement check's answers written by the external generator:
/// greedy, at most `max_answer_tokens`, ended by the forward template's end
/// of turn.
fn remote_answers<'a>(
    g: &GeneratorConfig,
    cfg: &PipelineConfig,
    scorer: &Scorer,
    instructions: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>> {
    let client = g.client(g.forward_model.as_deref())?;
    let requests = instructions
        .map(|x| {
            let p = scorer.answer_prompt(x)?;
            Ok(CompletionRequest {
                prompt: p.text,
                max_tokens: cfg.synthesis.max_answer_tokens,
                temperature: 0.0,
                top_p: 1.0,
                seed: cfg.synthesis.seed,
                stop: p.stop,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    client.complete(&requests, &|_| {})
}

/// Whether the filter can keep `c` at all, agreement aside.
pub(super) fn eligible(f: &FilterConfig, c: &Candidate) -> bool {
    c.alignment.is_finite() && f.min_alignment.is_none_or(|m| c.alignment >= m)
}

/// The agreement check (c): the forward model answers the candidates'
/// instructions and `agreement` compares the original response with that
/// answer. Per response only as many candidates are answered as it takes:
/// in order of alignment (ties to the earlier, as [`select`] breaks them),
/// and none after the first that agrees, which is the one [`select`] keeps
/// for the response. Each wave answers the next candidate of every response
/// still without one and scores the answers in one batch, the forward
/// conditional view only (`Scorer::forward_cond`).
pub(super) fn check_agreement(
    cfg: &PipelineConfig,
    scorer: &mut Scorer,
    cands: &mut [Candidate],
) -> Result<()> {
    let f = &cfg.filter;
    let mut queues: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, c) in cands.iter().enumerate() {
        if eligible(f, c) {
            queues.entry(c.source).or_default().push(i);
        }
    }
    for q in queues.values_mut() {
        // Stable: equal alignments stay in candidate order. Reversed so
        // that `pop` takes the best.
        q.sort_by(|&a, &b| cands[b].alignment.total_cmp(&cands[a].alignment));
        q.reverse();
    }
    loop {
        let wave: Vec<usize> = queues.values_mut().filter_map(|q| q.pop()).collect();
        if wave.is_empty() {
            return Ok(());
        }
        // The wave's answers decoded together on the scorer's device
        // (greedy: each the answer it would get alone).
        let instructions: Vec<&str> = wave.iter().map(|&i| &*cands[i].instruction).collect();
        let answers: Vec<String> = match &cfg.synthesis.generator {
            None => scorer.answers(&instructions, cfg.synthesis.max_answer_tokens)?,
            Some(g) => remote_answers(g, cfg, scorer, instructions.into_iter())?,
        };
        let mut answered = Vec::with_capacity(wave.len());
        for (&i, text) in wave.iter().zip(answers) {
            let mut answer = text.trim().to_string();
            if answer.is_empty() {
                // An empty answer has nothing to score; the end of turn stands for it.
                answer = " ".into();
            }
            answered.push(Pair::new(cands[i].instruction.clone(), answer));
        }
        let answer_cond = scorer.forward_cond(&answered)?;
        for ((i, pair), a) in wave.into_iter().zip(answered).zip(answer_cond) {
            let c = &mut cands[i];
            let agreement = c.fwd_cond - a;
            c.answer = Some(pair.response);
            c.agreement = Some(agreement);
            if agreement >= f.min_agreement {
                // The response has its winner: nothing more to answer.
                queues.remove(&c.source);
            }
        }
    }
}
