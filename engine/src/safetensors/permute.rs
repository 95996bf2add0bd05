//! Q/K row permutation between HF and GGUF.
//!
//! HF weights keep their rows as HF stores them, so RoPE pairs dimensions
//! `(i, i + head_dim/2)`; llama.cpp's converter permutes the Q/K rows of a
//! GGUF so that pairs are adjacent.

/// The row of the HF matrix that GGUF row `r` holds.
///
/// llama.cpp's converter reshapes each head's `head_dim` rows as
/// `[2, head_dim/2]` and swaps the axes, so GGUF row `2i + j` of a head is HF
/// row `j * head_dim/2 + i`: the HF rotate-half pair `(i, i + head_dim/2)`
/// becomes the adjacent pair `(2i, 2i + 1)`.
fn hf_row_of_gguf_row(r: usize, head_dim: usize) -> usize {
    let (head, within) = (r / head_dim, r % head_dim);
    let (i, j) = (within / 2, within % 2);
    head * head_dim + j * (head_dim / 2) + i
}

// `usize::is_multiple_of` needs Rust 1.87; the workspace's rust-version is 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn check_qk_args(rows: &[f32], n_heads: usize, head_dim: usize, n_in: usize) {
    assert!(
        head_dim % 2 == 0,
        "Q/K permutation: head_dim {head_dim} is odd"
    );
    assert_eq!(
        rows.len(),
        n_heads * head_dim * n_in,
        "Q/K permutation: {} values for {n_heads} heads x {head_dim} rows x {n_in} columns",
        rows.len()
    );
}

/// GGUF -> HF: undoes llama.cpp's `permute(w, n_head, n_head_kv)` on a Q or K
/// weight of `n_heads * head_dim` rows of `n_in` values (pass the KV head
/// count for K). Panics if the lengths disagree or `head_dim` is odd.
pub fn unpermute_qk(rows: &[f32], n_heads: usize, head_dim: usize, n_in: usize) -> Vec<f32> {
    check_qk_args(rows, n_heads, head_dim, n_in);
    let mut out = vec![0.0; rows.len()];
    for (r, src) in rows.chunks_exact(n_in).enumerate() {
        let dst = hf_row_of_gguf_row(r, head_dim);
        out[dst * n_in..(dst + 1) * n_in].copy_from_slice(src);
    }
    out
}

/// HF -> GGUF: llama.cpp's `permute(w, n_head, n_head_kv)`, the inverse of
/// [`unpermute_qk`]. Panics if the lengths disagree or `head_dim` is odd.
pub fn permute_qk(rows: &[f32], n_heads: usize, head_dim: usize, n_in: usize) -> Vec<f32> {
    check_qk_args(rows, n_heads, head_dim, n_in);
    let mut out = vec![0.0; rows.len()];
    for (r, dst) in out.chunks_exact_mut(n_in).enumerate() {
        let src = hf_row_of_gguf_row(r, head_dim);
        dst.copy_from_slice(&rows[src * n_in..(src + 1) * n_in]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The python definition, row by row: with head_dim 4 a head's HF rows
    /// [a0, a1, b0, b1] (rotate-half pairs (a0, b0), (a1, b1)) are reshaped to
    /// [[a0, a1], [b0, b1]], swapped to [[a0, b0], [a1, b1]] and flattened.
    #[test]
    fn permute_qk_matches_llama_cpp() {
        let (n_heads, head_dim, n_in) = (2, 4, 3);
        let hf: Vec<f32> = (0..n_heads * head_dim * n_in).map(|x| x as f32).collect();
        let gguf = permute_qk(&hf, n_heads, head_dim, n_in);
        // GGUF row r holds HF row expected[r].
        let expected = [0, 2, 1, 3, 4, 6, 5, 7];
        for (r, &src) in expected.iter().enumerate() {
            assert_eq!(
                gguf[r * n_in..(r + 1) * n_in],
                hf[src * n_in..(src + 1) * n_in],
                "row {r}"
            );
        }
        // head_dim 6: [a0 a1 a2 b0 b1 b2] -> [a0 b0 a1 b1 a2 b2].
        let hf: Vec<f32> = (0..6).map(|x| x as f32).collect();
        assert_eq!(permute_qk(&hf, 1, 6, 1), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(unpermute_qk(&[0.0, 3.0, 1.0, 4.0, 2.0, 5.0], 1, 6, 1), hf);
    }

    #[test]
    fn permute_qk_and_unpermute_qk_invert_each_other() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (n_heads, head_dim, n_in) in [(1, 2, 1), (3, 8, 5), (2, 64, 3)] {
            let w: Vec<f32> = (0..n_heads * head_dim * n_in)
                .map(|_| rng.random())
                .collect();
            let p = permute_qk(&w, n_heads, head_dim, n_in);
            // With head_dim 2 each head's single pair is already adjacent.
            assert_eq!(p == w, head_dim == 2);
            assert_eq!(unpermute_qk(&p, n_heads, head_dim, n_in), w);
            assert_eq!(
                permute_qk(
                    &unpermute_qk(&w, n_heads, head_dim, n_in),
                    n_heads,
                    head_dim,
                    n_in
                ),
                w
            );
        }
    }

    /// Why the permutation is enough: attention scores with GGUF rows and
    /// interleaved RoPE equal those with HF rows and rotate-half RoPE.
    #[test]
    fn unpermuted_weights_with_halves_rope_match_interleaved() {
        let (n_heads, head_dim, n_in) = (2, 8, 5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut rand_vec =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let wq_gguf = rand_vec(n_heads * head_dim * n_in);
        let wk_gguf = rand_vec(n_heads * head_dim * n_in);
        let (x1, x2) = (rand_vec(n_in), rand_vec(n_in));
        let wq_hf = unpermute_qk(&wq_gguf, n_heads, head_dim, n_in);
        let wk_hf = unpermute_qk(&wk_gguf, n_heads, head_dim, n_in);

        let matvec = |w: &[f32], x: &[f32]| -> Vec<f64> {
            w.chunks_exact(n_in)
                .map(|row| row.iter().zip(x).map(|(a, b)| (a * b) as f64).sum())
                .collect()
        };
        let rope = |v: &mut [f64], pos: f64, interleaved: bool| {
            for head in v.chunks_exact_mut(head_dim) {
                for i in 0..head_dim / 2 {
                    let theta = pos / 10000f64.powf(2.0 * i as f64 / head_dim as f64);
                    let (a, b) = if interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + head_dim / 2)
                    };
                    let (c, s) = (theta.cos(), theta.sin());
                    let (x, y) = (head[a], head[b]);
                    head[a] = x * c - y * s;
                    head[b] = x * s + y * c;
                }
            }
        };
        let scores = |wq: &[f32], wk: &[f32], interleaved: bool| -> Vec<f64> {
            let mut q = matvec(wq, &x1);
            let mut k = matvec(wk, &x2);
            rope(&mut q, 5.0, interleaved);
            rope(&mut k, 2.0, interleaved);
            q.chunks_exact(head_dim)
                .zip(k.chunks_exact(head_dim))
                .map(|(q, k)| q.iter().zip(k).map(|(a, b)| a * b).sum())
                .collect()
        };
        let gguf = scores(&wq_gguf, &wk_gguf, true);
        let hf = scores(&wq_hf, &wk_hf, false);
        for (a, b) in gguf.iter().zip(&hf) {
            assert!((a - b).abs() < 1e-9, "{gguf:?} vs {hf:?}");
        }
    }
}
