//! Where the pipeline's default agreement threshold comes from
//! (`[filter] min_agreement`, trainer/README.md): the agreement
//! `fwd_cond(y | x) - fwd_cond(y' | x)` (y' the forward model's greedy
//! answer) of real Alpaca pairs under the fixture model, for each pair's own
//! instruction and for another pair's instruction. A measurement, not a
//! check: `cargo test --release -p main-trainer --test agreement -- --ignored --nocapture`.

mod common;

use std::sync::Arc;

use main_engine::generate::generate;
use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};
use main_engine::sample::{Sampler, SamplerParams};
use main_engine::score::Pair;
use main_engine::scorer::{Scorer, ScorerParams};
use main_engine::template::ChatTemplate;

#[test]
#[ignore = "a measurement (minutes on 2 cores); prints quantiles"]
fn agreement_of_matched_and_mismatched_pairs() {
    let n = 24;
    let pairs = common::alpaca_pairs(n);
    let model = Arc::new(Model::load(&common::fixture("smollm2-f32")).unwrap());
    let params = ScorerParams {
        n_threads: 2,
        max_tokens: 512,
        precision: Precision::Exact,
        ..Default::default()
    };
    let mut scorer = Scorer::new(model.clone(), None, params).unwrap();
    let rt = Runtime::new(2, Precision::Exact);
    let tpl = ChatTemplate::for_model(&model).unwrap();
    let tok = &model.tokenizer;
    let mut stop: Vec<u32> = tok
        .encode(tpl.end_of_turn(), false, true)
        .unwrap()
        .into_iter()
        .take(1)
        .collect();
    stop.extend(tok.eos_id());
    let mut answers = Vec::new();
    for p in &pairs {
        let ids = tok
            .encode(
                &tpl.render_prompt(&p.instruction).unwrap(),
                tok.add_bos_default(),
                true,
            )
            .unwrap();
        let mut greedy = Sampler::new(SamplerParams::default()).unwrap();
        let gen = generate(&model, &rt, &ids, 96, &stop, &mut greedy).unwrap();
        let end = gen
            .iter()
            .position(|t| stop.contains(t))
            .unwrap_or(gen.len());
        let a = tok.decode(&gen[..end]).trim().to_string();
        answers.push(if a.is_empty() { " ".to_string() } else { a });
    }
    let own: Vec<Pair> = pairs
        .iter()
        .zip(&answers)
        .map(|(p, a)| Pair::new(p.instruction.clone(), a.clone()))
        .collect();
    let answer_cond = scorer.forward_cond(&own).unwrap();
    let matched = scorer.forward_cond(&pairs).unwrap();
    // Response i under instruction i+1: a pair that does not belong together.
    let swapped: Vec<Pair> = (0..n)
        .map(|i| {
            Pair::new(
                pairs[(i + 1) % n].instruction.clone(),
                pairs[i].response.clone(),
            )
        })
        .collect();
    let mismatched = scorer.forward_cond(&swapped).unwrap();
    let q = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| main_engine::stats::quantile(&v, p).unwrap();
        format!(
            "min {:.2} q10 {:.2} q25 {:.2} median {:.2} q75 {:.2} max {:.2}",
            v[0],
            at(0.1),
            at(0.25),
            at(0.5),
            at(0.75),
            v[v.len() - 1]
        )
    };
    let agree_m: Vec<f64> = (0..n).map(|i| matched[i] - answer_cond[i]).collect();
    let agree_x: Vec<f64> = (0..n)
        .map(|i| mismatched[i] - answer_cond[(i + 1) % n])
        .collect();
    eprintln!("answer fwd_cond:          {}", q(answer_cond.clone()));
    eprintln!("own response fwd_cond:    {}", q(matched.clone()));
    eprintln!("agreement, own pair:      {}", q(agree_m.clone()));
    eprintln!("agreement, swapped pair:  {}", q(agree_x.clone()));
    for t in [-0.5, -1.0, -1.5, -2.0, -2.5, -3.0] {
        let pass = |v: &[f64]| v.iter().filter(|&&a| a >= t).count();
        eprintln!(
            "threshold {t}: own pairs pass {}/{n}, swapped pass {}/{n}",
            pass(&agree_m),
            pass(&agree_x)
        );
    }
}
