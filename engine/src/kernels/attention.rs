//! Causal attention of one head over its cached keys and values.
//!
//! Keys are stored transposed (`(head_dim, capacity)`), so the scores of one
//! query against all its keys are `head_dim` axpy sweeps over a contiguous
//! row: no horizontal sums, and the loop vectorises to the full SIMD width.
//! The body is written once ([`attend`]) and compiled per instruction set by
//! thin `#[target_feature]` wrappers chosen at run time, as the matmul
//! kernels are; on wasm32 and aarch64 the baseline (simd128, NEON) is used.
//! Its two inner loops sit behind a small trait ([`Blocks`]): portable code
//! the compiler vectorises, one query at a time, and on AVX-512 and AVX2
//! explicit code for eight queries at a time, where each key or value vector
//! loaded feeds several fused multiply-adds (eight on AVX-512; four on AVX2,
//! whose 16 registers hold 4 queries x 16 keys of accumulators).

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
    // aarch64 always has fused multiply-add; wasm32 has none (it would be a
    // libm call per element).
    const FMA: bool = cfg!(target_arch = "aarch64");
    attend::<1, FMA, Portable<FMA>>(a, out, scores)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{attend, Blocks, HeadAttention, KW};

    /// Eight queries at a time: each key or value vector loaded feeds eight
    /// fused multiply-adds into eight independent accumulators.
    struct Avx512;

    impl Blocks<8> for Avx512 {
        #[inline(always)]
        fn scores(a: &HeadAttention, q_t: &[f32], key0: usize, s: &mut [f32], n: usize, j: usize) {
            // SAFETY: only reached from `avx512` below.
            unsafe { scores_avx512(a, q_t, key0, s, n, j) }
        }

        #[inline(always)]
        fn values(a: &HeadAttention, p: &[f32], n: usize, lo: usize, d0: usize, out: &mut [f32]) {
            // SAFETY: only reached from `avx512` below.
            unsafe { values_avx512(a, p, n, lo, d0, out) }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    fn scores_avx512(
        a: &HeadAttention,
        q_t: &[f32],
        key0: usize,
        s: &mut [f32],
        n: usize,
        j: usize,
    ) {
        let (hd, cap) = (a.head_dim, a.capacity);
        assert!(hd > 0 && key0 + KW <= cap && a.keys_t.len() >= hd * cap);
        assert!(q_t.len() >= 8 * hd && s.len() >= 7 * n + j + KW);
        let mut acc = [_mm512_setzero_ps(); 8];
        // SAFETY: the asserts bound every read (keys `d * cap + key0 .. + KW`
        // for d < hd, queries `d * 8 + qi`) and write (`qi * n + j .. + KW`).
        unsafe {
            let (kp, qp) = (a.keys_t.as_ptr().add(key0), q_t.as_ptr());
            for d in 0..hd {
                let k = _mm512_loadu_ps(kp.add(d * cap));
                for (qi, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*qp.add(d * 8 + qi)), k, *acc);
                }
            }
            for (qi, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(s.as_mut_ptr().add(qi * n + j), *acc);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    fn values_avx512(
        a: &HeadAttention,
        p: &[f32],
        n: usize,
        lo: usize,
        d0: usize,
        out: &mut [f32],
    ) {
        let hd = a.head_dim;
        assert!(n > 0 && (lo + n - 1) * hd + d0 + KW <= a.values.len());
        assert!(p.len() >= 8 * n && out.len() >= 7 * hd + d0 + KW);
        let mut acc = [_mm512_setzero_ps(); 8];
        // SAFETY: the asserts bound every read (values `(lo + j) * hd + d0 ..
        // + KW` for j < n, weights `qi * n + j`) and write (`qi * hd + d0 ..`).
        unsafe {
            let (vp, pp) = (a.values.as_ptr().add(lo * hd + d0), p.as_ptr());
            for j in 0..n {
                let v = _mm512_loadu_ps(vp.add(j * hd));
                for (qi, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*pp.add(qi * n + j)), v, *acc);
                }
            }
            for (qi, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(qi * hd + d0), *acc);
            }
        }
    }

    /// Eight queries at a time in two halves of four: a half's 4 queries x
    /// 16 keys (or value dimensions) are 8 ymm accumulators, 8 independent
    /// FMA chains, and each pair of key or value vectors loaded feeds 8 FMAs.
    struct Avx2;

    impl Blocks<8> for Avx2 {
        #[inline(always)]
        fn scores(a: &HeadAttention, q_t: &[f32], key0: usize, s: &mut [f32], n: usize, j: usize) {
            // SAFETY: only reached from `avx2` below.
            unsafe { scores_avx2(a, q_t, key0, s, n, j) }
        }

        #[inline(always)]
        fn values(a: &HeadAttention, p: &[f32], n: usize, lo: usize, d0: usize, out: &mut [f32]) {
            // SAFETY: only reached from `avx2` below.
            unsafe { values_avx2(a, p, n, lo, d0, out) }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn scores_avx2(a: &HeadAttention, q_t: &[f32], key0: usize, s: &mut [f32], n: usize, j: usize) {
        let (hd, cap) = (a.head_dim, a.capacity);
        assert!(hd > 0 && key0 + KW <= cap && a.keys_t.len() >= hd * cap);
        assert!(q_t.len() >= 8 * hd && s.len() >= 7 * n + j + KW);
        // SAFETY: the asserts bound every read (keys `d * cap + key0 .. + KW`
        // for d < hd, queries `d * 8 + qi`) and write (`qi * n + j .. + KW`).
        unsafe {
            let (kp, qp) = (a.keys_t.as_ptr().add(key0), q_t.as_ptr());
            for half in [0, 4] {
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for d in 0..hd {
                    let k = [
                        _mm256_loadu_ps(kp.add(d * cap)),
                        _mm256_loadu_ps(kp.add(d * cap + 8)),
                    ];
                    for (qi, acc) in acc.iter_mut().enumerate() {
                        let q = _mm256_broadcast_ss(&*qp.add(d * 8 + half + qi));
                        acc[0] = _mm256_fmadd_ps(q, k[0], acc[0]);
                        acc[1] = _mm256_fmadd_ps(q, k[1], acc[1]);
                    }
                }
                for (qi, acc) in acc.iter().enumerate() {
                    let at = s.as_mut_ptr().add((half + qi) * n + j);
                    _mm256_storeu_ps(at, acc[0]);
                    _mm256_storeu_ps(at.add(8), acc[1]);
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn values_avx2(a: &HeadAttention, p: &[f32], n: usize, lo: usize, d0: usize, out: &mut [f32]) {
        let hd = a.head_dim;
        assert!(n > 0 && (lo + n - 1) * hd + d0 + KW <= a.values.len());
        assert!(p.len() >= 8 * n && out.len() >= 7 * hd + d0 + KW);
        // SAFETY: the asserts bound every read (values `(lo + j) * hd + d0 ..
        // + KW` for j < n, weights `qi * n + j`) and write (`qi * hd + d0 ..`).
        unsafe {
            let (vp, pp) = (a.values.as_ptr().add(lo * hd + d0), p.as_ptr());
            for half in [0, 4] {
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for j in 0..n {
                    let v = [
                        _mm256_loadu_ps(vp.add(j * hd)),
                        _mm256_loadu_ps(vp.add(j * hd + 8)),
                    ];
                    for (qi, acc) in acc.iter_mut().enumerate() {
                        let w = _mm256_broadcast_ss(&*pp.add((half + qi) * n + j));
                        acc[0] = _mm256_fmadd_ps(w, v[0], acc[0]);
                        acc[1] = _mm256_fmadd_ps(w, v[1], acc[1]);
                    }
                }
                for (qi, acc) in acc.iter().enumerate() {
                    let at = out.as_mut_ptr().add((half + qi) * hd + d0);
                    _mm256_storeu_ps(at, acc[0]);
                    _mm256_storeu_ps(at.add(8), acc[1]);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512vl,fma")]
    unsafe fn avx512(a: &HeadAttention, out: &mut [f32], scores: &mut Vec<f32>) {
        attend::<8, true, Avx512>(a, out, scores)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(a: &HeadAttention, out: &mut [f32], scores: &mut Vec<f32>) {
        attend::<8, true, Avx2>(a, out, scores)
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

/// The inner loops over whole blocks of [`KW`] keys (scores) or [`KW`] value
/// dimensions, for `Q` queries at once; per-ISA where the compiler's own
/// vectorisation falls short. Layouts as in [`attend_block`].
trait Blocks<const Q: usize> {
    /// `s[qi * n + j + l] = q_qi · K[key0 + l]` for `l < KW`.
    fn scores(a: &HeadAttention, q_t: &[f32], key0: usize, s: &mut [f32], n: usize, j: usize);
    /// `out[qi * hd + d0 + l] = sum_j p[qi * n + j] * V[lo + j][d0 + l]` for `l < KW`.
    fn values(a: &HeadAttention, p: &[f32], n: usize, lo: usize, d0: usize, out: &mut [f32]);
}

/// The portable blocks: plain loops the compiler vectorises (one query at a
/// time keeps it vectorising over keys and dimensions).
struct Portable<const FMA: bool>;

impl<const Q: usize, const FMA: bool> Blocks<Q> for Portable<FMA> {
    #[inline(always)]
    fn scores(a: &HeadAttention, q_t: &[f32], key0: usize, s: &mut [f32], n: usize, j: usize) {
        scores_block::<Q, KW, FMA>(a, q_t, key0, s, n, j)
    }

    #[inline(always)]
    fn values(a: &HeadAttention, p: &[f32], n: usize, lo: usize, d0: usize, out: &mut [f32]) {
        values_block::<Q, KW, FMA>(a, p, n, lo, d0, out)
    }
}

/// Keys (and value dimensions) per block: one 512-bit register of f32.
const KW: usize = 16;

/// The one implementation; inlined into each ISA wrapper so the compiler
/// vectorises it for that ISA. `Q` consecutive queries are done together so
/// each key and value loaded serves all of them (a one-query loop is bound
/// by loads, not arithmetic); the inner loops run over fixed-size blocks
/// (`[[f32; W]; Q]` accumulators) so they stay in registers. `FMA`: fused
/// multiply-adds (one rounding) where the ISA has them.
#[inline(always)]
fn attend<const Q: usize, const FMA: bool, B: Blocks<Q>>(
    a: &HeadAttention,
    out: &mut [f32],
    scores: &mut Vec<f32>,
) {
    let mut i0 = 0;
    while i0 + Q <= a.n_queries {
        attend_block::<Q, FMA, B>(a, i0, out, scores);
        i0 += Q;
    }
    while i0 < a.n_queries {
        attend_block::<1, FMA, Portable<FMA>>(a, i0, out, scores);
        i0 += 1;
    }
}

/// `acc + x * y`, fused or not.
#[inline(always)]
fn mul_add<const FMA: bool>(acc: f32, x: f32, y: f32) -> f32 {
    if FMA {
        x.mul_add(y, acc)
    } else {
        acc + x * y
    }
}

/// First key a query at `pos` sees.
#[inline(always)]
fn first_key(a: &HeadAttention, pos: usize) -> usize {
    a.window.map_or(0, |w| (pos + 1).saturating_sub(w))
}

/// Queries `i0..i0 + Q`: scores against the union of their key ranges, each
/// query's softmax over its own range (zero elsewhere), then the weighted
/// values.
#[inline(always)]
fn attend_block<const Q: usize, const FMA: bool, B: Blocks<Q>>(
    a: &HeadAttention,
    i0: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let hd = a.head_dim;
    let first = a.first_pos + i0;
    let lo = first_key(a, first);
    // Keys lo..=first + Q - 1.
    let n = first + Q - lo;
    if scratch.len() < Q * n + Q * hd {
        scratch.resize(Q * n + Q * hd, 0.0);
    }
    // `s`: row `qi` holds query i0 + qi's scores, then its probabilities;
    // `q_t`: the scaled queries, transposed (`(hd, Q)`: what the score loop
    // broadcasts, Q in a row).
    let (s, rest) = scratch.split_at_mut(Q * n);
    let q_t = &mut rest[..Q * hd];
    for qi in 0..Q {
        let q = &a.q[(i0 + qi) * a.q_stride..][..hd];
        for (d, &x) in q.iter().enumerate() {
            q_t[d * Q + qi] = x * a.scale;
        }
    }

    let mut j = 0;
    while j + KW <= n {
        B::scores(a, q_t, lo + j, s, n, j);
        j += KW;
    }
    while j < n {
        scores_block::<Q, 1, FMA>(a, q_t, lo + j, s, n, j);
        j += 1;
    }

    for qi in 0..Q {
        let pos = first + qi;
        let (from, to) = (first_key(a, pos) - lo, pos + 1 - lo);
        let row = &mut s[qi * n..(qi + 1) * n];
        let mine = &mut row[from..to];
        let max = max_of(mine);
        for x in mine.iter_mut() {
            *x = exp(*x - max);
        }
        let inv = 1.0 / sum_of(mine);
        // Normalised here, before the values (n multiplies instead of hd).
        for x in mine.iter_mut() {
            *x *= inv;
        }
        row[..from].fill(0.0);
        row[to..].fill(0.0);
    }

    let mut d = 0;
    while d + KW <= hd {
        B::values(a, s, n, lo, d, &mut out[i0 * hd..]);
        d += KW;
    }
    while d < hd {
        values_block::<Q, 1, FMA>(a, s, n, lo, d, &mut out[i0 * hd..]);
        d += 1;
    }
}

/// `s[qi * n + j + l] = q_qi · K[key0 + l]` for `W` consecutive keys;
/// `q_t` holds the scaled queries transposed, `(hd, Q)`.
#[inline(always)]
fn scores_block<const Q: usize, const W: usize, const FMA: bool>(
    a: &HeadAttention,
    q_t: &[f32],
    key0: usize,
    s: &mut [f32],
    n: usize,
    j: usize,
) {
    let mut acc = [[0f32; W]; Q];
    for d in 0..a.head_dim {
        let start = d * a.capacity + key0;
        let row: &[f32; W] = a.keys_t[start..start + W].try_into().expect("W keys");
        let qd: &[f32; Q] = q_t[d * Q..(d + 1) * Q].try_into().expect("Q queries");
        for (acc, &qd) in acc.iter_mut().zip(qd) {
            for l in 0..W {
                acc[l] = mul_add::<FMA>(acc[l], qd, row[l]);
            }
        }
    }
    for (qi, acc) in acc.iter().enumerate() {
        s[qi * n + j..qi * n + j + W].copy_from_slice(acc);
    }
}

/// `out[qi * hd + d0 + l] = sum_j p[qi * n + j] * V[lo + j][d0 + l]` for `W`
/// consecutive dimensions.
#[inline(always)]
fn values_block<const Q: usize, const W: usize, const FMA: bool>(
    a: &HeadAttention,
    p: &[f32],
    n: usize,
    lo: usize,
    d0: usize,
    out: &mut [f32],
) {
    let hd = a.head_dim;
    let mut acc = [[0f32; W]; Q];
    for j in 0..n {
        let start = (lo + j) * hd + d0;
        let v: &[f32; W] = a.values[start..start + W].try_into().expect("W dims");
        for (qi, acc) in acc.iter_mut().enumerate() {
            let pj = p[qi * n + j];
            for l in 0..W {
                acc[l] = mul_add::<FMA>(acc[l], pj, v[l]);
            }
        }
    }
    for (qi, acc) in acc.iter().enumerate() {
        out[qi * hd + d0..qi * hd + d0 + W].copy_from_slice(acc);
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
pub(super) fn max_of(s: &[f32]) -> f32 {
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

    /// Every ISA against a plain f64 computation, with and without a window;
    /// sizes that leave remainders of query, key and dimension blocks.
    #[test]
    fn attention_matches_f64() {
        for (hd, cap) in [(16, 40), (72, 101)] {
            attention_matches_f64_at(hd, cap);
        }
    }

    fn attention_matches_f64_at(hd: usize, cap: usize) {
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
        #[allow(unused_mut)] // Only x86_64 adds kernels of its own.
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
        for window in [None, Some(5), Some(30)] {
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
                            "hd {hd} window {window:?} query {i} dim {d}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
