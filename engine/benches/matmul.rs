//! Matmul throughput for SmolLM2-135M's shapes (d_model 576, d_ff 1536, one
//! 4096-row chunk of the 49152-row LM head), in FLOP/s (2 per multiply-add):
//! Q4_1, Q8_0 and F16 weights in `Fast` mode, Q4_1 and Q8_0 in `Int8` mode,
//! Q4_1, Q8_0 and F16 in `Exact` mode, for one
//! token (decode) and 256 (prefill), on 1 and 2 threads.
//!
//! `MAIN_BENCH_ISA=scalar|avx2|avxvnni|avx512|avx512vnni|neon|neon-dotprod`
//! forces a kernel set.
//!
//! For `Exact` on x86 it also prints each case's share of the f32 FMA peak:
//! `threads x 2 FMA pipes x lanes (8 for the AVX2 sets, 16 for AVX-512) x 2
//! FLOP x clock`. The clock is `MAIN_BENCH_CLOCK_MHZ` if set, else the first
//! "cpu MHz" of /proc/cpuinfo, which under a hypervisor can be the nominal
//! clock rather than the one the core runs at (the line says which it used).
//! Two figures: by wall time, and per second the process's threads spent on
//! a CPU (Linux schedstat), which a machine shared with other work leaves
//! closer to what the kernel does while it runs.

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

/// The clock for the peak figure, in MHz, and where it came from.
fn clock_mhz() -> Option<(f64, &'static str)> {
    if let Ok(v) = std::env::var("MAIN_BENCH_CLOCK_MHZ") {
        let mhz = v
            .parse()
            .unwrap_or_else(|_| panic!("MAIN_BENCH_CLOCK_MHZ: not a number: {v:?}"));
        return Some((mhz, "MAIN_BENCH_CLOCK_MHZ"));
    }
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz = line.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz, "/proc/cpuinfo \"cpu MHz\""))
}

/// f32 lanes per FMA of a kernel set's `Exact` tile, where the peak figure applies.
fn fma_lanes(isa: Isa) -> Option<usize> {
    match isa {
        Isa::Avx2 | Isa::AvxVnni => Some(8),
        Isa::Avx512 | Isa::Avx512Vnni => Some(16),
        _ => None,
    }
}

/// Nanoseconds every thread of this process has spent on a CPU (Linux).
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The work criterion's samples did and the time it took, wall and CPU
/// (all of the process's threads): totals, as schedstat's CPU time is only
/// exact over many scheduler ticks.
#[derive(Default)]
struct Totals {
    flops: f64,
    wall_s: f64,
    cpu_s: f64,
}

impl Totals {
    /// Runs `f` `iters` times for criterion, adding up work and times.
    fn time(&mut self, iters: u64, flops: f64, f: &mut dyn FnMut()) -> std::time::Duration {
        let (t, cpu0) = (std::time::Instant::now(), process_cpu_ns());
        for _ in 0..iters {
            f();
        }
        let wall = t.elapsed();
        if let (Some(a), Some(b)) = (cpu0, process_cpu_ns()) {
            self.flops += flops * iters as f64;
            self.wall_s += wall.as_secs_f64();
            self.cpu_s += b.saturating_sub(a) as f64 * 1e-9;
        }
        wall
    }

    /// Prints the share of the f32 FMA peak, by wall time and by CPU time.
    fn print_peak_share(&self, id: &str, n_threads: usize, lanes: usize) {
        let Some((mhz, source)) = clock_mhz() else {
            return println!("peak {id}: no clock (set MAIN_BENCH_CLOCK_MHZ)");
        };
        let peak = n_threads as f64 * 2.0 * lanes as f64 * 2.0 * mhz * 1e6;
        // Per CPU-second the peak is one thread's, whatever the thread count.
        let per_thread = peak / n_threads as f64;
        let (wall, cpu) = (self.flops / self.wall_s, self.flops / self.cpu_s);
        println!(
            "peak {id}: mean {:.1} GFLOP/s = {:.0}% of the f32 FMA peak {:.1} GFLOP/s \
             ({n_threads} thr x 2 pipes x {lanes} lanes x 2 x {mhz:.0} MHz from {source}); \
             {:.1} GFLOP/s per CPU-second = {:.0}%",
            wall / 1e9,
            100.0 * wall / peak,
            peak / 1e9,
            cpu / 1e9,
            100.0 * cpu / per_thread,
        );
    }
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
        let group_name = format!("matmul_{:?}_{dtype:?}_{precision:?}", k.isa);
        let mut group = c.benchmark_group(&group_name);
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
                    let case = format!("tok{n_tok}_thr{n_threads}");
                    let id = BenchmarkId::new(name, &case);
                    let flops = (2 * n_out * n_in * n_tok) as f64;
                    let mut totals = Totals::default();
                    group.bench_function(id, |b| {
                        b.iter_custom(|iters| {
                            totals.time(iters, flops, &mut || {
                                matmul_with(k, &threads, precision, &w, &x, n_tok, &mut y)
                            })
                        })
                    });
                    // Only where criterion's filter let the case run.
                    if let (Precision::Exact, Some(lanes), true) =
                        (precision, fma_lanes(k.isa), totals.wall_s > 0.0)
                    {
                        let id = format!("{group_name}/{name}/{case}");
                        totals.print_peak_share(&id, n_threads, lanes);
                    }
                }
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
