//! Incremental decoding with the KV cache computes what a full prefill
//! computes, and sampling behaves as documented, on the fixture model.

mod common;

use common::*;
use main_engine::generate::generate;
use main_engine::logprob::{logits, sequence_logprobs, target_logprobs};
use main_engine::matmul::Precision;
use main_engine::model::{KvCache, Model, Runtime};
use main_engine::sample::{Sampler, SamplerParams};

#[test]
fn one_token_at_a_time_equals_prefill() {
    let model = Model::load(&default_model()).unwrap();
    let rt = Runtime::new(2, Precision::Exact);
    let ids = model
        .tokenizer
        .encode(
            "The quick brown fox jumps over the lazy dog, then rests.",
            false,
            false,
        )
        .unwrap();
    let full = sequence_logprobs(&model, &rt, &ids).unwrap();
    let mut cache = model.new_cache(ids.len());
    let d = model.config.d_model;
    for (i, &tok) in ids.iter().enumerate().take(ids.len() - 1) {
        let hidden = model
            .forward(&rt, std::slice::from_mut(&mut cache), &[&[tok]])
            .unwrap();
        assert_eq!(hidden.len(), d);
        let lp = target_logprobs(&model, &rt, &hidden, &[ids[i + 1]])[0];
        let want = full[i + 1].unwrap();
        assert!(
            (lp - want).abs() < 1e-4,
            "position {i}: incremental {lp} vs prefill {want}"
        );
    }
    assert_eq!(cache.len(), ids.len() - 1);
    // A cache continued from a shared prefix gives the same answer as a fresh one.
    let mut prefix = model.new_cache(ids.len());
    model
        .forward(&rt, std::slice::from_mut(&mut prefix), &[&ids[..5]])
        .unwrap();
    let mut cont = KvCache::from_prefix(&prefix, 5, ids.len());
    let h = model
        .forward(&rt, std::slice::from_mut(&mut cont), &[&ids[5..]])
        .unwrap();
    let lp = target_logprobs(&model, &rt, &h[..d], &[ids[6]])[0];
    assert!((lp - full[6].unwrap()).abs() < 1e-4);
}

#[test]
fn greedy_picks_the_argmax_and_sampling_is_reproducible() {
    let model = Model::load(&default_model()).unwrap();
    let rt = Runtime::new(2, Precision::Fast);
    let prompt = model
        .tokenizer
        .encode(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
            false,
            true,
        )
        .unwrap();
    let stop = [model.tokenizer.eot_id().unwrap()];
    let mut greedy = Sampler::new(SamplerParams::default()).unwrap();
    let out = generate(&model, &rt, &prompt, 24, &stop, &mut greedy).unwrap();
    let text = model.tokenizer.decode(&out);
    assert!(text.contains("Paris"), "greedy answer: {text:?}");

    // The first greedy token is the argmax of the prompt's last logits.
    let mut cache = model.new_cache(prompt.len());
    let h = model
        .forward(&rt, std::slice::from_mut(&mut cache), &[&prompt])
        .unwrap();
    let l = logits(&model, &rt, &h[h.len() - model.config.d_model..]);
    let argmax = l
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        .0;
    assert_eq!(out[0] as usize, argmax);

    let params = SamplerParams {
        temperature: 0.9,
        top_p: 0.9,
        seed: 42,
    };
    let a = generate(
        &model,
        &rt,
        &prompt,
        16,
        &stop,
        &mut Sampler::new(params).unwrap(),
    )
    .unwrap();
    let b = generate(
        &model,
        &rt,
        &prompt,
        16,
        &stop,
        &mut Sampler::new(params).unwrap(),
    )
    .unwrap();
    assert_eq!(a, b, "same seed, same tokens");
    // A tiny nucleus keeps only the top token: sampling becomes greedy.
    let narrow = SamplerParams {
        temperature: 1.0,
        top_p: 1e-6,
        seed: 7,
    };
    let c = generate(
        &model,
        &rt,
        &prompt,
        8,
        &stop,
        &mut Sampler::new(narrow).unwrap(),
    )
    .unwrap();
    assert_eq!(c[..], out[..c.len()]);
    assert!(Sampler::new(SamplerParams {
        top_p: 0.0,
        ..params
    })
    .is_err());
    assert!(Sampler::new(SamplerParams {
        temperature: -1.0,
        ..params
    })
    .is_err());
}
