//! Causal attention of one head over its cached keys and values.
//!
//! Keys are stored transposed (`(head_dim, capacity)`), so the scores of one
//! query against all its keys are `head_dim` axpy sweeps over a contiguous
//! row: no horizontal sums, and the loop vectorises to the full SIMD width.
//! The body is written once ([`attend`]) and compiled per instruction set by
//! thin `#[target_feature]` wrappers chosen at run time, as the matmul
//! kernels are; on wasm32 and aarch64 the baseline (simd128, NEON) is used.

use std::sync::OnceLock;

/// One head's attention problem.
pub struct HeadAttention<'a> {
    /// Query rows, `q[i * q_stride ..][..head_dim]` for query `i`, rotated.
    pub q: &'a [f32],
    pub q_stride: usize,
    pub n_queries: usize,
    /// Position of the first query (queries are consecutive positions).
    pub first_pos: usize,
    pub head_dim: usize,
    /// `(head_dim, capacity)` keys, transposed.
    pub keys_t: &'a [f32],
    pub capacity: usize,
    /// `(capacity, head_dim)` values.
    pub values: &'a [f32],
    /// A query at `p` sees keys `p + 1 - window ..= p` (`None`: all of `0..=p`).
    pub window: Option<usize>,
    pub scale: f32,
}

type AttendFn = fn(&HeadAttention, &mut [f32], &mut Vec<f32>);

/// `out[i] = softmax(scale * q_i · K[lo..=p_i]) · V[lo..=p_i]`, `out` is
/// `(n_queries, head_dim)`; `scores` is reusable scratch.
pub fn attend_head(a: &HeadAttention, out: &mut [f32], scores: &mut Vec<f32>) {
    static BEST: OnceLock<AttendFn> = OnceLock::new();
    (BEST.get_or_init(select))(a, out, scores)
}

fn select() -> AttendFn {
    #[cfg(target_arch = "x86_64")]
    match super::float_simd() {
        super::FloatSimd::Avx512 => return x86::attend_avx512,
        super::FloatSimd::Avx2 => return x86::attend_avx2,
        super::FloatSimd::Baseline => {}
    }
    attend_baseline
}

fn attend_baseline(a: &HeadAttention, out: &mut [f32], scores: &mut Vec<f32>) {
    attend(a, out, scores)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{attend, HeadAttention};

    #[target_feature(enable = "avx512f,avx512vl,fma")]
    unsafe fn avx512(a: &HeadAttention, out: &mut [f32], scores: &mut Vec<f32>) {
        attend(a, out, scores)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(a: &HeadAttention, out: &mut [f32], scores: &mut Vec<f32>) {
        attend(a, out, scores)
    }

    pub fn attend_avx512(a: &HeadAttention, out: &mut [f32], scores: &mut Vec<f32>) {
        // SAFETY: chosen only after `is_x86_feature_detected!` saw AVX-512F and FMA.
        unsafe { avx512(a, out, scores) }
    }

    pub fn attend_avx2(a: &HeadAttention, out: &mut [f32], scores: &mut Vec<f32>) {
        // SAFETY: chosen only after `is_x86_feature_detected!` saw AVX2 and FMA.
        unsafe { avx2(a, out, scores) }
    }
}

/// The one implementation; inlined into each ISA wrapper so the compiler
/// vectorises it for that ISA. The inner loops run over fixed-size blocks
/// (`[f32; W]` accumulators) so they stay in registers.
#[inline(always)]
fn attend(a: &HeadAttention, out: &mut [f32], scores: &mut Vec<f32>) {
    let hd = a.head_dim;
    let last = a.first_pos + a.n_queries;
    if scores.len() < last {
        scores.resize(last, 0.0);
    }
    for i in 0..a.n_queries {
        let pos = a.first_pos + i;
        let lo = a.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let n = pos + 1 - lo;
        let q = &a.q[i * a.q_stride..i * a.q_stride + hd];

        // Scores: blocks of 64 keys, then 16, then single keys.
        let mut j = 0;
        while j + 64 <= n {
            scores_block::<64>(a, q, lo + j, &mut scores[j..j + 64]);
            j += 64;
        }
        while j + 16 <= n {
            scores_block::<16>(a, q, lo + j, &mut scores[j..j + 16]);
            j += 16;
        }
        while j < n {
            scores_block::<1>(a, q, lo + j, &mut scores[j..j + 1]);
            j += 1;
        }
        let s = &mut scores[..n];
        let max = max_of(s);
        for x in s.iter_mut() {
            *x = exp(*x - max);
        }
        let inv = 1.0 / sum_of(s);

        // Weighted values: blocks of 64 dimensions, then 16, then single ones.
        let o = &mut out[i * hd..(i + 1) * hd];
        let mut d = 0;
        while d + 64 <= hd {
            values_block::<64>(a, s, lo, d, inv, &mut o[d..d + 64]);
            d += 64;
        }
        while d + 16 <= hd {
            values_block::<16>(a, s, lo, d, inv, &mut o[d..d + 16]);
            d += 16;
        }
        while d < hd {
            values_block::<1>(a, s, lo, d, inv, &mut o[d..d + 1]);
            d += 1;
        }
    }
}

/// `out[j] = scale * q · K[first + j]` for `W` consecutive keys.
#[inline(always)]
fn scores_block<const W: usize>(a: &HeadAttention, q: &[f32], first: usize, out: &mut [f32]) {
    let mut acc = [0f32; W];
    for (d, &qd) in q.iter().enumerate() {
        let start = d * a.capacity + first;
        let row: &[f32; W] = a.keys_t[start..start + W].try_into().expect("W keys");
        let qd = qd * a.scale;
        for l in 0..W {
            acc[l] += qd * row[l];
        }
    }
    out.copy_from_slice(&acc);
}

/// `out[l] = inv * sum_j p[j] * V[lo + j][d0 + l]` for `W` consecutive dimensions.
#[inline(always)]
fn values_block<const W: usize>(
    a: &HeadAttention,
    p: &[f32],
    lo: usize,
    d0: usize,
    inv: f32,
    out: &mut [f32],
) {
    let hd = a.head_dim;
    let mut acc = [0f32; W];
    for (j, &pj) in p.iter().enumerate() {
        let start = (lo + j) * hd + d0;
        let v: &[f32; W] = a.values[start..start + W].try_into().expect("W dims");
        for l in 0..W {
            acc[l] += pj * v[l];
        }
    }
    for (o, x) in out.iter_mut().zip(acc) {
        *o = x * inv;
    }
}

/// Sum with 16 independent lanes (a single running sum would not vectorise).
#[inline(always)]
fn sum_of(s: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = s.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Maximum with 16 independent lanes (a single running max would not vectorise).
#[inline(always)]
fn max_of(s: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let chunks = s.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    let mut best = rest
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for v in m {
        if v > best {
            best = v;
        }
    }
    best
}

/// e^x for x <= 0 (softmax arguments), branch-free so it vectorises: 2^n ·
/// p(r) with x = n ln2 + r, |r| <= ln2/2, p a degree-6 Taylor polynomial
/// (relative error below 5e-7, a few f32 ulp). `n` is rounded with the
/// 1.5·2^23 trick, which keeps it in integer-free float arithmetic.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.max(-87.0);
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    // ln 2 split in two so n * ln2 is exact in f32.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // t's low mantissa bits hold n (two's complement): shift it into the exponent.
    let n_bits = t.to_bits().wrapping_sub(SHIFT.to_bits());
    f32::from_bits(n_bits.wrapping_add(127).wrapping_shl(23)) * p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_on_softmax_range() {
        let mut worst = 0f64;
        for i in 0..200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let ours = exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((ours - want) / want).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
    }

    /// Every ISA against a plain f64 computation, with and without a window.
    #[test]
    fn attention_matches_f64() {
        let (hd, cap) = (16, 40);
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let keys: Vec<f32> = (0..cap * hd).map(|_| rnd()).collect(); // (pos, hd)
        let values: Vec<f32> = (0..cap * hd).map(|_| rnd()).collect();
        let q: Vec<f32> = (0..cap * hd).map(|_| rnd() * 3.0).collect();
        let mut keys_t = vec![0f32; hd * cap];
        for p in 0..cap {
            for d in 0..hd {
                keys_t[d * cap + p] = keys[p * hd + d];
            }
        }
        let mut fns: Vec<AttendFn> = vec![attend_baseline];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                fns.push(x86::attend_avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                fns.push(x86::attend_avx2);
            }
        }
        for window in [None, Some(5)] {
            let (first, n_q) = (3, cap - 3);
            let a = HeadAttention {
                q: &q[first * hd..],
                q_stride: hd,
                n_queries: n_q,
                first_pos: first,
                head_dim: hd,
                keys_t: &keys_t,
                capacity: cap,
                values: &values,
                window,
                scale: 0.25,
            };
            for f in &fns {
                let mut out = vec![0f32; n_q * hd];
                f(&a, &mut out, &mut Vec::new());
                for i in 0..n_q {
                    let pos = first + i;
                    let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                    let s: Vec<f64> = (lo..=pos)
                        .map(|j| {
                            (0..hd)
                                .map(|d| q[pos * hd + d] as f64 * keys[j * hd + d] as f64)
                                .sum::<f64>()
                                * 0.25
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                    for d in 0..hd {
                        let want: f64 = s
                            .iter()
                            .enumerate()
                            .map(|(j, v)| (v - m).exp() / z * values[(lo + j) * hd + d] as f64)
                            .sum();
                        let got = out[i * hd + d] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "window {window:?} query {i} dim {d}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
