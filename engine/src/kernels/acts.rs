//! Activations quantized once per input for the integer kernels: codes,
//! optional fine codes, and the per-sub-block scales and sums every kernel
//! reads.

use super::Scheme;
use crate::quant::DType;

/// A batch of activation rows quantized for one weight [`Scheme`].
///
/// Codes and scales are those of ggml's activation format for the weight type
/// (`quant::activation_type`), except that scales stay f32 instead of being
/// rounded to f16.
///
/// With *fine* codes (Precision::Fast) each activation carries a second byte:
/// `x ≈ d * (q + f / 256)`, where `f` is the rounding error of `q` in steps of
/// `d / 256`. Kernels then sum `256 * Σ u·q + Σ u·f` in one `i32` (it cannot
/// overflow: sub-blocks hold at most 32 elements, so the sum stays under
/// 2^29), reading each packed weight once for both bytes, and scale it by
/// `d / 256`. That keeps about 16 bits of every activation at twice the
/// integer work of one byte, and no second pass over the weights.
///
/// Per token `t` and weight sub-block `s`, for the integer sum
/// `c = Σ q` (or `256 * Σ q + Σ f` with fine codes): `da` the scale of one
/// unit of `c` (`d`, or `d / 256`), `sa = da * c` (for minimums) and
/// `corr = -zero * c` (the zero-point term, in integers).
pub struct QuantActs {
    pub scheme: Scheme,
    pub n_tok: usize,
    pub n_in: usize,
    /// `[n_tok, n_in]` codes.
    pub qs: Vec<i8>,
    /// `[n_tok, n_in]` fine codes, or empty (one byte per activation).
    pub fine: Vec<i8>,
    /// `[n_tok, n_sub]` each.
    pub da: Vec<f32>,
    pub sa: Vec<f32>,
    pub corr: Vec<i32>,
    /// `[n_tok, n_in]` 16-bit codes `256 q + f` (or `q` without fine codes),
    /// for kernels whose integer products are 16-bit ([`super::Kernels::wide_acts`]);
    /// empty otherwise.
    pub wide: Vec<i16>,
}

/// One token's share of a [`QuantActs`].
pub struct ActRowMut<'a> {
    pub qs: &'a mut [i8],
    /// Empty when the batch has no fine codes.
    pub fine: &'a mut [i8],
    pub da: &'a mut [f32],
    pub sa: &'a mut [f32],
    pub corr: &'a mut [i32],
}

impl QuantActs {
    /// All zero, ready to be filled row by row; `fine`: with fine codes.
    pub fn zeroed(scheme: Scheme, n_tok: usize, n_in: usize, fine: bool) -> QuantActs {
        assert_eq!(
            n_in % scheme.act_block,
            0,
            "n_in {n_in} is not a whole number of blocks"
        );
        let n_sub = n_in / scheme.sub_len;
        QuantActs {
            scheme,
            n_tok,
            n_in,
            qs: vec![0; n_tok * n_in],
            fine: if fine {
                vec![0; n_tok * n_in]
            } else {
                Vec::new()
            },
            da: vec![0.0; n_tok * n_sub],
            sa: vec![0.0; n_tok * n_sub],
            corr: vec![0; n_tok * n_sub],
            wide: Vec::new(),
        }
    }

    /// Fills [`QuantActs::wide`] from the codes: `256 q + f` is the value the
    /// byte kernels form from their two sums, as one 16-bit number (it cannot
    /// overflow: `q` is within ±127 and `f` within ±128).
    pub fn widen(&mut self) {
        self.wide = if self.has_fine() {
            self.qs
                .iter()
                .zip(&self.fine)
                .map(|(&q, &f)| 256 * q as i16 + f as i16)
                .collect()
        } else {
            self.qs.iter().map(|&q| q as i16).collect()
        };
    }

    pub fn n_sub(&self) -> usize {
        self.n_in / self.scheme.sub_len
    }

    /// Whether each activation carries a fine code.
    pub fn has_fine(&self) -> bool {
        !self.fine.is_empty()
    }

    /// Mutable views of each token's row.
    pub fn rows_mut(&mut self) -> impl Iterator<Item = ActRowMut<'_>> {
        let (n_in, n_sub) = (self.n_in, self.n_sub());
        let n_tok = self.n_tok;
        let fine_len = if self.fine.is_empty() { 0 } else { n_in };
        let mut fine = self.fine.as_mut_slice();
        let fines = (0..n_tok).map(move |_| {
            let (row, rest) = std::mem::take(&mut fine).split_at_mut(fine_len);
            fine = rest;
            row
        });
        self.qs
            .chunks_exact_mut(n_in)
            .zip(fines)
            .zip(self.da.chunks_exact_mut(n_sub))
            .zip(self.sa.chunks_exact_mut(n_sub))
            .zip(self.corr.chunks_exact_mut(n_sub))
            .map(|((((qs, fine), da), sa), corr)| ActRowMut {
                qs,
                fine,
                da,
                sa,
                corr,
            })
    }

    /// Fills the per-sub-block sums from the codes (and fine codes, if the
    /// row has them) and per-block scales `d[block]` (shared by the
    /// quantizers and the ggml-bytes importer).
    pub fn finish_row(scheme: &Scheme, row: &mut ActRowMut, d: impl Fn(usize) -> f32) {
        let per_block = scheme.act_block / scheme.sub_len;
        let fine = !row.fine.is_empty();
        for (s, q) in row.qs.chunks_exact(scheme.sub_len).enumerate() {
            let mut sum: i32 = q.iter().map(|&q| q as i32).sum();
            let mut ds = d(s / per_block);
            if fine {
                let f = &row.fine[s * scheme.sub_len..(s + 1) * scheme.sub_len];
                sum = 256 * sum + f.iter().map(|&f| f as i32).sum::<i32>();
                ds /= 256.0;
            }
            row.da[s] = ds;
            row.sa[s] = ds * sum as f32;
            row.corr[s] = -(scheme.zero as i32) * sum;
        }
    }

    /// Reads activations already quantized to ggml's activation format for
    /// `scheme.weight` (one row of `n_in` elements per token), so kernels can
    /// be checked against `quant::vec_dot_scalar` on identical inputs.
    pub fn from_ggml(scheme: Scheme, rows: &[&[u8]], n_in: usize) -> QuantActs {
        use crate::quant::{activation_type, blocks, BlockQ8K, BlockQ8_0, BlockQ8_1};
        let mut acts = QuantActs::zeroed(scheme, rows.len(), n_in, false);
        let fmt = activation_type(scheme.weight);
        for (bytes, mut row) in rows.iter().zip(acts.rows_mut()) {
            let mut d = Vec::new();
            let mut sums = Vec::new();
            match fmt {
                DType::Q8_0 => {
                    for (b, q) in blocks::<BlockQ8_0>(bytes, n_in).zip(row.qs.chunks_exact_mut(32))
                    {
                        q.copy_from_slice(&b.qs);
                        d.push(b.d.to_f32());
                    }
                }
                DType::Q8_1 => {
                    for (b, q) in blocks::<BlockQ8_1>(bytes, n_in).zip(row.qs.chunks_exact_mut(32))
                    {
                        q.copy_from_slice(&b.qs);
                        d.push(b.d.to_f32());
                        sums.push(b.s.to_f32());
                    }
                }
                DType::Q8_K => {
                    for (b, q) in blocks::<BlockQ8K>(bytes, n_in).zip(row.qs.chunks_exact_mut(256))
                    {
                        q.copy_from_slice(&b.qs);
                        d.push(b.d);
                    }
                }
                other => panic!("{other:?} is not an activation format"),
            }
            QuantActs::finish_row(&scheme, &mut row, |b| d[b]);
            // Q8_1 carries its own (f16) block sums: use them, as ggml does.
            if !sums.is_empty() {
                row.sa.copy_from_slice(&sums);
            }
        }
        acts
    }
}
