//! `MAIN_ISA`: run as if this CPU were a lesser one.
//!
//! Machines of one kind come with different instruction sets (some with
//! AVX-512 VNNI, some with AVX2 only), and the defaults follow the CPU (the
//! default precision is `fast` only with VNNI). A test suite that passes on
//! one can fail on the other, so the engine can be told to use no more than
//! a named instruction set: `MAIN_ISA=avx2` runs the plain AVX2 kernels (no
//! VNNI, whatever the CPU has), the AVX2 element-wise code and the AVX2
//! defaults on an AVX-512 machine;
//! `MAIN_ISA=scalar` runs the portable code everywhere. The variable is read
//! once per process. The names are a contract (scripts and CI use them):
//!
//! | `MAIN_ISA`   | matmul kernels at most | element-wise code |
//! |--------------|------------------------|-------------------|
//! | `scalar`     | scalar                 | the build's baseline (SSE2, NEON, simd128) |
//! | `avx2`       | AVX2 + FMA + F16C (byte products on `vpmaddubsw`) | AVX2 + FMA |
//! | `avxvnni`    | AVX2 + AVX-VNNI (byte products on VEX `vpdpbusd`) | AVX2 + FMA |
//! | `avx512`     | AVX-512 F/BW/VL        | AVX-512F + FMA    |
//! | `avx512vnni` | AVX-512 VNNI           | AVX-512F + FMA    |
//! | `native` or unset | the best this CPU has | the best this CPU has |
//!
//! A name this CPU cannot run (`avx512` on an AVX2 machine, `avx2` on
//! aarch64) or an unknown name is an error when a model loads
//! ([`check`]), never a silent fallback.

use std::sync::OnceLock;

use super::Isa;
use crate::error::{Error, Result};

/// The environment variable's name.
pub const VAR: &str = "MAIN_ISA";

/// How far up the x86 ladder an ISA is (`Scalar` 0; NEON, NEON with
/// dotprod and simd128 sit beside AVX2: `MAIN_ISA` names no aarch64 or wasm
/// level, so only `scalar` caps them). AVX-VNNI sits below AVX-512: its
/// kernels are AVX2's 8-lane tiles, which the 16-lane AVX-512 ones beat
/// wherever both run.
pub(crate) fn rank(isa: Isa) -> u8 {
    match isa {
        Isa::Scalar => 0,
        Isa::Avx2 => 1,
        Isa::AvxVnni => 2,
        Isa::Avx512 => 3,
        Isa::Avx512Vnni => 4,
        Isa::Neon | Isa::NeonDot | Isa::Simd128 => 1,
    }
}

/// What `MAIN_ISA` asks for: `Ok(None)` for no cap.
fn parse(value: &str) -> std::result::Result<Option<Isa>, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "native" => Ok(None),
        "scalar" => Ok(Some(Isa::Scalar)),
        "avx2" => Ok(Some(Isa::Avx2)),
        "avxvnni" => Ok(Some(Isa::AvxVnni)),
        "avx512" => Ok(Some(Isa::Avx512)),
        "avx512vnni" => Ok(Some(Isa::Avx512Vnni)),
        other => Err(format!(
            "{other:?} is not one of scalar, avx2, avxvnni, avx512, avx512vnni, native"
        )),
    }
}

/// The cap `MAIN_ISA` sets, read once; `Err` holds the reason it is unusable.
fn cap_or_reason() -> &'static std::result::Result<Option<Isa>, String> {
    static CAP: OnceLock<std::result::Result<Option<Isa>, String>> = OnceLock::new();
    CAP.get_or_init(|| match std::env::var(VAR) {
        Ok(v) => parse(&v),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!("{v:?} is not UTF-8")),
    })
}

/// The highest ISA the engine may use, `None` for no cap. An unusable value
/// caps nothing here; [`check`] reports it.
pub fn cap() -> Option<Isa> {
    cap_or_reason().as_ref().ok().copied().flatten()
}

/// Whether the cap allows kernels of `isa`.
pub(crate) fn allows(isa: Isa) -> bool {
    cap().is_none_or(|c| rank(isa) <= rank(c))
}

/// An error when `MAIN_ISA` is set to something this build and CPU cannot
/// honour. Called when a model loads, so every interface reports it.
pub fn check() -> Result<()> {
    let bad = |reason: String| Err(Error::invalid_argument(VAR, reason));
    match cap_or_reason() {
        Err(reason) => bad(reason.clone()),
        Ok(None) => Ok(()),
        Ok(Some(Isa::Scalar)) => Ok(()),
        Ok(Some(want)) => {
            if super::available_uncapped().iter().any(|k| k.isa == *want) {
                Ok(())
            } else {
                let has: Vec<String> = super::available_uncapped()
                    .iter()
                    .map(|k| super::isa_name(k.isa).to_string())
                    .collect();
                bad(format!(
                    "{} asks for kernels this CPU does not run (it runs {})",
                    super::isa_name(*want),
                    has.join(", ")
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_contract() {
        assert_eq!(parse("scalar"), Ok(Some(Isa::Scalar)));
        assert_eq!(parse("AVX2"), Ok(Some(Isa::Avx2)));
        assert_eq!(parse("avxvnni"), Ok(Some(Isa::AvxVnni)));
        assert_eq!(parse("avx512"), Ok(Some(Isa::Avx512)));
        assert_eq!(parse("avx512vnni"), Ok(Some(Isa::Avx512Vnni)));
        assert_eq!(parse("native"), Ok(None));
        assert_eq!(parse(""), Ok(None));
        let e = parse("sse4").unwrap_err();
        assert!(e.contains("\"sse4\"") && e.contains("avx2"), "{e}");
    }

    #[test]
    fn ranks_order_the_x86_ladder() {
        assert!(rank(Isa::Scalar) < rank(Isa::Avx2));
        assert!(rank(Isa::Avx2) < rank(Isa::AvxVnni));
        assert!(rank(Isa::AvxVnni) < rank(Isa::Avx512));
        assert!(rank(Isa::Avx512) < rank(Isa::Avx512Vnni));
    }

    /// The cap holds for what the engine chooses: no kernel set above it is
    /// offered, and the element-wise level follows it.
    #[test]
    fn the_cap_holds_for_the_chosen_kernels() {
        for k in super::super::available() {
            assert!(allows(k.isa), "{:?} offered under {:?}", k.isa, cap());
        }
        if let Some(c) = cap() {
            assert!(rank(super::super::best().isa) <= rank(c));
            if c == Isa::Scalar {
                assert_eq!(
                    super::super::float_simd(),
                    super::super::FloatSimd::Baseline
                );
            }
        }
    }
}
