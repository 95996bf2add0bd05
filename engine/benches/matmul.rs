//! Matmul throughput for SmolLM2-135M's shapes (d_model 576, d_ff 1536, one
//! 4096-row chunk of the 49152-row LM head), in FLOP/s (2 per multiply-add):
//! Q4_1, Q8_0 and F16 weights in `Fast` mode, Q4_1 and Q8_0 in `Int8` mode,
//! Q4_1, Q8_0 and F16 in `Exact` mode, for one
//! token (decode) and 256 (prefill), on 1 and 2 threads.
//!
//! `MAIN_BENCH_ISA=scalar|avx2|avxvnni|avx512|avx512vnni|neon|neon-dotprod`
//! forces a kernel set.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use main_engine::kernels::{self, Isa, Kernels};
use main_engine::matmul::{matmul_with, Precision, Weight};
use main_engine::quant::{quantize_row, DType};
use main_engine::threads::Threads;

/// `(name, n_out, n_in)`.
const SHAPES: [(&str, usize, usize); 4] = [
    ("attn_576x576", 576, 576),
    ("ffn_up_1536x576", 1536, 576),
    ("ffn_down_576x1536", 576, 1536),
    ("lm_head_chunk_4096x576", 4096, 576),
];

fn kernels_under_test() -> &'static Kernels {
    let Ok(name) = std::env::var("MAIN_BENCH_ISA") else {
        return kernels::best();
    };
    let isa = match name.as_str() {
        "scalar" => Isa::Scalar,
        "avx2" => Isa::Avx2,
        "avxvnni" => Isa::AvxVnni,
        "avx512" => Isa::Avx512,
        "avx512vnni" => Isa::Avx512Vnni,
        "neon" => Isa::Neon,
        "neon-dotprod" => Isa::NeonDot,
        "simd128" => Isa::Simd128,
        other => panic!("MAIN_BENCH_ISA: unknown kernel set {other:?}"),
    };
    kernels::for_isa(isa).unwrap_or_else(|| panic!("this CPU cannot run {isa:?}"))
}

/// Deterministic pseudo-random values in [-1, 1) (no RNG state to share).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = (i ^ seed)
                .wrapping_mul(0x9e37_79b9)
                .rotate_left(13)
                .wrapping_mul(0x85eb_ca6b);
            (h >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn weight_bytes(dtype: DType, n_out: usize, n_in: usize) -> Vec<u8> {
    let rb = dtype.row_bytes(n_in).expect("whole blocks");
    let mut data = vec![0u8; n_out * rb];
    for (r, row) in data.chunks_exact_mut(rb).enumerate() {
        quantize_row(dtype, &values(n_in, r as u32), row).expect("valid row");
    }
    data
}

fn bench(c: &mut Criterion) {
    let k = kernels_under_test();
    let cases = [
        (DType::Q4_1, Precision::Fast),
        (DType::Q8_0, Precision::Fast),
        (DType::F16, Precision::Fast),
        (DType::Q4_1, Precision::Int8),
        (DType::Q8_0, Precision::Int8),
        (DType::Q4_1, Precision::Exact),
        (DType::Q8_0, Precision::Exact),
        (DType::F16, Precision::Exact),
    ];
    for (dtype, precision) in cases {
        let mut group = c.benchmark_group(format!("matmul_{:?}_{dtype:?}_{precision:?}", k.isa));
        group.sample_size(10);
        group.warm_up_time(std::time::Duration::from_millis(300));
        group.measurement_time(std::time::Duration::from_secs(1));
        for (name, n_out, n_in) in SHAPES {
            let data = weight_bytes(dtype, n_out, n_in);
            let w = Weight {
                dtype,
                n_out,
                n_in,
                data: &data,
            };
            for n_tok in [1, 256] {
                let x = values(n_tok * n_in, 7);
                let mut y = vec![0f32; n_tok * n_out];
                for n_threads in [1, 2] {
                    let threads = Threads::new(n_threads);
                    group.throughput(Throughput::Elements((2 * n_out * n_in * n_tok) as u64));
                    let id = BenchmarkId::new(name, format!("tok{n_tok}_thr{n_threads}"));
                    group.bench_function(id, |b| {
                        b.iter(|| matmul_with(k, &threads, precision, &w, &x, n_tok, &mut y))
                    });
                }
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
