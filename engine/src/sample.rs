//! Token sampling for generation: greedy, or temperature with nucleus (top-p)
//! truncation, from a small seeded generator so runs are reproducible on
//! every target (wasm included).

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0x5eed,
        }
    }
}

/// SplitMix64: tiny, fast and good enough to draw tokens.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone)]
pub struct Sampler {
    params: SamplerParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Result<Sampler> {
        if !(params.temperature >= 0.0 && params.temperature.is_finite()) {
            return Err(Error::invalid_argument(
                "temperature",
                format!("{} must be >= 0", params.temperature),
            ));
        }
        if !(params.top_p > 0.0 && params.top_p <= 1.0) {
            return Err(Error::invalid_argument(
                "top_p",
                format!("{} must be in (0, 1]", params.top_p),
            ));
        }
        Ok(Sampler {
            params,
            rng: Rng(params.seed),
        })
    }

    /// Picks a token id from raw logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0 as u32
        };
        if self.params.temperature == 0.0 {
            return argmax();
        }
        let t = self.params.temperature as f64;
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, ((v as f64 - max) / t).exp()))
            .collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        // Nucleus: the smallest prefix whose mass reaches top_p.
        let mut kept = 0;
        let mut mass = 0.0;
        for p in &probs {
            mass += p.1 / total;
            kept += 1;
            if mass >= self.params.top_p as f64 {
                break;
            }
        }
        let probs = &probs[..kept];
        let kept_total: f64 = probs.iter().map(|p| p.1).sum();
        let mut r = self.rng.next_f64() * kept_total;
        for p in probs {
            r -= p.1;
            if r <= 0.0 {
                return p.0;
            }
        }
        probs.last().map(|p| p.0).unwrap_or_else(argmax)
    }
}
