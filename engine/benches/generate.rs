//! Batched generation against one sequence at a time, side by side in one
//! run, on the fixture model (SmolLM2-135M-Instruct Q4_1): 32 chat prompts
//! (the first instructions of fixtures/alpaca_en_demo.jsonl, rendered with
//! the model's template), greedy, 32 new tokens each with no stop (so both
//! sides generate exactly the same tokens, which is checked), with 2
//! threads. Prints tokens/s of both and their ratio; the last line is JSON.
//!
//!     cargo bench -p main-engine --bench generate
//!
//! `MAIN_BENCH_THREADS`, `MAIN_BENCH_SEQS` and `MAIN_BENCH_NEW` override
//! 2 threads, 32 sequences and 32 new tokens; `MAIN_BENCH_PRECISION` the
//! CPU's default precision. Skipped, with a message, when the fixture is
//! missing (scripts/fetch-fixtures; `MAIN_FIXTURES` points elsewhere).

use std::path::PathBuf;
use std::time::Instant;

use main_engine::generate::{generate_batch, BatchParams, Generation, Request};
use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};
use main_engine::template::ChatTemplate;

fn fixtures() -> PathBuf {
    std::env::var_os("MAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"))
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a count"))
        })
        .unwrap_or(default)
}

/// Runs every prompt with at most `max_batch` together; (results, seconds).
fn run(
    model: &Model,
    rt: &Runtime,
    prompts: &[Vec<u32>],
    n_new: usize,
    max_batch: usize,
) -> (Vec<Generation>, f64) {
    let requests = prompts
        .iter()
        .map(|p| Request::new(p.clone(), n_new))
        .collect();
    let params = BatchParams {
        max_batch,
        ..BatchParams::default()
    };
    let t = Instant::now();
    let out = generate_batch(model, rt, requests, params).expect("generation runs");
    (out, t.elapsed().as_secs_f64())
}

fn main() {
    let path = fixtures().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let data = fixtures().join("alpaca_en_demo.jsonl");
    if !path.is_file() || !data.is_file() {
        eprintln!(
            "skipped: {} or {} is missing (scripts/fetch-fixtures)",
            path.display(),
            data.display()
        );
        return;
    }
    let threads = env_or("MAIN_BENCH_THREADS", 2);
    let n_seqs = env_or("MAIN_BENCH_SEQS", 32);
    let n_new = env_or("MAIN_BENCH_NEW", 32);
    let precision = match std::env::var("MAIN_BENCH_PRECISION") {
        Ok(p) => Precision::parse(&p).unwrap_or_else(|| panic!("MAIN_BENCH_PRECISION={p:?}")),
        Err(_) => Precision::default(),
    };
    let model = Model::load(&path).expect("the fixture model loads");
    let rt = Runtime::new(threads, precision);
    let tpl = ChatTemplate::for_model(&model).expect("its template renders");
    let tok = &model.tokenizer;
    let text = std::fs::read_to_string(&data).expect("the demo data reads");
    let prompts: Vec<Vec<u32>> = text
        .lines()
        .take(n_seqs)
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON record");
            let q = v["instruction"].as_str().expect("an instruction");
            let rendered = tpl.render_prompt(q).expect("the prompt renders");
            tok.encode(&rendered, tok.add_bos_default(), true)
                .expect("it tokenizes")
        })
        .collect();
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    eprintln!(
        "{} prompts ({prompt_tokens} tokens), {n_new} new tokens each, {threads} threads, {}",
        prompts.len(),
        precision.name()
    );
    // Warm-up: page the weights in and start the threads.
    run(&model, &rt, &prompts[..1], 2, 1);
    let (alone, t_alone) = run(&model, &rt, &prompts, n_new, 1);
    let (together, t_together) = run(&model, &rt, &prompts, n_new, n_seqs);
    let same = alone == together;
    let tokens: usize = together.iter().map(|g| g.tokens.len()).sum();
    let (tps_alone, tps_together) = (tokens as f64 / t_alone, tokens as f64 / t_together);
    println!("one at a time:      {tokens} tokens in {t_alone:7.2} s = {tps_alone:8.1} tokens/s");
    println!("{n_seqs} together:        {tokens} tokens in {t_together:7.2} s = {tps_together:8.1} tokens/s");
    println!(
        "ratio: {:.2}x; identical tokens: {same}",
        tps_together / tps_alone
    );
    println!(
        "{{\"sequences\":{n_seqs},\"new_tokens\":{n_new},\"threads\":{threads},\"precision\":\"{}\",\"tokens\":{tokens},\"alone_tokens_per_s\":{tps_alone:.2},\"together_tokens_per_s\":{tps_together:.2},\"ratio\":{:.3},\"identical\":{same}}}",
        precision.name(),
        tps_together / tps_alone
    );
}
