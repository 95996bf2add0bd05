//! Rotary position embedding of query or key rows by precomputed cos/sin
//! tables, written once as plain loops (one per pair layout, so each
//! vectorises) and compiled per instruction set ([`float_simd_fn!`]). The
//! arithmetic is the textbook rotation with separate multiplies and adds, so
//! every ISA computes the same bits.

use crate::config::RopeStyle;

float_simd_fn! {
    /// Rotates `x` (`(T, n_heads * hd)`) in place; `cos` and `sin` are
    /// `(T, hd / 2)`: row `t` rotates by row `t` of the tables.
    pub fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], n_heads: usize, hd: usize, style: RopeStyle) = rotate_body;
}

#[inline(always)]
fn rotate_body(
    x: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    n_heads: usize,
    hd: usize,
    style: RopeStyle,
) {
    let half = hd / 2;
    let width = n_heads * hd;
    assert!(
        hd > 0 && hd.is_multiple_of(2),
        "rope: head_dim {hd} is not even"
    );
    assert!(
        x.len().is_multiple_of(width),
        "rope: x is not whole rows of {width}"
    );
    let n_tok = x.len() / width;
    assert!(
        cos.len() >= n_tok * half && sin.len() >= n_tok * half,
        "rope: short tables"
    );
    for (t, row) in x.chunks_exact_mut(width).enumerate() {
        let (cos, sin) = (&cos[t * half..][..half], &sin[t * half..][..half]);
        for head in row.chunks_exact_mut(hd) {
            match style {
                RopeStyle::Interleaved => {
                    for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                        let (x0, x1) = (pair[0], pair[1]);
                        pair[0] = x0 * c - x1 * s;
                        pair[1] = x0 * s + x1 * c;
                    }
                }
                RopeStyle::Halves => {
                    let (a, b) = head.split_at_mut(half);
                    for (((a, b), &c), &s) in a.iter_mut().zip(b).zip(cos).zip(sin) {
                        let (x0, x1) = (*a, *b);
                        *a = x0 * c - x1 * s;
                        *b = x0 * s + x1 * c;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rotation as written in the papers, pair by pair: the oracle.
    fn reference(
        x: &mut [f32],
        cos: &[f32],
        sin: &[f32],
        n_heads: usize,
        hd: usize,
        style: RopeStyle,
    ) {
        let half = hd / 2;
        for (t, row) in x.chunks_exact_mut(n_heads * hd).enumerate() {
            for head in row.chunks_exact_mut(hd) {
                for i in 0..half {
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Halves => (i, i + half),
                    };
                    let (c, s) = (cos[t * half + i], sin[t * half + i]);
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c - x1 * s;
                    head[b] = x0 * s + x1 * c;
                }
            }
        }
    }

    /// Head dims whose halves leave remainders past every vector width.
    #[test]
    fn matches_the_pairwise_rotation_bit_for_bit() {
        for (n_heads, hd) in [(3, 2), (2, 46), (3, 64), (1, 130)] {
            let n_tok = 5;
            let half = hd / 2;
            let x: Vec<f32> = (0..n_tok * n_heads * hd)
                .map(|i| ((i * 7919) % 1009) as f32 * 0.01 - 5.0)
                .collect();
            let angle = |i: usize| (i * 37 % 101) as f64 * 0.07;
            let cos: Vec<f32> = (0..n_tok * half).map(|i| angle(i).cos() as f32).collect();
            let sin: Vec<f32> = (0..n_tok * half).map(|i| angle(i).sin() as f32).collect();
            for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
                let (mut got, mut want) = (x.clone(), x.clone());
                rotate(&mut got, &cos, &sin, n_heads, hd, style);
                reference(&mut want, &cos, &sin, n_heads, hd, style);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{style:?} hd {hd} element {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
