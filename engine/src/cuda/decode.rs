//! Batched generation on the GPU: the model side of
//! [`crate::generate::generate_batch_with`], whose scheduling (admission,
//! prefill packing, sampling on the host, stops, continuous batching) is the
//! CPU's, unchanged.
//!
//! Each live sequence owns a KV cache in device memory, `(layers, capacity,
//! S)` f32 QKV rows (the layout `attention_decode` reads and the packed
//! forward pass keeps), sized by its prompt and `max_new` and freed when the
//! sequence leaves the batch. A new sequence's prompt is prefilled whole by
//! the packed forward pass, which writes its rows into the cache; then every
//! step feeds the newest token of all live sequences at once
//! ([`GpuModel::decode`]: each weight read once per step, RoPE at each
//! sequence's own position, attention over each cache) and the LM head runs
//! on the last positions only; their logits come back to the host for the
//! sampler.
//!
//! The cache holds the query part of each row too (unused by later steps):
//! 2.5x the bytes of keys and values alone on SmolLM2 (9 query heads, 3
//! key-value heads), bought for one row layout shared with the scorer's
//! prefix and kernels that copy rows whole.

use super::backend::Buf;
use super::forward::GpuModel;
use crate::error::{Error, Result};
use crate::generate::StepModel;
use crate::model::Model;

/// One sequence's keys and values on the device.
pub struct GpuCache {
    /// `(layers, capacity, S)` f32.
    buf: Buf,
    capacity: usize,
    /// Positions already computed.
    len: usize,
}

impl GpuCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A model on the GPU driven by batched generation; `model` is the same
/// model on the host, for its tokenizer and config.
pub struct GpuDecoder<'a> {
    model: &'a Model,
    gpu: &'a mut GpuModel,
}

impl<'a> GpuDecoder<'a> {
    /// `gpu` must have been uploaded from `model`.
    pub fn new(model: &'a Model, gpu: &'a mut GpuModel) -> Result<GpuDecoder<'a>> {
        let (h, g) = (&model.config, &gpu.config);
        if (h.n_layers, h.d_model, h.vocab_size, h.n_heads, h.n_kv_heads)
            != (g.n_layers, g.d_model, g.vocab_size, g.n_heads, g.n_kv_heads)
        {
            return Err(Error::invalid_argument(
                "gpu model",
                "was uploaded from another model than the one generating",
            ));
        }
        Ok(GpuDecoder { model, gpu })
    }

    /// Bytes of one position of a cache.
    fn bytes_per_position(&self) -> usize {
        self.gpu.config.n_layers * self.gpu.qkv_width() * 4
    }

    /// The packed forward pass over whole prompts (every cache empty),
    /// its QKV rows copied into the caches. Returns the hidden states and
    /// each sequence's first batch row.
    fn prefill(&mut self, caches: &mut [GpuCache], tokens: &[&[u32]]) -> Result<(Buf, Vec<usize>)> {
        let (mut ids, mut pos, mut first, mut starts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (s, (cache, toks)) in caches.iter().zip(tokens).enumerate() {
            if !cache.is_empty() {
                return Err(Error::invalid_argument(
                    "caches",
                    format!(
                        "sequence {s}: the GPU prefills whole prompts, but {} positions are cached already",
                        cache.len
                    ),
                ));
            }
            let base = ids.len();
            starts.push(base);
            for (i, &t) in toks.iter().enumerate() {
                ids.push(t as i32);
                pos.push(i as i32);
                first.push(base as i32);
            }
        }
        let n = ids.len();
        let s = self.gpu.qkv_width();
        let layers = self.gpu.config.n_layers;
        let gpu = self.gpu.backend().clone();
        let keep = Buf::new(
            &gpu,
            layers * n * s * 4,
            &format!("allocating the keys and values of {n} prompt tokens"),
        )?;
        let hidden = self.gpu.forward(&ids, &pos, &first, None, 0, Some(&keep))?;
        for (cache, (toks, &base)) in caches.iter().zip(tokens.iter().zip(&starts)) {
            for l in 0..layers {
                gpu.copy(
                    cache.buf.at(l * cache.capacity * s * 4),
                    keep.at((l * n + base) * s * 4),
                    toks.len() * s * 4,
                )?;
            }
        }
        Ok((hidden, starts))
    }
}

impl StepModel for GpuDecoder<'_> {
    type Cache = GpuCache;

    fn model(&self) -> &Model {
        self.model
    }

    fn new_cache(&mut self, capacity: usize) -> Result<GpuCache> {
        let bytes = capacity * self.bytes_per_position();
        let buf = Buf::new(
            self.gpu.backend(),
            bytes,
            &format!(
                "allocating the KV cache of a sequence ({capacity} positions, {:.1} MiB; \
                 fewer sequences at once (a smaller batch) or fewer new tokens need less)",
                bytes as f64 / (1u64 << 20) as f64
            ),
        )?;
        Ok(GpuCache {
            buf,
            capacity,
            len: 0,
        })
    }

    fn fork_cache(&mut self, src: &GpuCache, len: usize, capacity: usize) -> Result<GpuCache> {
        if len > src.len || len > capacity {
            return Err(Error::invalid_argument(
                "fork_cache",
                format!(
                    "{len} positions asked of a cache holding {} into one of {capacity}",
                    src.len
                ),
            ));
        }
        let dst = self.new_cache(capacity)?;
        let s = self.gpu.qkv_width() * 4;
        let gpu = self.gpu.backend().clone();
        for l in 0..self.gpu.config.n_layers {
            gpu.copy(
                dst.buf.at(l * capacity * s),
                src.buf.at(l * src.capacity * s),
                len * s,
            )?;
        }
        Ok(GpuCache { len, ..dst })
    }

    fn splits_prompts(&self) -> bool {
        // The packed forward pass continues one shared prefix, not each
        // sequence's own cache: a prompt is prefilled in one call.
        false
    }

    fn step(
        &mut self,
        caches: &mut [GpuCache],
        tokens: &[&[u32]],
        want: &[bool],
    ) -> Result<Vec<Vec<f32>>> {
        if caches.len() != tokens.len() || want.len() != tokens.len() {
            return Err(Error::invalid_argument(
                "caches",
                "one KV cache per sequence is required",
            ));
        }
        for (s, (cache, toks)) in caches.iter().zip(tokens).enumerate() {
            self.model.check_tokens(toks)?;
            if toks.is_empty() || cache.len + toks.len() > cache.capacity {
                return Err(Error::invalid_argument(
                    "tokens",
                    format!(
                        "sequence {s}: {} cached + {} new tokens do not fit the cache capacity {}",
                        cache.len,
                        toks.len(),
                        cache.capacity
                    ),
                ));
            }
        }
        let (hidden, last_rows): (Buf, Vec<usize>) = if tokens.iter().all(|t| t.len() == 1) {
            // A decode step (a one-token prompt is one too, at position 0).
            let ids: Vec<i32> = tokens.iter().map(|t| t[0] as i32).collect();
            let pos: Vec<i32> = caches.iter().map(|c| c.len as i32).collect();
            let addrs: Vec<u64> = caches.iter().map(|c| c.buf.ptr).collect();
            let caps: Vec<usize> = caches.iter().map(|c| c.capacity).collect();
            let hidden = self.gpu.decode(&ids, &pos, &addrs, &caps)?;
            (hidden, (0..tokens.len()).collect())
        } else {
            let (hidden, starts) = self.prefill(caches, tokens)?;
            let last = starts
                .iter()
                .zip(tokens)
                .map(|(b, t)| b + t.len() - 1)
                .collect();
            (hidden, last)
        };
        for (cache, toks) in caches.iter_mut().zip(tokens) {
            cache.len += toks.len();
        }
        let rows: Vec<i32> = last_rows
            .iter()
            .zip(want)
            .filter(|(_, &w)| w)
            .map(|(&r, _)| r as i32)
            .collect();
        let vocab = self.gpu.config.vocab_size;
        let logits = self.gpu.head_logits(&hidden, &rows)?;
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}
