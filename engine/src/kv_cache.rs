//! The key-value cache of one sequence: what a forward pass keeps of every
//! layer so later tokens (and sequences sharing a prefix) need not recompute
//! it. Owned by the caller, never by the shared [`crate::model::Model`].

use crate::config::Config;

/// Keys and values of one sequence, for every layer. Keys are
/// `(layer, Hkv, hd, capacity)` (transposed, for the attention kernel),
/// values `(layer, Hkv, capacity, hd)`.
#[derive(Clone)]
pub struct KvCache {
    n_layers: usize,
    n_kv_heads: usize,
    head_dim: usize,
    pub(crate) capacity: usize,
    /// Positions already computed.
    pub(crate) len: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvCache {
    pub fn new(c: &Config, capacity: usize) -> KvCache {
        let n = c.n_layers * c.n_kv_heads * capacity * c.head_dim;
        KvCache {
            n_layers: c.n_layers,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            capacity,
            len: 0,
            k: vec![0f32; n],
            v: vec![0f32; n],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets positions `len..` (to reuse a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// A new cache of `capacity` positions holding the first `len` positions
    /// of `prefix`: a shared prompt computed once, continued by many sequences.
    pub fn from_prefix(prefix: &KvCache, len: usize, capacity: usize) -> KvCache {
        assert!(
            len <= prefix.len && len <= capacity,
            "from_prefix: {len} positions requested"
        );
        let hd = prefix.head_dim;
        let mut c = KvCache {
            n_layers: prefix.n_layers,
            n_kv_heads: prefix.n_kv_heads,
            head_dim: hd,
            capacity,
            len,
            k: vec![0f32; prefix.n_layers * prefix.n_kv_heads * capacity * hd],
            v: vec![0f32; prefix.n_layers * prefix.n_kv_heads * capacity * hd],
        };
        for layer in 0..prefix.n_layers {
            for head in 0..prefix.n_kv_heads {
                let (src, dst) = (prefix.head_offset(layer, head), c.head_offset(layer, head));
                for d in 0..hd {
                    let (s0, d0) = (src + d * prefix.capacity, dst + d * capacity);
                    c.k[d0..d0 + len].copy_from_slice(&prefix.k[s0..s0 + len]);
                }
                c.v[dst..dst + len * hd].copy_from_slice(&prefix.v[src..src + len * hd]);
            }
        }
        c
    }

    pub(crate) fn fits(&self, c: &Config) -> bool {
        self.n_layers == c.n_layers
            && self.n_kv_heads == c.n_kv_heads
            && self.head_dim == c.head_dim
    }

    fn head_offset(&self, layer: usize, head: usize) -> usize {
        (layer * self.n_kv_heads + head) * self.capacity * self.head_dim
    }

    /// Writes `n` new rows of `(Hkv*hd)` keys and values at positions `len..len+n`.
    pub(crate) fn store(&mut self, layer: usize, k: &[f32], v: &[f32], n: usize) {
        let (hd, cap, kv_dim) = (
            self.head_dim,
            self.capacity,
            self.n_kv_heads * self.head_dim,
        );
        for h in 0..self.n_kv_heads {
            let base = self.head_offset(layer, h);
            for i in 0..n {
                let src = i * kv_dim + h * hd;
                let pos = self.len + i;
                // Keys transposed: dimension d of every position is one row.
                for d in 0..hd {
                    self.k[base + d * cap + pos] = k[src + d];
                }
                self.v[base + pos * hd..base + (pos + 1) * hd].copy_from_slice(&v[src..src + hd]);
            }
        }
    }

    /// One head's keys `(hd, capacity)` (transposed) and values `(capacity, hd)`.
    pub(crate) fn head(&self, layer: usize, head: usize) -> (&[f32], &[f32]) {
        let o = self.head_offset(layer, head);
        let n = self.capacity * self.head_dim;
        (&self.k[o..o + n], &self.v[o..o + n])
    }
}
