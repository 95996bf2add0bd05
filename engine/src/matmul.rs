//! Matrix multiplication of activations by stored (possibly quantized) weights:
//! the one operation that dominates the forward pass.
//!
//! `y[t, o] = sum_i w[o, i] * x[t, i]` for `t < n_tok`, `o < n_out`.
//! Work is split over output rows so each weight byte is read once per call,
//! however many tokens are in the batch.

use crate::quant::{dequantize_row, DType};
use crate::threads::Threads;

/// How activations meet the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 activations against dequantized weights (f32 accumulation).
    Exact,
    /// Activations quantized to 8 bits per block, integer dot products against
    /// quantized weights, as llama.cpp does. Float weights fall back to `Exact`.
    #[default]
    Fast,
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

/// Raw pointer to the output, shared by workers that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: workers write disjoint elements (distinct output rows `o`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `y = x · wᵀ`; `x` is `[n_tok, n_in]`, `y` is `[n_tok, n_out]`, both row-major f32.
pub fn matmul(
    threads: &Threads,
    precision: Precision,
    w: &Weight,
    x: &[f32],
    n_tok: usize,
    y: &mut [f32],
) {
    assert_eq!(x.len(), n_tok * w.n_in, "matmul: x has the wrong length");
    assert_eq!(y.len(), n_tok * w.n_out, "matmul: y has the wrong length");
    assert_eq!(
        w.data.len(),
        w.n_out * w.row_bytes(),
        "matmul: weight bytes do not match its shape"
    );
    let _ = precision; // The reference path is exact for every precision.
    const ROWS_PER_TASK: usize = 16;
    let n_tasks = w.n_out.div_ceil(ROWS_PER_TASK);
    let out = OutPtr(y.as_mut_ptr());
    threads.for_each(n_tasks, |task| {
        let out = out;
        let mut row = vec![0f32; w.n_in];
        for o in task * ROWS_PER_TASK..((task + 1) * ROWS_PER_TASK).min(w.n_out) {
            w.dequantize_row(o, &mut row);
            for t in 0..n_tok {
                let xt = &x[t * w.n_in..(t + 1) * w.n_in];
                let dot: f32 = row.iter().zip(xt).map(|(a, b)| a * b).sum();
                // SAFETY: `t * n_out + o < y.len()` (asserted above) and no other
                // task writes row `o`.
                unsafe { *out.0.add(t * w.n_out + o) = dot };
            }
        }
    });
}
