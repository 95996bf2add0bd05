//! `main-train pipeline`: the MAIN loop (DESIGN.md §6). Each round
//! a. trains a forward model and a reverse model on the seed pairs (plus the
//!    synthetic pairs kept by the previous round, weighted);
//! b. lets the reverse model write instructions for unlabeled responses
//!    (sampled, several candidates each) and the forward model answer them;
//! c. scores every candidate with the engine's scorer on the trained models
//!    (both directions) and keeps, per response, the best candidate whose
//!    `alignment` passes the threshold / top fraction and whose forward
//!    answer agrees with the original response (the agreement check: the
//!    forward model answers a response's candidates in order of alignment
//!    until one agrees);
//! d. adds the kept pairs to those of earlier rounds (a response's newest
//!    kept pair replaces its older one) and weights them all by normalised
//!    alignment times a synthetic share that grows over rounds;
//! e. writes the candidates, the curated data, the models and a report.
//! After the last round both models are retrained on seed + every kept pair.
//!
//! Each stage (train forward, train reverse, synthesise and score, filter)
//! is checkpointed in `out_dir/pipeline-state.json` ([`state`]): the same
//! command after a kill loads the stages that finished, resumes an
//! interrupted training from its last SFT checkpoint and redoes an
//! interrupted synthesis from its start, so the result is the
//! uninterrupted run's.

mod config;
pub mod state;
mod synthesis;

pub use config::{
    FilterConfig, PipelineConfig, SynthesisConfig, WeightingConfig, DEFAULT_MIN_AGREEMENT,
};

use std::path::Path;

use main_engine::score::Pair;
use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::data::{read_pairs, read_responses, Direction, PairPmi, WeightedPair};
use crate::error::{Error, Result};
use crate::json_float::null_as_nan;
use crate::model::TrainModel;
use crate::sft::{train, TrainReport};
use state::{ResumeState, Stage};
use synthesis::{eligible, synthesize};

/// One synthetic candidate and its scores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Candidate {
    pub round: usize,
    /// Index of the unlabeled response.
    pub source: usize,
    pub instruction: String,
    pub response: String,
    /// The forward model's own answer to `instruction`; `None` where the
    /// agreement check did not need it (off, or another candidate of the
    /// response agreed first, or the candidate cannot be kept anyway).
    pub answer: Option<String>,
    #[serde(deserialize_with = "null_as_nan")]
    pub alignment: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub fwd_pmi: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub rev_pmi: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub fwd_cond: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub rev_cond: f64,
    /// `fwd_cond(response | instruction) - fwd_cond(answer | instruction)`,
    /// where the answer was generated.
    pub agreement: Option<f64>,
    pub kept: bool,
    /// Loss weight when kept (set at retraining).
    #[serde(deserialize_with = "null_as_nan")]
    pub weight: f64,
}

/// Quantiles of a score, interpolated between closest ranks as the
/// engine's run summary computes them (`main_engine::stats::quantile`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    #[serde(deserialize_with = "null_as_nan")]
    pub mean: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub min: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub q25: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub median: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub q75: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub max: f64,
}

pub fn summary(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| main_engine::stats::quantile(&v, p).expect("not empty");
    Some(Summary {
        n: v.len(),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        min: v[0],
        q25: q(0.25),
        median: q(0.5),
        q75: q(0.75),
        max: v[v.len() - 1],
    })
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundReport {
    pub round: usize,
    pub n_seed: usize,
    /// Synthetic pairs (kept by the previous round) trained on this round.
    pub n_synthetic_trained: usize,
    pub synthetic_scale: f64,
    pub forward: TrainReport,
    pub reverse: TrainReport,
    pub n_responses: usize,
    pub n_candidates: usize,
    pub n_kept: usize,
    pub n_discarded: usize,
    pub alignment_kept: Option<Summary>,
    pub alignment_discarded: Option<Summary>,
    pub agreement_kept: Option<Summary>,
    /// Kept pairs of this round and the earlier ones, handed to the next
    /// training (`n_kept` of them new, minus the responses they renewed).
    pub n_kept_total: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    pub rounds: Vec<RoundReport>,
    pub final_forward: TrainReport,
    pub final_reverse: TrainReport,
    pub n_curated: usize,
}

/// Reads a TOML config and runs the pipeline; relative paths in it are
/// relative to the config file's folder. `generator`: the external
/// generator's URL, over the config's (`--generator`).
pub fn run_file(path: &Path, generator: Option<&str>) -> Result<()> {
    let cfg = PipelineConfig::read(path, generator)?;
    let report = run(&cfg, true)?;
    eprintln!(
        "main-train pipeline: {} rounds, {} curated pairs in {}",
        report.rounds.len(),
        report.n_curated,
        cfg.out_dir.display()
    );
    Ok(())
}

fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut s = String::new();
    for it in items {
        s.push_str(&serde_json::to_string(it).map_err(|e| Error::invalid("jsonl", e.to_string()))?);
        s.push('\n');
    }
    write_atomic(path, s.as_bytes())
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let s = serde_json::to_vec_pretty(v).map_err(|e| Error::invalid("json", e.to_string()))?;
    write_atomic(path, &s)
}

/// A finished stage's output, read back on resume.
fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Data {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        line: 0,
        reason: e.to_string(),
    })
}

/// The forward and the reverse model of round `round` (`rounds + 1`: the
/// final retraining), in `dir/forward` and `dir/reverse`; a direction
/// already trained is read back.
fn train_both(
    cfg: &PipelineConfig,
    state: &mut ResumeState,
    round: usize,
    data: &[WeightedPair],
    dir: &Path,
    progress: bool,
) -> Result<(TrainReport, TrainReport)> {
    let mut one = |direction: Direction, stage: Stage| -> Result<TrainReport> {
        let run = dir.join(direction.name());
        if state.is_done(round, stage) {
            return read_json(&run.join("report.json"));
        }
        let report = train_direction(cfg, data, direction, &run, progress)?;
        state.finish(round, stage)?;
        Ok(report)
    };
    let fwd = one(Direction::Forward, Stage::TrainForward)?;
    let rev = one(Direction::Reverse, Stage::TrainReverse)?;
    Ok((fwd, rev))
}

/// Trains one direction from the base model into `run`, continuing from
/// the run's last checkpoint when a kill interrupted it (`[train]
/// checkpoint_every`; without checkpoints it starts over, to the same end).
fn train_direction(
    cfg: &PipelineConfig,
    data: &[WeightedPair],
    direction: Direction,
    run: &Path,
    progress: bool,
) -> Result<TrainReport> {
    let (device, dtype) = crate::device::select()?;
    let mut model = TrainModel::load(&cfg.base_model, &device, dtype)?;
    model.cast_params(cfg.train.param_dtype.dtype())?;
    if progress {
        eprintln!(
            "training {} model ({} pairs) -> {}",
            direction.name(),
            data.len(),
            run.display()
        );
    }
    train(&model, data, direction, &cfg.train, run, true, progress)
}

/// The training set of a round: seed pairs, then kept synthetic pairs with
/// their weights set for `round`.
fn training_set(
    cfg: &PipelineConfig,
    seed: &[WeightedPair],
    kept: &mut [Candidate],
    round: usize,
) -> Vec<WeightedPair> {
    let w = &cfg.weighting;
    let scale = w.scale(round);
    let (lo, hi) = kept
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), c| {
            (a.min(c.alignment), b.max(c.alignment))
        });
    let mut out: Vec<WeightedPair> = seed
        .iter()
        .map(|p| WeightedPair {
            pair: p.pair.clone(),
            weight: p.weight * w.seed_weight,
            pmi: p.pmi,
        })
        .collect();
    for c in kept.iter_mut() {
        let norm = if w.by_alignment && hi > lo {
            0.1 + 0.9 * (c.alignment - lo) / (hi - lo)
        } else {
            1.0
        };
        c.weight = scale * norm;
        out.push(WeightedPair {
            pair: Pair::new(c.instruction.clone(), c.response.clone()),
            weight: c.weight,
            // As scored by the round that kept it: the alignment loss's
            // consistency targets.
            pmi: Some(PairPmi {
                fwd_pmi: c.fwd_pmi,
                rev_pmi: c.rev_pmi,
            }),
        });
    }
    out
}

/// The mutual filter (c): per response the best candidate passing the
/// agreement bound, then the alignment threshold and top fraction.
fn select(f: &FilterConfig, candidates: &mut [Candidate]) {
    let mut best: std::collections::BTreeMap<usize, usize> = Default::default();
    for (i, c) in candidates.iter().enumerate() {
        if !eligible(f, c) {
            continue;
        }
        // Unchecked (`None`) under the check: never better than the winner.
        if f.check_agreement && !c.agreement.is_some_and(|a| a >= f.min_agreement) {
            continue;
        }
        match best.get(&c.source) {
            Some(&j) if candidates[j].alignment >= c.alignment => {}
            _ => {
                best.insert(c.source, i);
            }
        }
    }
    // In response order, so ties at the cut go to the earlier response.
    let winners: Vec<usize> = best.into_values().collect();
    let keep = match f.keep_top {
        Some(frac) => {
            let keys: Vec<f64> = winners.iter().map(|&i| candidates[i].alignment).collect();
            main_engine::rank::keep_top(&keys, frac.clamp(0.0, 1.0))
        }
        None => vec![true; winners.len()],
    };
    for (i, keep) in winners.into_iter().zip(keep) {
        candidates[i].kept = keep;
    }
}

/// The kept pairs after a round: those of the earlier rounds, then this
/// round's `new`. A response kept again gets its new pair in place of the
/// old one (written and scored by the newer models), so each response is
/// trained on once; its weight is set again each round, as every kept
/// pair's is ([`training_set`]).
fn accumulate(mut kept: Vec<Candidate>, new: Vec<Candidate>) -> Vec<Candidate> {
    let renewed: std::collections::BTreeSet<usize> = new.iter().map(|c| c.source).collect();
    kept.retain(|c| !renewed.contains(&c.source));
    kept.extend(new);
    kept
}

/// A curated record: the pair, where it came from, its scores and weight.
fn curated_records(seed: &[WeightedPair], kept: &[Candidate]) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = seed
        .iter()
        .map(|p| {
            serde_json::json!({
                "instruction": p.pair.instruction, "output": p.pair.response,
                "origin": "seed", "round": 0, "weight": p.weight,
            })
        })
        .collect();
    out.extend(kept.iter().map(|c| {
        serde_json::json!({
            "instruction": c.instruction, "output": c.response, "origin": "synthetic",
            "round": c.round, "weight": c.weight,
            "alignment": {"alignment": c.alignment, "fwd_pmi": c.fwd_pmi, "rev_pmi": c.rev_pmi,
                          "fwd_cond": c.fwd_cond, "rev_cond": c.rev_cond, "agreement": c.agreement},
        })
    }));
    out
}

pub fn run(cfg: &PipelineConfig, progress: bool) -> Result<PipelineReport> {
    if cfg.rounds == 0 {
        return Err(Error::invalid("rounds", "must be at least 1"));
    }
    if cfg.synthesis.candidates == 0 {
        return Err(Error::invalid("synthesis.candidates", "must be at least 1"));
    }
    cfg.train.validate()?;
    let mut seed = read_pairs(&cfg.seed_pairs)?;
    if let Some(n) = cfg.limit_seed {
        seed.truncate(n);
    }
    let mut responses = read_responses(&cfg.unlabeled)?;
    if let Some(n) = cfg.limit_unlabeled {
        responses.truncate(n);
    }
    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| Error::io(&cfg.out_dir, e))?;
    let mut state = ResumeState::open(&cfg.out_dir, state::run_identity(cfg)?)?;
    let mut kept: Vec<Candidate> = Vec::new();
    let mut reports = Vec::new();
    for round in 1..=cfg.rounds {
        let dir = cfg.out_dir.join(format!("round-{round}"));
        if state.is_done(round, Stage::Filter) {
            // The round's end state: its report and the pairs it hands on.
            if progress {
                eprintln!("round {round}: done before, read from {}", dir.display());
            }
            reports.push(read_json::<RoundReport>(&dir.join("report.json"))?);
            kept = read_jsonl(&dir.join("kept.jsonl"))?;
            continue;
        }
        let n_synth = kept.len();
        let data = training_set(cfg, &seed, &mut kept, round);
        let (fwd, rev) = train_both(cfg, &mut state, round, &data, &dir, progress)?;
        // Synthesis and scoring: every candidate with its scores, before
        // the filter.
        let scored = dir.join("scored.jsonl");
        if !state.is_done(round, Stage::Synthesize) {
            if progress {
                eprintln!("round {round}: synthesis for {} responses", responses.len());
            }
            let cands = synthesize(
                cfg,
                round,
                &dir.join("forward/model"),
                &dir.join("reverse/model"),
                &responses,
                progress,
            )?;
            write_jsonl(&scored, &cands)?;
            state.finish(round, Stage::Synthesize)?;
        }
        // A run goes on from the file whether it just wrote it or resumed,
        // so a score JSON cannot hold (non-finite, written as null) is the
        // same NaN either way.
        let mut cands: Vec<Candidate> = read_jsonl(&scored)?;
        select(&cfg.filter, &mut cands);
        let align = |k: bool| -> Vec<f64> {
            cands
                .iter()
                .filter(|c| c.kept == k)
                .map(|c| c.alignment)
                .collect()
        };
        let new_kept: Vec<Candidate> = cands.iter().filter(|c| c.kept).cloned().collect();
        let report = RoundReport {
            round,
            n_seed: seed.len(),
            n_synthetic_trained: n_synth,
            synthetic_scale: if n_synth > 0 {
                cfg.weighting.scale(round)
            } else {
                0.0
            },
            forward: fwd,
            reverse: rev,
            n_responses: responses.len(),
            n_candidates: cands.len(),
            n_kept: new_kept.len(),
            n_discarded: cands.len() - new_kept.len(),
            alignment_kept: summary(&align(true)),
            alignment_discarded: summary(&align(false)),
            agreement_kept: summary(
                &new_kept
                    .iter()
                    .filter_map(|c| c.agreement)
                    .collect::<Vec<_>>(),
            ),
            n_kept_total: 0,
        };
        write_jsonl(&dir.join("synthetic.jsonl"), &cands)?;
        // The pairs this round hands on (every round's so far), weighted as
        // the next round trains them.
        let mut next = accumulate(kept, new_kept);
        let _ = training_set(cfg, &seed, &mut next, round + 1);
        let report = RoundReport {
            n_kept_total: next.len(),
            ..report
        };
        write_jsonl(&dir.join("curated.jsonl"), &curated_records(&seed, &next))?;
        write_jsonl(&dir.join("kept.jsonl"), &next)?;
        write_json(&dir.join("report.json"), &report)?;
        state.finish(round, Stage::Filter)?;
        reports.push(report);
        // From the file, as a resumed run reads it.
        kept = read_jsonl(&dir.join("kept.jsonl"))?;
    }
    // Final models on seed + every round's kept pairs.
    let dir = cfg.out_dir.join("final");
    let data = training_set(cfg, &seed, &mut kept, cfg.rounds + 1);
    let (final_forward, final_reverse) =
        train_both(cfg, &mut state, cfg.rounds + 1, &data, &dir, progress)?;
    let curated = curated_records(&seed, &kept);
    write_jsonl(&cfg.out_dir.join("curated.jsonl"), &curated)?;
    let report = PipelineReport {
        rounds: reports,
        final_forward,
        final_reverse,
        n_curated: curated.len(),
    };
    write_json(&cfg.out_dir.join("report.json"), &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sft::TrainConfig;
    use std::path::PathBuf;

    fn candidate(source: usize, alignment: f64) -> Candidate {
        Candidate {
            round: 1,
            source,
            instruction: String::new(),
            response: String::new(),
            answer: None,
            alignment,
            fwd_pmi: alignment,
            rev_pmi: alignment,
            fwd_cond: 0.0,
            rev_cond: 0.0,
            // Agrees under the default check.
            agreement: Some(0.0),
            kept: false,
            weight: 1.0,
        }
    }

    #[test]
    fn keep_top_keeps_what_main_score_keeps() {
        // Five per-response winners (the better of the two candidates of
        // response 0, at index 1), alignments 0.4, 0.9, 0.2, 0.4, -1.0.
        let kept = |fraction: f64| {
            let mut c = vec![
                candidate(0, 0.1),
                candidate(0, 0.4),
                candidate(1, 0.9),
                candidate(2, 0.2),
                candidate(3, 0.4),
                candidate(4, -1.0),
            ];
            let f = FilterConfig {
                keep_top: Some(fraction),
                ..FilterConfig::default()
            };
            select(&f, &mut c);
            c.iter().map(|c| c.kept).collect::<Vec<bool>>()
        };
        // round(0.25 x 5) = 1 (ceil kept 2).
        assert_eq!(kept(0.25), [false, false, true, false, false, false]);
        // round(0.3 x 5) = 2: the tie at the cut goes to the earlier response.
        assert_eq!(kept(0.3), [false, true, true, false, false, false]);
        let keys = [0.4, 0.9, 0.2, 0.4, -1.0];
        assert_eq!(
            main_engine::rank::keep_top(&keys, 0.3),
            [true, true, false, false, false]
        );
    }

    #[test]
    fn summary_quantiles_interpolate_as_the_engine_summary_does() {
        let s = summary(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        // numpy.quantile([1, 2, 3, 4], [0.25, 0.5, 0.75]) = 1.75, 2.5, 3.25
        // (nearest rank gave 2, 3, 3).
        assert_eq!((s.q25, s.median, s.q75), (1.75, 2.5, 3.25));
        assert_eq!((s.n, s.min, s.max, s.mean), (4, 1.0, 4.0, 2.5));
        assert!(summary(&[]).is_none());
    }

    /// Under the agreement check a response's winner is its best candidate
    /// that agrees: one that disagrees, or that was never answered, is
    /// passed over; with the check off the alignment alone decides.
    #[test]
    fn the_agreement_check_passes_over_what_disagrees() {
        let select_with = |check: bool| {
            let mut c = vec![candidate(0, 0.9), candidate(0, 0.5), candidate(1, 0.7)];
            c[0].agreement = Some(DEFAULT_MIN_AGREEMENT - 0.1);
            c[2].agreement = None;
            let f = FilterConfig {
                keep_top: None,
                check_agreement: check,
                ..FilterConfig::default()
            };
            select(&f, &mut c);
            c.iter().map(|c| c.kept).collect::<Vec<bool>>()
        };
        assert_eq!(select_with(true), [false, true, false]);
        assert_eq!(select_with(false), [true, false, true]);
    }

    fn kept(round: usize, source: usize, alignment: f64) -> Candidate {
        Candidate {
            round,
            source,
            instruction: format!("instruction {round}.{source}"),
            response: format!("response {source}"),
            answer: None,
            alignment,
            fwd_pmi: alignment,
            rev_pmi: alignment,
            fwd_cond: 0.0,
            rev_cond: 0.0,
            agreement: None,
            kept: true,
            weight: 0.0,
        }
    }

    fn config() -> PipelineConfig {
        PipelineConfig {
            base_model: PathBuf::new(),
            seed_pairs: PathBuf::new(),
            unlabeled: PathBuf::new(),
            out_dir: PathBuf::new(),
            rounds: 3,
            limit_seed: None,
            limit_unlabeled: None,
            threads: 1,
            train: TrainConfig::default(),
            synthesis: SynthesisConfig::default(),
            filter: FilterConfig::default(),
            weighting: WeightingConfig::default(),
        }
    }

    /// Kept pairs accumulate over rounds (`kept = next` dropped round 1's
    /// pairs at round 2); a response kept again takes its newest pair; every
    /// kept pair is weighted again for the round that trains on it.
    #[test]
    fn kept_pairs_accumulate_across_rounds_with_their_latest_weights() {
        let cfg = config();
        let seed = vec![WeightedPair::new(
            Pair::new("seed instruction", "seed response"),
            1.0,
        )];
        let round1 = vec![kept(1, 0, 0.5), kept(1, 1, 1.0), kept(1, 2, 0.0)];
        let mut all = accumulate(Vec::new(), round1);
        let data = training_set(&cfg, &seed, &mut all, 2);
        assert_eq!(data.len(), 1 + 3);
        // Round 2's share (synthetic_start 0.3) times alignment in [0.1, 1].
        let close = |w: &[f64], want: &[f64]| {
            assert_eq!(w.len(), want.len());
            for (got, want) in w.iter().zip(want) {
                assert!((got - want).abs() < 1e-12, "{w:?} != {want:?}");
            }
        };
        let w: Vec<f64> = all.iter().map(|c| c.weight).collect();
        close(&w, &[0.3 * 0.55, 0.3, 0.3 * 0.1]);

        // Round 2 keeps responses 1 (again) and 3 (new).
        let round2 = vec![kept(2, 1, 2.0), kept(2, 3, 0.0)];
        let mut all = accumulate(all, round2);
        let who: Vec<(usize, usize)> = all.iter().map(|c| (c.round, c.source)).collect();
        assert_eq!(who, [(1, 0), (1, 2), (2, 1), (2, 3)]);
        let data = training_set(&cfg, &seed, &mut all, 3);
        assert_eq!(data.len(), 1 + 4);
        assert_eq!(data[3].pair.instruction, "instruction 2.1");
        // Round 3's share (0.3 + 0.3) over the alignments 0.5, 0, 2, 0.
        let w: Vec<f64> = all.iter().map(|c| c.weight).collect();
        close(&w, &[0.6 * (0.1 + 0.9 * 0.25), 0.6 * 0.1, 0.6, 0.6 * 0.1]);
        for (c, d) in all.iter().zip(&data[1..]) {
            assert_eq!(c.weight, d.weight);
        }
    }
}
