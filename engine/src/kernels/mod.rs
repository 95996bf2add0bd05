//! Matmul micro-kernels, one file per instruction set, chosen once at run time.
//!
//! A matmul `y[t, o] = sum_i w[o, i] * x[t, i]` is cut into *tiles* of
//! `tile_rows` weight rows. Every kernel keeps one SIMD lane per weight row, so
//! a tile's result for one token is one contiguous vector store into `y` and no
//! horizontal sums are needed. Per tile, a kernel
//!
//! 1. *packs* the rows into thread-local scratch: for quantized weights the
//!    codes become unsigned bytes interleaved four at a time across rows
//!    ([`PackedQ`]); for [`crate::matmul::Precision::Exact`] the rows become f32,
//!    transposed ([`PackedF`]);
//! 2. sweeps *every* token of the batch over the packed tile, several tokens at
//!    a time, so each weight byte is read from memory once per matmul.
//!
//! Quantized weights meet activations quantized once per input, however many
//! matmuls read it ([`crate::matmul::QuantizedInput`]), to 8 bits
//! ([`QuantActs`], the same codes and scales as ggml's Q8_0 / Q8_1 / Q8_K with
//! the scales kept in f32), with or without a second, *fine* byte for the
//! rounding error of the first, then integer dot products per sub-block
//! scaled in f32. Float weights get 8-bit codes as they are packed
//! ([`Scheme::for_integer_dots`]). Every weight format reduces to one shape
//! (a [`Scheme`]):
//! `w = dw * (u - zero) + mw` per sub-block of `sub_len` elements, with `u` an
//! unsigned byte. The zero point enters as `-zero * sum(a)`, precomputed per
//! activation sub-block, which lets x86 use its unsigned-by-signed byte
//! products (`vpdpbusd`, `vpmaddubsw`) on every format.
//!
//! [`scalar`] is the reference; every SIMD kernel is tested against it, and it
//! is tested against `quant::vec_dot_scalar`.

use std::sync::OnceLock;

use crate::quant::DType;

/// Calls `$tile::<NT, ...>(.., t0, ..)` over all tokens, `$nt` at a time and
/// the remainder with a smaller `NT`, so every tile is fully unrolled.
#[allow(unused_macros)] // Not every target has SIMD kernels.
macro_rules! sweep_tokens {
    ($n_tok:expr, $nt:literal, |$t0:ident, $k:ident| $call:expr) => {{
        let n_tok = $n_tok;
        let mut $t0 = 0;
        while $t0 + $nt <= n_tok {
            {
                const $k: usize = $nt;
                $call;
            }
            $t0 += $nt;
        }
        match n_tok - $t0 {
            0 => {}
            1 => {
                const $k: usize = 1;
                $call
            }
            2 => {
                const $k: usize = 2;
                $call
            }
            3 => {
                const $k: usize = 3;
                $call
            }
            4 => {
                const $k: usize = 4;
                $call
            }
            5 => {
                const $k: usize = 5;
                $call
            }
            6 => {
                const $k: usize = 6;
                $call
            }
            7 => {
                const $k: usize = 7;
                $call
            }
            r => unreachable!("remainder {r}"),
        }
    }};
}

/// Calls `$f::<G, MIN, WIDE>` for the scheme's constants.
#[allow(unused_macros)]
macro_rules! by_scheme {
    ($scheme:expr, |$g:ident, $min:ident, $wide:ident| $call:expr) => {{
        let s: $crate::kernels::Scheme = $scheme;
        match (s.groups(), s.has_min, s.zero == 128) {
            (8, false, false) => {
                const $g: usize = 8;
                const $min: bool = false;
                #[allow(dead_code)] // Only kernels without signed byte products use it.
                #[allow(dead_code)] // Only kernels with unsigned-by-signed byte products use it.
                const $wide: bool = false;
                $call
            }
            (8, true, false) => {
                const $g: usize = 8;
                const $min: bool = true;
                #[allow(dead_code)] // Only kernels without signed byte products use it.
                #[allow(dead_code)] // Only kernels with unsigned-by-signed byte products use it.
                const $wide: bool = false;
                $call
            }
            (8, true, true) => {
                const $g: usize = 8;
                const $min: bool = true;
                #[allow(dead_code)] // Only kernels without signed byte products use it.
                #[allow(dead_code)] // Only kernels with unsigned-by-signed byte products use it.
                const $wide: bool = true;
                $call
            }
            (8, false, true) => {
                const $g: usize = 8;
                const $min: bool = false;
                #[allow(dead_code)] // Only kernels without signed byte products use it.
                #[allow(dead_code)] // Only kernels with unsigned-by-signed byte products use it.
                const $wide: bool = true;
                $call
            }
            (4, false, false) => {
                const $g: usize = 4;
                const $min: bool = false;
                #[allow(dead_code)] // Only kernels without signed byte products use it.
                #[allow(dead_code)] // Only kernels with unsigned-by-signed byte products use it.
                const $wide: bool = false;
                $call
            }
            other => unreachable!("scheme {other:?}"),
        }
    }};
}

/// Defines `fn $name(args) -> ret` running `$body` (an `#[inline(always)]`
/// function of plain loops) compiled for this CPU's float SIMD level
/// ([`float_simd`]: AVX-512F or AVX2 with FMA on x86_64, the build's baseline
/// elsewhere), chosen once: the element-wise kernels' one body, per-ISA
/// copies and run-time dispatch.
macro_rules! float_simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,fma")]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            fn baseline($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            type F = fn($($ty),*) $(-> $ret)?;
            static BEST: std::sync::OnceLock<F> = std::sync::OnceLock::new();
            let best = BEST.get_or_init(|| -> F {
                #[cfg(target_arch = "x86_64")]
                match $crate::kernels::float_simd() {
                    // SAFETY: `float_simd()` saw AVX-512F and FMA at run time.
                    $crate::kernels::FloatSimd::Avx512 => {
                        return |$($arg: $ty),*| unsafe { avx512($($arg),*) }
                    }
                    // SAFETY: `float_simd()` saw AVX2 and FMA at run time.
                    $crate::kernels::FloatSimd::Avx2 => {
                        return |$($arg: $ty),*| unsafe { avx2($($arg),*) }
                    }
                    $crate::kernels::FloatSimd::Baseline => {}
                }
                baseline
            });
            best($($arg),*)
        }
    };
}

pub mod activation;
mod acts;
#[cfg(target_arch = "aarch64")]
pub mod arm;
pub mod attention;
pub mod isa_cap;
pub mod residual;
pub mod rms_norm;
pub mod rope;
pub mod scalar;
pub mod softmax;
mod stripes;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod wasm;
#[cfg(target_arch = "x86_64")]
pub mod x86;

#[cfg(test)]
mod tests;

pub use acts::{ActRowMut, QuantActs};
pub use stripes::{ColumnStripes, OutTile, Stripe};

/// An instruction set with its own kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    /// AVX2 + FMA + F16C, 8 rows per tile.
    Avx2,
    /// AVX2 + FMA + F16C + AVX-VNNI (VEX `vpdpbusd`), 8 rows per tile.
    AvxVnni,
    /// AVX-512 F/BW/VL without VNNI (byte products through `vpmaddubsw`).
    Avx512,
    /// AVX-512 F/BW/VL + VNNI (`vpdpbusd`), 16 rows per tile.
    Avx512Vnni,
    /// NEON, byte products through `smull` + pairwise adds.
    Neon,
    /// NEON + the dot-product extension (`sdot`).
    NeonDot,
    Simd128,
}

/// The name of an ISA as `MAIN_ISA` and the reports spell it.
pub fn isa_name(isa: Isa) -> &'static str {
    match isa {
        Isa::Scalar => "scalar",
        Isa::Avx2 => "avx2",
        Isa::AvxVnni => "avxvnni",
        Isa::Avx512 => "avx512",
        Isa::Avx512Vnni => "avx512vnni",
        Isa::Neon => "neon",
        Isa::NeonDot => "neon-dotprod",
        Isa::Simd128 => "simd128",
    }
}

/// How a weight format reduces to unsigned bytes for integer dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheme {
    /// The weight format.
    pub weight: DType,
    /// Elements per activation scale (32 for Q8_0 / Q8_1, 256 for Q8_K).
    pub act_block: usize,
    /// Elements sharing one weight scale (and minimum).
    pub sub_len: usize,
    /// Packed byte `u` stands for code `u - zero`.
    pub zero: u8,
    /// Whether sub-blocks carry an additive minimum `mw` (Q4_1, Q4_K, Q5_K).
    pub has_min: bool,
}

impl Scheme {
    /// The integer scheme for quantized weights; `None` for float weights.
    pub fn of(weight: DType) -> Option<Scheme> {
        let s = |act_block, sub_len, zero, has_min| {
            Some(Scheme {
                weight,
                act_block,
                sub_len,
                zero,
                has_min,
            })
        };
        match weight {
            DType::Q4_0 => s(32, 32, 8, false),
            DType::Q4_1 => s(32, 32, 0, true),
            // Codes are stored with the sign bit flipped: `u = q + 128`.
            DType::Q8_0 => s(32, 32, 128, false),
            DType::Q4_K | DType::Q5_K => s(256, 32, 0, true),
            DType::Q6_K => s(256, 16, 32, false),
            _ => None,
        }
    }

    /// The scheme integer kernels use for `weight`: its own, or for float
    /// weights (F32 / F16 / BF16) 8-bit codes made when a tile is packed:
    /// per block of 32, `w = min + d * u` with `d = (max - min) / 255` in f32,
    /// stored as `dw * (u - 128) + mw`. That rounds each weight to within
    /// 1/510 of its block's range, which is what `Precision::Fast` and
    /// `Precision::Int8` trade for speed on float weights. (The range, not
    /// the largest magnitude: blocks that sit off zero keep their precision.)
    pub fn for_integer_dots(weight: DType) -> Scheme {
        Scheme::of(weight).unwrap_or(Scheme {
            weight,
            act_block: 32,
            sub_len: 32,
            zero: 128,
            has_min: true,
        })
    }

    /// Byte-groups of four per sub-block.
    pub fn groups(&self) -> usize {
        self.sub_len / 4
    }

    /// The largest packed byte `u` the weight format can produce.
    pub fn max_code(&self) -> u8 {
        match self.weight {
            DType::Q4_0 | DType::Q4_1 | DType::Q4_K => 15,
            DType::Q5_K => 31,
            DType::Q6_K => 63,
            _ => 255,
        }
    }

    /// How many consecutive byte-groups of a sub-block a kernel may sum in
    /// 16-bit lanes (the pair sums of `vpmaddubsw`) before widening them to
    /// 32 bits (`vpmaddwd` against ones): a power of two dividing
    /// [`Scheme::groups`], or 1 where even one group's pair sums must be
    /// widened at once.
    ///
    /// The bound: a 16-bit lane of `vpmaddubsw` holds `u0 a0 + u1 a1`, with
    /// `0 <= u <= max_code` and `a` any signed byte (`|a| <= 128`; the
    /// quantizer's codes stay within ±127 and fine codes are clamped to ±127,
    /// but the bound does not need that). After `k` groups the lane holds
    /// `2k` products, so `|sum| <= 2k * max_code * 128`, which must not pass
    /// `i16::MAX = 32767`:
    /// - 4-bit weights (Q4_0, Q4_1, Q4_K; `max_code` 15): `k = 8`, a whole
    ///   32-element sub-block, `16 * 15 * 128 = 30720`;
    /// - Q5_K (31): `k = 4`, `8 * 31 * 128 = 31744`;
    /// - Q6_K (63): `k = 2`, `4 * 63 * 128 = 32256` (its sub-blocks have 4 groups);
    /// - 8-bit codes (Q8_0, coded float rows): 1. One `vpmaddubsw` alone
    ///   could saturate on them; kernels use the sign trick (`|w| <= 128`
    ///   times `|a| <= 127`, `2 * 128 * 127 = 32512`) and widen every group.
    pub fn i16_groups(&self) -> usize {
        let max = self.max_code() as usize;
        let mut k = self.groups();
        while k > 1 && 2 * k * max * 128 > i16::MAX as usize {
            k /= 2;
        }
        k
    }
}

/// `n_rows` consecutive rows of a weight matrix in their stored format.
#[derive(Clone, Copy, Debug)]
pub struct WeightRows<'a> {
    pub dtype: DType,
    pub n_in: usize,
    pub n_rows: usize,
    pub row_bytes: usize,
    /// `n_rows * row_bytes` bytes.
    pub data: &'a [u8],
}

impl WeightRows<'_> {
    fn check(&self, tile_rows: usize) {
        assert!(
            self.n_rows >= 1 && self.n_rows <= tile_rows,
            "tile of {} rows",
            self.n_rows
        );
        assert_eq!(Some(self.row_bytes), self.dtype.row_bytes(self.n_in));
        assert_eq!(self.data.len(), self.n_rows * self.row_bytes);
    }
}

/// A cache-line aligned buffer of 4-byte words, viewed as `u32` or `f32`.
#[derive(Default)]
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; 16]);

impl AlignedBuf {
    /// Sets the length to `len` words (contents unspecified).
    pub fn resize(&mut self, len: usize) {
        self.lines.resize(len.div_ceil(16), Line([0; 16]));
        self.len = len;
    }

    pub fn words(&self) -> &[u32] {
        // SAFETY: `lines` holds at least `len` initialized, contiguous u32s.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }

    pub fn words_mut(&mut self) -> &mut [u32] {
        // SAFETY: as in `words`, and `&mut self` makes the view exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }

    pub fn floats(&self) -> &[f32] {
        // SAFETY: f32 has the size and alignment of u32, and every bit pattern is valid.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }

    pub fn floats_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `floats`, and `&mut self` makes the view exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

/// One tile of quantized weight rows, packed for integer dot products.
///
/// For sub-block `s`, byte-group `g` (elements `s * sub_len + 4g .. + 4`) and
/// row `r`: `qs[(s * groups + g) * tile_rows + r]` holds the four bytes `u`
/// little-endian; `dw[s * tile_rows + r]` the scale and `mw[...]` the minimum.
/// Rows `n_rows..tile_rows` are padding whose results are never stored.
#[derive(Default)]
pub struct PackedQ {
    pub scheme: Option<Scheme>,
    pub tile_rows: usize,
    pub n_rows: usize,
    pub n_in: usize,
    pub qs: AlignedBuf,
    pub dw: AlignedBuf,
    pub mw: AlignedBuf,
}

impl PackedQ {
    /// Sizes the buffers for `rows` and returns the scheme.
    pub fn reset(&mut self, tile_rows: usize, rows: &WeightRows) -> Scheme {
        rows.check(tile_rows);
        let scheme = Scheme::for_integer_dots(rows.dtype);
        let n_sub = rows.n_in / scheme.sub_len;
        self.scheme = Some(scheme);
        self.tile_rows = tile_rows;
        self.n_rows = rows.n_rows;
        self.n_in = rows.n_in;
        self.qs.resize(rows.n_in / 4 * tile_rows);
        self.dw.resize(n_sub * tile_rows);
        self.mw
            .resize(if scheme.has_min { n_sub * tile_rows } else { 0 });
        scheme
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme.expect("PackedQ used before packing")
    }

    pub fn n_sub(&self) -> usize {
        self.n_in / self.scheme().sub_len
    }
}

/// One tile of weight rows as f32, transposed: `w[i * tile_rows + r]`.
#[derive(Default)]
pub struct PackedF {
    pub tile_rows: usize,
    pub n_rows: usize,
    pub n_in: usize,
    pub w: AlignedBuf,
}

impl PackedF {
    pub fn reset(&mut self, tile_rows: usize, rows: &WeightRows) {
        rows.check(tile_rows);
        self.tile_rows = tile_rows;
        self.n_rows = rows.n_rows;
        self.n_in = rows.n_in;
        self.w.resize(rows.n_in * tile_rows);
    }
}

/// Per-thread scratch of a matmul: the packed tile.
#[derive(Default)]
pub struct Scratch {
    pub q: PackedQ,
    pub f: PackedF,
}

/// Quantizes one activation row for a scheme.
pub type QuantizeFn = fn(&Scheme, &[f32], &mut ActRowMut);
/// Packs quantized rows for integer dot products.
pub type PackQFn = fn(&WeightRows, &mut PackedQ);
/// Integer dot products of a packed tile with every token.
pub type DotQFn = fn(&PackedQ, &QuantActs, &mut OutTile);
/// Packs rows of any format as f32 (the integer tile is scratch for quantized ones).
pub type PackFFn = fn(&WeightRows, &mut PackedQ, &mut PackedF);
/// f32 dot products of a packed tile with every token of `x` (`[n_tok, n_in]`).
pub type DotFFn = fn(&PackedF, &[f32], &mut OutTile);

/// One instruction set's kernels. Only built where the CPU supports them, so
/// the function pointers are safe to call (a clone keeps that promise).
#[derive(Clone)]
pub struct Kernels {
    pub isa: Isa,
    /// Weight rows per tile (SIMD lanes of f32 / i32).
    pub tile_rows: usize,
    /// Whether `dot_q` reads the activations as 16-bit codes
    /// ([`QuantActs::wide`]), made once per matmul.
    pub wide_acts: bool,
    quantize: QuantizeFn,
    pack_q: PackQFn,
    dot_q: DotQFn,
    pack_f: PackFFn,
    dot_f: DotFFn,
}

impl Kernels {
    /// Quantizes `n_tok` rows of `x` for `scheme` (one pass, reused by every
    /// tile); `fine`: with fine codes.
    pub fn quantize_acts(&self, scheme: Scheme, x: &[f32], n_tok: usize, fine: bool) -> QuantActs {
        let n_in = x.len() / n_tok.max(1);
        let mut acts = QuantActs::zeroed(scheme, n_tok, n_in, fine);
        for (x, mut row) in x.chunks_exact(n_in.max(1)).zip(acts.rows_mut()) {
            (self.quantize)(&scheme, x, &mut row);
        }
        self.finish_acts(&mut acts);
        acts
    }

    /// What this kernel set needs beyond the codes, once they are all made.
    pub fn finish_acts(&self, acts: &mut QuantActs) {
        if self.wide_acts {
            acts.widen();
        }
    }

    pub fn quantize_row(&self, scheme: &Scheme, x: &[f32], row: &mut ActRowMut) {
        assert_eq!(x.len(), row.qs.len());
        assert!(row.fine.is_empty() || row.fine.len() == x.len());
        (self.quantize)(scheme, x, row)
    }

    pub fn pack_q(&self, rows: &WeightRows, packed: &mut PackedQ) {
        (self.pack_q)(rows, packed)
    }

    pub fn dot_q(&self, packed: &PackedQ, acts: &QuantActs, out: &mut OutTile) {
        assert_eq!(packed.tile_rows, self.tile_rows);
        assert_eq!(packed.scheme(), acts.scheme);
        assert_eq!(packed.n_in, acts.n_in);
        assert_eq!(out.stripe.n_rows(), acts.n_tok);
        assert!(out.col + packed.n_rows <= out.stripe.width);
        assert!(!self.wide_acts || acts.wide.len() == acts.qs.len());
        (self.dot_q)(packed, acts, out)
    }

    pub fn pack_f(&self, rows: &WeightRows, scratch: &mut PackedQ, packed: &mut PackedF) {
        (self.pack_f)(rows, scratch, packed)
    }

    pub fn dot_f(&self, packed: &PackedF, x: &[f32], out: &mut OutTile) {
        assert_eq!(packed.tile_rows, self.tile_rows);
        assert_eq!(x.len(), out.stripe.n_rows() * packed.n_in);
        assert!(out.col + packed.n_rows <= out.stripe.width);
        (self.dot_f)(packed, x, out)
    }

    /// Packs `rows` and writes their products with every token into `out`:
    /// integer kernels when `acts` is given, f32 ones otherwise.
    pub fn tile(
        &self,
        rows: &WeightRows,
        acts: Option<&QuantActs>,
        x: &[f32],
        scratch: &mut Scratch,
        out: &mut OutTile,
    ) {
        match acts {
            Some(acts) => {
                self.pack_q(rows, &mut scratch.q);
                self.dot_q(&scratch.q, acts, out);
            }
            None => {
                self.pack_f(rows, &mut scratch.q, &mut scratch.f);
                self.dot_f(&scratch.f, x, out);
            }
        }
    }
}

/// The float SIMD level the element-wise kernels (attention, softmax,
/// activation, RMSNorm, RoPE, the residual add) are compiled for on this
/// CPU, detected once; each kernel maps it to its own per-ISA function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatSimd {
    /// AVX-512F with FMA (x86_64).
    Avx512,
    /// AVX2 with FMA (x86_64).
    Avx2,
    /// What the build targets without run-time detection (SSE2, NEON, simd128).
    Baseline,
}

pub fn float_simd() -> FloatSimd {
    static LEVEL: OnceLock<FloatSimd> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        // `MAIN_ISA` caps this level as it caps the matmul kernels.
        #[cfg(target_arch = "x86_64")]
        {
            if isa_cap::allows(Isa::Avx512)
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("fma")
            {
                return FloatSimd::Avx512;
            }
            if isa_cap::allows(Isa::Avx2)
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                return FloatSimd::Avx2;
            }
        }
        FloatSimd::Baseline
    })
}

/// Every kernel set this CPU can run and `MAIN_ISA` allows ([`isa_cap`]),
/// best last (tests force each one).
pub fn available() -> &'static [Kernels] {
    static ALLOWED: OnceLock<Vec<Kernels>> = OnceLock::new();
    ALLOWED.get_or_init(|| {
        available_uncapped()
            .iter()
            .filter(|k| isa_cap::allows(k.isa))
            .cloned()
            .collect()
    })
}

/// Every kernel set this CPU can run, whatever `MAIN_ISA` says.
fn available_uncapped() -> &'static [Kernels] {
    static ALL: OnceLock<Vec<Kernels>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = vec![scalar::kernels()];
        #[cfg(target_arch = "x86_64")]
        all.extend(x86::kernels());
        #[cfg(target_arch = "aarch64")]
        all.extend(arm::kernels());
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        all.push(wasm::kernels());
        all
    })
}

/// The best kernel set for this CPU, detected once.
pub fn best() -> &'static Kernels {
    available()
        .last()
        .expect("the scalar kernels are always available")
}

/// The kernel set for `isa`, if this CPU runs it.
pub fn for_isa(isa: Isa) -> Option<&'static Kernels> {
    available().iter().find(|k| k.isa == isa)
}
