//! Model hyper-parameters of the LLaMA family (LLaMA-2/3, Mistral, SmolLM),
//! read from GGUF metadata or from a Hugging Face `config.json`.

use crate::error::{Error, Result};

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: GGUF files, whose Q/K rows llama.cpp's
    /// converter permuted.
    Interleaved,
    /// Halves `(i, i + head_dim/2)`: Hugging Face "rotate_half" layout.
    Halves,
}

/// LLaMA-3 frequency scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position: usize,
}

impl Llama3Scaling {
    /// Per-pair divisors of the RoPE frequencies, as Meta's reference computes them.
    pub fn freq_factors(&self, head_dim: usize, theta: f32) -> Vec<f32> {
        let low_wavelen = self.original_max_position as f64 / self.low_freq_factor as f64;
        let high_wavelen = self.original_max_position as f64 / self.high_freq_factor as f64;
        (0..head_dim / 2)
            .map(|i| {
                let freq = 1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    self.factor
                } else {
                    let smooth = (self.original_max_position as f64 / wavelen
                        - self.low_freq_factor as f64)
                        / (self.high_freq_factor as f64 - self.low_freq_factor as f64);
                    // new_freq = (1-s) * freq/factor + s * freq  =>  divisor = freq / new_freq
                    (1.0 / ((1.0 - smooth) / self.factor as f64 + smooth)) as f32
                }
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// "llama" or "mistral" (same graph; Mistral may use a sliding window).
    pub architecture: String,
    pub n_layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Hidden width of the SwiGLU feed-forward block.
    pub d_ff: usize,
    pub vocab_size: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    /// Divisors of the RoPE frequencies, one per dimension pair (LLaMA-3 scaling
    /// or GGUF's `rope_freqs.weight`); `None` means plain RoPE.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// Mistral's sliding window: a token attends to at most this many positions
    /// (itself included). `None`: full causal attention.
    pub sliding_window: Option<usize>,
    pub context_length: usize,
}

/// Sizes above these are rejected before anything is allocated from them:
/// a lying header must not make us reserve terabytes.
pub const MAX_DIM: usize = 1 << 20;
pub const MAX_LAYERS: usize = 1024;
pub const MAX_VOCAB: usize = 1 << 22;

impl Config {
    /// Checks internal consistency (the weights are checked against it separately).
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, r: String| Err(Error::metadata(k, r));
        if self.n_layers == 0 || self.n_layers > MAX_LAYERS {
            return bad(
                "block_count",
                format!("{} layers is out of range", self.n_layers),
            );
        }
        for (k, v) in [
            ("embedding_length", self.d_model),
            ("feed_forward_length", self.d_ff),
            ("attention.head_count", self.n_heads),
            ("attention.head_count_kv", self.n_kv_heads),
            ("head_dim", self.head_dim),
        ] {
            if v == 0 || v > MAX_DIM {
                return bad(k, format!("{v} is out of range (1..={MAX_DIM})"));
            }
        }
        if self.vocab_size == 0 || self.vocab_size > MAX_VOCAB {
            return bad("vocab_size", format!("{} is out of range", self.vocab_size));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(
                "attention.head_count_kv",
                format!(
                    "{} does not divide head_count {}",
                    self.n_kv_heads, self.n_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(
                "head_dim",
                format!("{} must be even for RoPE", self.head_dim),
            );
        }
        if !(self.rms_eps > 0.0 && self.rms_eps < 1.0) {
            return bad(
                "attention.layer_norm_rms_epsilon",
                format!("{} is out of range", self.rms_eps),
            );
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return bad(
                "rope.freq_base",
                format!("{} is out of range", self.rope_theta),
            );
        }
        if let Some(f) = &self.rope_freq_factors {
            if f.len() != self.head_dim / 2 {
                return bad(
                    "rope_freqs",
                    format!("{} factors for head_dim {}", f.len(), self.head_dim),
                );
            }
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window", "must be at least 1".into());
        }
        Ok(())
    }

    /// Inverse frequencies of RoPE, one per dimension pair, with scaling applied.
    pub fn rope_inv_freqs(&self) -> Vec<f64> {
        (0..self.head_dim / 2)
            .map(|i| {
                let f = 1.0 / (self.rope_theta as f64).powf(2.0 * i as f64 / self.head_dim as f64);
                match &self.rope_freq_factors {
                    Some(factors) => f / factors[i] as f64,
                    None => f,
                }
            })
            .collect()
    }
}
