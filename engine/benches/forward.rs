//! Forward pass + per-token log-probs of the fixture model
//! (SmolLM2-135M-Instruct Q4_1) over 512 tokens of real text (the start of
//! tests/data/fidelity.txt), with 2 threads, in `Fast` (two activation
//! bytes), `Exact` (f32) and `Int8` (one byte) precision:
//! `logprob::sequence_logprobs`, as `main-score logprobs` runs it. `MAIN_ISA`
//! caps the kernel set (BENCHMARKS.md's table of the default precision per
//! CPU comes from this bench). Throughput is in elements = tokens.
//!
//!     cargo bench -p main-engine --bench forward
//!
//! Skipped, with a message, when the fixture is missing (scripts/fetch-fixtures;
//! `MAIN_FIXTURES` points elsewhere). `MAIN_BENCH_THREADS` overrides the 2 threads.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use main_engine::logprob::sequence_logprobs;
use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};

const N_TOKENS: usize = 512;
const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    std::env::var_os("MAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("fixtures"))
}

/// The first `N_TOKENS` tokens of the fidelity text (segments joined if the
/// first one is shorter).
fn text_ids(model: &Model) -> Vec<u32> {
    let path = root().join("tests/data/fidelity.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let tok = &model.tokenizer;
    let mut ids = Vec::new();
    for (i, segment) in text.split("\n=====\n").enumerate() {
        let part = if i == 0 {
            segment.to_string()
        } else {
            format!("\n\n{segment}")
        };
        ids.extend(
            tok.encode(&part, i == 0 && tok.add_bos_default(), false)
                .expect("the fidelity text tokenizes"),
        );
        if ids.len() >= N_TOKENS {
            break;
        }
    }
    ids.truncate(N_TOKENS);
    ids
}

fn main() {
    let path = fixtures().join(MODEL);
    if !path.exists() {
        println!(
            "forward bench: skipped, {} is missing (run scripts/fetch-fixtures)",
            path.display()
        );
        return;
    }
    let threads: usize = std::env::var("MAIN_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let model = Model::load(&path).expect("the fixture model loads");
    let ids = text_ids(&model);

    // Defaults first, so criterion's command line (--sample-size,
    // --measurement-time, --warm-up-time) overrides them.
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    let mut group = c.benchmark_group("forward_logprobs_smollm2_135m_q4_1");
    group.throughput(Throughput::Elements(ids.len() as u64));
    for precision in [Precision::Fast, Precision::Exact, Precision::Int8] {
        let rt = Runtime::new(threads, precision);
        let id = BenchmarkId::new(
            format!("{precision:?}"),
            format!("tok{}_thr{threads}", ids.len()),
        );
        group.bench_function(id, |b| {
            b.iter(|| {
                let lps = sequence_logprobs(&model, &rt, &ids).expect("forward pass");
                std::hint::black_box(lps)
            })
        });
    }
    group.finish();
    c.final_summary();
}
