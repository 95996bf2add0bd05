//! Matrix multiplication of activations by stored (possibly quantized) weights:
//! the one operation that dominates the forward pass.
//!
//! `y[t, o] = sum_i w[o, i] * x[t, i]` for `t < n_tok`, `o < n_out`.
//! Work is split over output rows (tiles of `Kernels::tile_rows`, grouped into
//! one stripe of columns of `y` per task) so each weight byte is read once per
//! call, however many tokens are in the batch. The kernels live in
//! [`crate::kernels`].

use std::cell::RefCell;
use std::sync::Mutex;

use crate::kernels::{
    self, ActRowMut, ColumnStripes, Isa, Kernels, OutTile, QuantActs, Scheme, Scratch, WeightRows,
};
use crate::quant::{dequantize_row, DType};
use crate::threads::Threads;

/// How activations meet the weights. Both `Exact` and `Fast` are accurate
/// (within 1e-5 and 3e-4 nats of a float64 forward pass); the default is the
/// faster of the two on this CPU (see [`Precision::default`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 activations against dequantized weights (f32 accumulation): the
    /// most accurate mode (within 1e-5 nats of a float64 forward pass), and
    /// the faster one where bytes have no fast dot product (AVX2 without
    /// VNNI, NEON without `sdot`). The default in wasm too, where `Fast` is
    /// about 1.4x faster (simd128's 16-bit dot product), so the browser's
    /// scores match native `Exact`.
    Exact,
    /// Integer dot products against quantized weights with two
    /// bytes per activation: the code llama.cpp uses, plus a fine code for
    /// its rounding error (`kernels::QuantActs`), both multiplied by each
    /// weight byte as it is read. About 16 bits of each activation, so
    /// results stay within ~1e-5 relative of `Exact` (0.0003 nats mean on
    /// log-probs of the fixture), at twice the integer work of `Int8` but one
    /// pass over the weights; on AVX-512 VNNI about 1.25x the speed of
    /// `Exact` end to end (BENCHMARKS.md). Float weights (F32 / F16 / BF16)
    /// are rounded to 8-bit codes per block of 32 as they are packed
    /// (`kernels::Scheme::for_integer_dots`; 0.013 nats mean): the one
    /// approximation Fast makes there.
    Fast,
    /// One 8-bit pass, exactly llama.cpp's scheme for quantized weights:
    /// fastest, and as far from the f32 result as llama.cpp is (about 0.06
    /// nats mean on log-probs of a 135M model). Float weights are rounded to
    /// 8 bits as in `Fast`.
    Int8,
    /// GPU only (`device::Device::Cuda`): bf16 activations and weights in
    /// the matrix products, f32 accumulation, f32 residual stream and
    /// log-softmax. The CPU refuses it (`Device::check_precision`).
    Bf16,
}

impl Default for Precision {
    /// The faster of the two accurate precisions (`Exact`, `Fast`) on this
    /// CPU's kernel set, as measured (BENCHMARKS.md, "Default precision per
    /// kernel set"; keep the two in step): `Fast` where bytes have a
    /// dot-product instruction (AVX-VNNI: 1.5-1.7x `Exact` end to end;
    /// AVX-512 VNNI: 1.25x in quieter runs, undecided in loaded ones), `Exact` elsewhere (AVX2 and AVX-512 without VNNI, where
    /// two byte products per weight cost about what one f32 FMA does, and
    /// targets not measured). `Int8` is faster still but is never the
    /// default: it is as far from the float64 result as llama.cpp (about
    /// 0.06 nats mean), beyond the 0.04 nats `tests/fidelity.rs` holds
    /// `Fast` to.
    fn default() -> Precision {
        match crate::kernels::best().isa {
            Isa::Avx512Vnni | Isa::AvxVnni => Precision::Fast,
            _ => Precision::Exact,
        }
    }
}

impl Precision {
    /// `"exact"`, `"fast"`, `"int8"` or `"bf16"` (command lines, bindings).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Exact => "exact",
            Precision::Fast => "fast",
            Precision::Int8 => "int8",
            Precision::Bf16 => "bf16",
        }
    }

    /// The inverse of [`Precision::name`].
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "exact" => Some(Precision::Exact),
            "fast" => Some(Precision::Fast),
            "int8" => Some(Precision::Int8),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }
}

/// A weight matrix `[n_out, n_in]` stored row-major in `dtype` blocks.
#[derive(Clone, Copy, Debug)]
pub struct Weight<'a> {
    pub dtype: DType,
    pub n_out: usize,
    pub n_in: usize,
    pub data: &'a [u8],
}

impl<'a> Weight<'a> {
    pub fn row_bytes(&self) -> usize {
        self.dtype
            .row_bytes(self.n_in)
            .expect("row length checked at load time")
    }

    /// Rows `start..end` as a matrix of their own (used to chunk the LM head).
    pub fn rows(&self, start: usize, end: usize) -> Weight<'a> {
        let rb = self.row_bytes();
        Weight {
            dtype: self.dtype,
            n_out: end - start,
            n_in: self.n_in,
            data: &self.data[start * rb..end * rb],
        }
    }

    /// One row, dequantized into `out` (`n_in` floats).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        dequantize_row(self.dtype, &self.data[row * rb..(row + 1) * rb], out);
    }
}

thread_local! {
    /// Each worker's packed tile, kept between calls so steady-state matmuls
    /// do not allocate.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `y = x · wᵀ`; `x` is `[n_tok, n_in]`, `y` is `[n_tok, n_out]`, both row-major f32.
pub fn matmul(
    threads: &Threads,
    precision: Precision,
    w: &Weight,
    x: &[f32],
    n_tok: usize,
    y: &mut [f32],
) {
    matmul_with(kernels::best(), threads, precision, w, x, n_tok, y)
}

/// [`matmul`] with a given kernel set (tests and benches compare them).
pub fn matmul_with(
    k: &Kernels,
    threads: &Threads,
    precision: Precision,
    w: &Weight,
    x: &[f32],
    n_tok: usize,
    y: &mut [f32],
) {
    let mut input = QuantizedInput::with_kernels(k, precision, x, n_tok);
    matmul_input(threads, w, &mut input, y)
}

/// An activation matrix `x` (`[n_tok, n_in]`) read by several matmuls (q, k
/// and v; gate and up; every vocabulary chunk of the LM head), quantized once
/// for all of them: each integer scheme's codes are made the first time a
/// weight of that scheme meets `x`, and kept for the next weight.
///
/// The codes depend only on `x` and the scheme, so a matmul through a shared
/// input gives exactly the bits of one that quantizes `x` itself.
pub struct QuantizedInput<'a> {
    k: &'a Kernels,
    precision: Precision,
    /// `[n_tok, n_in]` f32 activations (what `Exact` and float rows read).
    x: &'a [f32],
    n_tok: usize,
    /// `x` quantized for each scheme met so far (usually one: a model's
    /// matrices that share an input mostly share a format).
    acts: Vec<QuantActs>,
}

impl<'a> QuantizedInput<'a> {
    /// `x` (`[n_tok, n_in]`) for the best kernels of this CPU.
    pub fn new(precision: Precision, x: &'a [f32], n_tok: usize) -> QuantizedInput<'a> {
        QuantizedInput::with_kernels(kernels::best(), precision, x, n_tok)
    }

    /// [`QuantizedInput::new`] with a given kernel set.
    pub fn with_kernels(
        k: &'a Kernels,
        precision: Precision,
        x: &'a [f32],
        n_tok: usize,
    ) -> QuantizedInput<'a> {
        QuantizedInput {
            k,
            precision,
            x,
            n_tok,
            acts: Vec::new(),
        }
    }

    /// The integer scheme `w` is multiplied with at this precision, or `None`
    /// for f32 products.
    fn scheme_for(&self, w: &Weight) -> Option<Scheme> {
        match self.precision {
            // Float rows of odd lengths have no 8-bit blocks: they stay f32.
            Precision::Fast | Precision::Int8 => Some(Scheme::for_integer_dots(w.dtype))
                .filter(|s| w.n_in.is_multiple_of(s.act_block)),
            // Bf16 is the GPU's; CPU entry points refuse it (Device::check_precision).
            Precision::Exact | Precision::Bf16 => None,
        }
    }

    /// `x` quantized for `scheme`: made on first use, reused afterwards.
    fn acts(&mut self, threads: &Threads, scheme: Scheme) -> &QuantActs {
        let at = match self.acts.iter().position(|a| a.scheme == scheme) {
            Some(at) => at,
            None => {
                let fine = self.precision == Precision::Fast;
                let acts = quantize_acts(self.k, threads, scheme, self.x, self.n_tok, fine);
                self.acts.push(acts);
                self.acts.len() - 1
            }
        };
        &self.acts[at]
    }
}

/// `y = x · wᵀ` for a prepared input `x` (see [`QuantizedInput`]); `y` is
/// `[n_tok, n_out]`.
pub fn matmul_input(threads: &Threads, w: &Weight, input: &mut QuantizedInput, y: &mut [f32]) {
    let n_tok = input.n_tok;
    assert_eq!(
        input.x.len(),
        n_tok * w.n_in,
        "matmul: x has the wrong length"
    );
    assert_eq!(y.len(), n_tok * w.n_out, "matmul: y has the wrong length");
    assert_eq!(
        w.data.len(),
        w.n_out * w.row_bytes(),
        "matmul: weight bytes do not match its shape"
    );
    if n_tok == 0 || w.n_out == 0 {
        return;
    }
    let (k, x) = (input.k, input.x);
    let acts = input
        .scheme_for(w)
        .map(|scheme| input.acts(threads, scheme));
    sweep(k, threads, w, acts, x, n_tok, y);
}

/// Every tile of `w` against every token: `y = x · wᵀ` with `acts` (the
/// quantized `x`) for integer kernels, or `x` itself for float ones.
fn sweep(
    k: &Kernels,
    threads: &Threads,
    w: &Weight,
    acts: Option<&QuantActs>,
    x: &[f32],
    n_tok: usize,
    y: &mut [f32],
) {
    let tr = k.tile_rows;
    let n_tiles = w.n_out.div_ceil(tr);
    // A few tasks per thread balance the load; fewer, larger ones keep the
    // scheduling cost small next to a tile's work.
    let tiles_per_task = n_tiles.div_ceil(4 * threads.n_threads()).max(1);
    let row_bytes = w.row_bytes();
    let stripes = ColumnStripes::new(y, n_tok, w.n_out, tiles_per_task * tr);
    threads.for_each(stripes.len(), |i| {
        let mut stripe = stripes.claim(i);
        SCRATCH.with_borrow_mut(|scratch| {
            let o0 = stripe.col0;
            for col in (0..stripe.width).step_by(tr) {
                let n_rows = tr.min(stripe.width - col);
                let first = o0 + col;
                let rows = WeightRows {
                    dtype: w.dtype,
                    n_in: w.n_in,
                    n_rows,
                    row_bytes,
                    data: &w.data[first * row_bytes..(first + n_rows) * row_bytes],
                };
                let mut out = OutTile {
                    stripe: &mut stripe,
                    col,
                };
                k.tile(&rows, acts, x, scratch, &mut out);
            }
        });
    });
}

/// Quantizes the activations once for every matmul that reads them, spread over the
/// threads when the batch is big enough to pay for it (at 256 tokens a serial
/// pass would cost about a tenth of a 576x576 matmul on two threads).
fn quantize_acts(
    k: &Kernels,
    threads: &Threads,
    scheme: Scheme,
    x: &[f32],
    n_tok: usize,
    fine: bool,
) -> QuantActs {
    const MIN_PARALLEL_ELEMENTS: usize = 1 << 15;
    let n_in = x.len() / n_tok;
    if threads.n_threads() == 1 || x.len() < MIN_PARALLEL_ELEMENTS {
        return k.quantize_acts(scheme, x, n_tok, fine);
    }
    let mut acts = QuantActs::zeroed(scheme, n_tok, n_in, fine);
    let per_task = n_tok.div_ceil(2 * threads.n_threads());
    let mut rows: Vec<_> = acts.rows_mut().collect();
    // Each task locks only its own group: the mutexes are never contended and
    // make the disjoint hand-out safe.
    let groups: Vec<Mutex<&mut [ActRowMut]>> = rows.chunks_mut(per_task).map(Mutex::new).collect();
    threads.for_each(groups.len(), |g| {
        let mut group = groups[g].lock().expect("a quantizer task panicked");
        for (i, row) in group.iter_mut().enumerate() {
            let t = g * per_task + i;
            k.quantize_row(&scheme, &x[t * n_in..(t + 1) * n_in], row);
        }
    });
    drop(groups);
    drop(rows);
    k.finish_acts(&mut acts);
    acts
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::kernels::available;
    use crate::quant::quantize_row;

    struct Case {
        dtype: DType,
        n_out: usize,
        n_in: usize,
        data: Vec<u8>,
        /// Dequantized weights, `[n_out, n_in]`.
        w: Vec<f32>,
    }

    fn case(rng: &mut StdRng, dtype: DType, n_out: usize) -> Case {
        let n_in = if dtype.block_len() == 256 { 512 } else { 96 };
        let rb = dtype.row_bytes(n_in).unwrap();
        let mut data = vec![0u8; n_out * rb];
        let mut w = vec![0f32; n_out * n_in];
        for (row, out) in data.chunks_exact_mut(rb).zip(w.chunks_exact_mut(n_in)) {
            let x: Vec<f32> = (0..n_in).map(|_| rng.random_range(-1.0..1.0)).collect();
            quantize_row(dtype, &x, row).unwrap();
            dequantize_row(dtype, row, out);
        }
        Case {
            dtype,
            n_out,
            n_in,
            data,
            w,
        }
    }

    fn weight(c: &Case) -> Weight<'_> {
        Weight {
            dtype: c.dtype,
            n_out: c.n_out,
            n_in: c.n_in,
            data: &c.data,
        }
    }

    /// `(y, Σ|w x|, Σ|w| * (activation step / 2), Σ|x| * (weight step / 2))`
    /// per output, in f64; the weight step is that of the 8-bit codes float
    /// weights get for integer dot products (zero for quantized weights).
    #[allow(clippy::type_complexity)]
    fn reference(c: &Case, x: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let act_block = Scheme::for_integer_dots(c.dtype).act_block;
        let float = Scheme::of(c.dtype).is_none();
        let mut y = Vec::new();
        let mut mag = Vec::new();
        let mut qerr = Vec::new();
        let mut werr = Vec::new();
        for x in x.chunks_exact(c.n_in) {
            let half_step: Vec<f64> = x
                .chunks_exact(act_block)
                .map(|b| b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)) / 127.0 / 2.0)
                .collect();
            for w in c.w.chunks_exact(c.n_in) {
                let terms = w.iter().zip(x).map(|(&w, &x)| w as f64 * x as f64);
                y.push(terms.clone().sum());
                mag.push(terms.map(f64::abs).sum());
                qerr.push(
                    w.iter()
                        .enumerate()
                        .map(|(i, w)| w.abs() as f64 * half_step[i / act_block])
                        .sum(),
                );
                werr.push(match float {
                    false => 0.0,
                    true => w
                        .chunks(32)
                        .zip(x.chunks(32))
                        .map(|(w, x)| {
                            let lo = w.iter().fold(f64::INFINITY, |m, &v| m.min(v as f64));
                            let hi = w.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                            (hi - lo) / 255.0 / 2.0 * x.iter().map(|v| v.abs() as f64).sum::<f64>()
                        })
                        .sum(),
                });
            }
        }
        (y, mag, qerr, werr)
    }

    fn run(
        k: &Kernels,
        threads: &Threads,
        p: Precision,
        c: &Case,
        x: &[f32],
        n_tok: usize,
    ) -> Vec<f32> {
        let mut y = vec![f32::NAN; n_tok * c.n_out];
        matmul_with(k, threads, p, &weight(c), x, n_tok, &mut y);
        y
    }

    /// Exact: within f32 rounding of the f64 product of the dequantized
    /// weights (1e-5 relative to Σ|w x|). Int8: within the worst case of
    /// rounding the activations to 8 bits, Σ|w| * step / 2, plus the same;
    /// Fast: a 128th of that.
    #[test]
    fn exact_and_fast_match_f64_reference_on_every_isa() {
        let mut rng = StdRng::seed_from_u64(11);
        let threads = Threads::new(2);
        for dtype in DType::WEIGHT_TYPES {
            for k in available() {
                // Ragged: neither a multiple of the tile nor of a task's stripe.
                let c = case(&mut rng, dtype, 2 * k.tile_rows + 5);
                for n_tok in [1, 3, 17, 64] {
                    let x: Vec<f32> = (0..n_tok * c.n_in)
                        .map(|_| rng.random_range(-2.0..2.0))
                        .collect();
                    let (want, mag, qerr, werr) = reference(&c, &x);
                    for p in [Precision::Exact, Precision::Fast, Precision::Int8] {
                        let got = run(k, &threads, p, &c, &x, n_tok);
                        // Fine codes leave at most a 256th of a step (a
                        // 128th of the half step of one byte).
                        let (act_err, w_err) = match p {
                            Precision::Exact => (0.0, 0.0),
                            Precision::Fast => (1.0 / 128.0, 1.0),
                            Precision::Int8 => (1.0, 1.0),
                            Precision::Bf16 => unreachable!("GPU only"),
                        };
                        for i in 0..got.len() {
                            let tol =
                                1e-5 * mag[i] + 1e-6 + act_err * qerr[i] + w_err * werr[i] * 1.01;
                            let err = (got[i] as f64 - want[i]).abs();
                            assert!(
                                err <= tol,
                                "{:?} {dtype:?} {p:?} n_tok {n_tok} output {i}: {} vs {} (tolerance {tol})",
                                k.isa,
                                got[i],
                                want[i]
                            );
                        }
                    }
                }
            }
        }
    }

    /// Every kernel set computes the same integers as the scalar one, so Fast
    /// results agree to f32 rounding (1e-5 relative to Σ|w x|).
    #[test]
    fn fast_matches_scalar_fast_on_every_isa() {
        let mut rng = StdRng::seed_from_u64(12);
        let threads = Threads::new(2);
        let scalar = crate::kernels::for_isa(crate::kernels::Isa::Scalar).unwrap();
        for dtype in DType::WEIGHT_TYPES {
            let c = case(&mut rng, dtype, 53);
            for n_tok in [1, 17] {
                let x: Vec<f32> = (0..n_tok * c.n_in)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                let (_, mag, _, _) = reference(&c, &x);
                let want = run(scalar, &threads, Precision::Fast, &c, &x, n_tok);
                for k in available() {
                    let got = run(k, &threads, Precision::Fast, &c, &x, n_tok);
                    for i in 0..got.len() {
                        let tol = 1e-5 * mag[i] as f32 + 1e-6;
                        assert!(
                            (got[i] - want[i]).abs() <= tol,
                            "{:?} {dtype:?} n_tok {n_tok} output {i}: {} vs scalar {}",
                            k.isa,
                            got[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }

    /// One input shared by weights of several formats (three schemes met in
    /// turn, then met again) and by row chunks of one weight
    /// (as the LM head reads it) gives the bits of a matmul per weight.
    #[test]
    fn shared_input_matches_one_matmul_per_weight() {
        let mut rng = StdRng::seed_from_u64(14);
        let threads = Threads::new(2);
        // Q4_0, Q4_1 and F32 rows all take 96 inputs (`case`).
        let cases = [
            DType::Q4_1,
            DType::Q4_0,
            DType::F32,
            DType::Q4_1,
            DType::Q4_0,
        ]
        .map(|t| case(&mut rng, t, 37));
        let n_tok = 5;
        let x: Vec<f32> = (0..n_tok * 96)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        for k in available() {
            for p in [Precision::Exact, Precision::Fast, Precision::Int8] {
                let mut input = QuantizedInput::with_kernels(k, p, &x, n_tok);
                for c in &cases {
                    let mut got = vec![f32::NAN; n_tok * c.n_out];
                    matmul_input(&threads, &weight(c), &mut input, &mut got);
                    assert_eq!(got, run(k, &threads, p, c, &x, n_tok), "{:?} {p:?}", k.isa);
                }
                // Three schemes met (F32 rows get 8-bit codes of their
                // own), each quantized once; Exact quantizes nothing.
                let n_schemes = if p == Precision::Exact { 0 } else { 3 };
                assert_eq!(input.acts.len(), n_schemes, "{:?} {p:?}", k.isa);
                // Row chunks of one weight, as the LM head is applied.
                let w = weight(&cases[0]);
                let whole = run(k, &threads, p, &cases[0], &x, n_tok);
                for (start, end) in [(0, 16), (16, 32), (32, 37)] {
                    let mut got = vec![f32::NAN; n_tok * (end - start)];
                    matmul_input(&threads, &w.rows(start, end), &mut input, &mut got);
                    for t in 0..n_tok {
                        assert_eq!(
                            got[t * (end - start)..(t + 1) * (end - start)],
                            whole[t * w.n_out + start..t * w.n_out + end],
                            "{:?} {p:?} rows {start}..{end}",
                            k.isa
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn thread_count_does_not_change_results() {
        let mut rng = StdRng::seed_from_u64(13);
        let c = case(&mut rng, DType::Q4_1, 301);
        let x: Vec<f32> = (0..5 * c.n_in)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        for p in [Precision::Exact, Precision::Fast] {
            let one = run(crate::kernels::best(), &Threads::new(1), p, &c, &x, 5);
            let three = run(crate::kernels::best(), &Threads::new(3), p, &c, &x, 5);
            assert_eq!(one, three, "{p:?}");
        }
    }
}
