//! The LLaMA-family forward pass on a GPU, the same graph as `model.rs`:
//! weights uploaded once and decoded on the device (Q/K/V fused into one
//! matrix, gate/up into another), matrix products through the backend
//! (cuBLAS), everything else in `kernels.cu`, and the fused LM head that
//! turns target rows into log-probs in vocabulary chunks.
//!
//! Shapes: `T` tokens of a packed batch (many sequences back to back, each
//! seeing only itself), `d` = d_model, `hd` = head_dim, `H` / `Hkv` query /
//! key-value heads, `F` = d_ff, `S` = (H + 2 Hkv) hd, one fused QKV row.

use std::sync::Arc;

use super::backend::{blocks_for, Arg, Backend, Buf, DevPtr, Elem, Gemm};
use crate::config::{Config, RopeStyle};
use crate::error::{Error, Result};
use crate::matmul::{Precision, Weight};
use crate::model::Model;
use crate::quant::DType;

/// One transformer block's weights on the device.
struct GpuLayer {
    /// (d) f32
    attn_norm: Buf,
    /// (S, d): rows of Wq, then Wk, then Wv.
    wqkv: Buf,
    /// (d, H hd)
    wo: Buf,
    /// (d) f32
    ffn_norm: Buf,
    /// (2F, d): rows of the gate, then of up.
    wgu: Buf,
    /// (d, F)
    wdown: Buf,
}

/// cos / sin of every (position, dimension pair), `(n_pos, hd/2)` f32,
/// computed in f64 on the host as the CPU does; grown when a longer
/// sequence comes.
struct RopeTable {
    cos: Buf,
    sin: Buf,
    n_pos: usize,
}

/// A model whose weights live on the GPU. One per scorer side; not shared
/// between threads (it owns the RoPE table it grows).
pub struct GpuModel {
    gpu: Arc<dyn Backend>,
    pub config: Config,
    /// Element type of weights and of the activations that meet them.
    act: Elem,
    /// (vocab, d)
    embed: Buf,
    /// (vocab, d); `None` when the head is the embedding (tied).
    head: Option<Buf>,
    /// (d) f32
    out_norm: Buf,
    layers: Vec<GpuLayer>,
    inv_freqs: Vec<f64>,
    rope: Option<RopeTable>,
}

/// The kernel-name part of a GGUF block type, or an error for types no
/// weight is stored in.
fn format_name(t: DType, name: &str) -> Result<&'static str> {
    Ok(match t {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::Q4_0 => "q4_0",
        DType::Q4_1 => "q4_1",
        DType::Q8_0 => "q8_0",
        DType::Q4_K => "q4_k",
        DType::Q5_K => "q5_k",
        DType::Q6_K => "q6_k",
        DType::Q8_1 | DType::Q8_K => {
            return Err(Error::tensor(
                name,
                format!("{t:?} is an activation format; the GPU does not read it as a weight"),
            ))
        }
    })
}

/// Decodes `w` on the device into rows `row0..` of `dst` (`(rows, n_in)` of `elem`).
pub fn decode_into(
    gpu: &Arc<dyn Backend>,
    w: &Weight,
    name: &str,
    dst: &Buf,
    row0: usize,
    elem: Elem,
) -> Result<()> {
    let fmt = format_name(w.dtype, name)?;
    let n = w.n_out * w.n_in;
    let (qk, bb) = (w.dtype.block_len(), w.dtype.block_bytes());
    if !n.is_multiple_of(qk) || w.data.len() != n / qk * bb {
        return Err(Error::tensor(
            name,
            format!(
                "{} bytes do not hold {}x{} {:?} values in whole blocks",
                w.data.len(),
                w.n_out,
                w.n_in,
                w.dtype
            ),
        ));
    }
    let end = (row0 + w.n_out) * w.n_in * elem.bytes();
    if end > dst.bytes {
        return Err(Error::tensor(name, "does not fit the fused matrix"));
    }
    let raw = Buf::from_bytes(gpu, w.data, &format!("uploading {name}"))?;
    let nb = n / qk;
    let what = format!("decoding {name}");
    gpu.launch(
        &format!("dequant_{fmt}_{}", elem.suffix()),
        blocks_for(nb, 256, &what, gpu.as_ref())?,
        256,
        &[
            raw.arg(),
            Arg::Ptr(dst.at(row0 * w.n_in * elem.bytes())),
            Arg::I64(nb as i64),
        ],
    )?;
    // The raw bytes are freed when `raw` drops: wait for the decoder first.
    gpu.sync()
}

impl GpuModel {
    /// Uploads `model`'s weights, decoded to bf16 (`Precision::Bf16`) or f32
    /// (`Precision::Exact`).
    pub fn upload(gpu: Arc<dyn Backend>, model: &Model, precision: Precision) -> Result<GpuModel> {
        let act = match precision {
            Precision::Bf16 => Elem::Bf16,
            Precision::Exact => Elem::F32,
            p => {
                return Err(Error::invalid_argument(
                    "precision",
                    format!(
                        "{} is a CPU precision; the GPU runs bf16 or exact",
                        p.name()
                    ),
                ))
            }
        };
        let c = model.config.clone();
        if c.head_dim > 256 {
            return Err(Error::unsupported(
                "head_dim on the GPU",
                format!("{} (the attention kernel takes up to 256)", c.head_dim),
            ));
        }
        let matrix = |parts: &[(&str, &crate::tensor::TensorRef)]| -> Result<Buf> {
            let n_in = parts[0].1.dims[0];
            let rows: usize = parts.iter().map(|(_, t)| t.dims[1]).sum();
            let names: Vec<&str> = parts.iter().map(|(n, _)| *n).collect();
            let dst = Buf::new(
                &gpu,
                rows * n_in * act.bytes(),
                &format!("allocating {}", names.join("+")),
            )?;
            let mut row0 = 0;
            for (name, t) in parts {
                let w = model.weight(t);
                decode_into(&gpu, &w, name, &dst, row0, act)?;
                row0 += w.n_out;
            }
            Ok(dst)
        };
        let embed = matrix(&[("token_embd.weight", &model.token_embd)])?;
        let head = if model.output.name == model.token_embd.name {
            None
        } else {
            Some(matrix(&[("output.weight", &model.output)])?)
        };
        let mut layers = Vec::with_capacity(c.n_layers);
        for (i, l) in model.layers.iter().enumerate() {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let (q, k, v) = (n("attn_q"), n("attn_k"), n("attn_v"));
            let (g, u) = (n("ffn_gate"), n("ffn_up"));
            layers.push(GpuLayer {
                attn_norm: Buf::from_f32(&gpu, &l.attn_norm, &n("attn_norm"))?,
                wqkv: matrix(&[(&q, &l.wq), (&k, &l.wk), (&v, &l.wv)])?,
                wo: matrix(&[(&n("attn_output"), &l.wo)])?,
                ffn_norm: Buf::from_f32(&gpu, &l.ffn_norm, &n("ffn_norm"))?,
                wgu: matrix(&[(&g, &l.w_gate), (&u, &l.w_up)])?,
                wdown: matrix(&[(&n("ffn_down"), &l.w_down)])?,
            });
        }
        let out_norm = Buf::from_f32(&gpu, &model.output_norm, "output_norm.weight")?;
        Ok(GpuModel {
            inv_freqs: c.rope_inv_freqs(),
            gpu,
            config: c,
            act,
            embed,
            head,
            out_norm,
            layers,
            rope: None,
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.gpu
    }

    /// `S`: one fused QKV row.
    pub fn qkv_width(&self) -> usize {
        let c = &self.config;
        (c.n_heads + 2 * c.n_kv_heads) * c.head_dim
    }

    /// Device bytes one token of a batch takes in [`GpuModel::forward`]
    /// and in the head's row gather (its logits chunk is sized apart).
    pub fn bytes_per_token(&self) -> usize {
        let c = &self.config;
        let a = self.act.bytes();
        let q = c.n_heads * c.head_dim;
        c.d_model * 4 + c.d_model * a // x, xn
            + self.qkv_width() * 4 + q * a // qkv, attention output
            + c.d_model * 4 // proj
            + 2 * c.d_ff * 4 + c.d_ff * a // gate|up, SwiGLU
            + c.d_model * a + 3 * 4 + 4 * 4 // gathered rows, ids/pos/first, head state
    }

    fn ensure_rope(&mut self, n_pos: usize) -> Result<()> {
        if self.rope.as_ref().is_some_and(|r| r.n_pos >= n_pos) {
            return Ok(());
        }
        let n_pos = n_pos.next_power_of_two().max(1024);
        let half = self.inv_freqs.len();
        let (mut cos, mut sin) = (
            Vec::with_capacity(n_pos * half),
            Vec::with_capacity(n_pos * half),
        );
        for p in 0..n_pos {
            for &f in &self.inv_freqs {
                let (s, c) = (p as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        self.rope = Some(RopeTable {
            cos: Buf::from_f32(&self.gpu, &cos, "the RoPE table")?,
            sin: Buf::from_f32(&self.gpu, &sin, "the RoPE table")?,
            n_pos,
        });
        Ok(())
    }

    fn gemm(
        &self,
        w: &Buf,
        n_out: usize,
        n_in: usize,
        x: &Buf,
        y: &Buf,
        n_tok: usize,
    ) -> Result<()> {
        self.gpu.gemm(&Gemm {
            n_out,
            n_tok,
            n_in,
            w: w.ptr,
            x: x.ptr,
            y: y.ptr,
            ldy: n_out,
            ab: self.act,
        })
    }

    /// Runs a packed batch. `tokens[t]` sits at position `pos[t]` of its
    /// sequence, whose first new token is batch row `first[t]`; positions
    /// below `pos[first[t]]` come from `prefix` (`(layers, P, S)` f32 QKV
    /// rows of a shared prompt). With `keep`, every layer's QKV rows of this
    /// batch are copied there (`(layers, T, S)`), which is how a prefix is made.
    /// Returns the final-normed hidden states `(T, d)` (activation type).
    pub fn forward(
        &mut self,
        tokens: &[i32],
        pos: &[i32],
        first: &[i32],
        prefix: Option<&Buf>,
        n_prefix: usize,
        keep: Option<&Buf>,
    ) -> Result<Buf> {
        let n = tokens.len();
        assert!(
            pos.len() == n && first.len() == n,
            "forward: one position and start per token"
        );
        let c = &self.config;
        let (h, hkv, hd) = (c.n_heads, c.n_kv_heads, c.head_dim);
        let s = self.qkv_width();
        let (scale, window) = self.attention_constants();
        let kernel = format!("attention_{}", self.act.suffix());
        let gpu = self.gpu.clone();
        let firstb = Buf::from_i32(
            &gpu,
            first,
            &format!("allocating sequence starts for a batch of {n} tokens"),
        )?;
        self.layers_pass(tokens, pos, &mut |l, qkv, posb, att| {
            if let Some(keep) = keep {
                gpu.copy(keep.at(l * n * s * 4), qkv.ptr, n * s * 4)?;
            }
            let pre = prefix.map_or(0, |p| p.at(l * n_prefix * s * 4));
            gpu.launch(
                &kernel,
                blocks_for(n * h, 4, "attention", gpu.as_ref())?,
                128,
                &[
                    qkv.arg(),
                    Arg::Ptr(pre),
                    posb.arg(),
                    firstb.arg(),
                    att.arg(),
                    Arg::I32(n as i32),
                    Arg::I32(h as i32),
                    Arg::I32(hkv as i32),
                    Arg::I32(hd as i32),
                    Arg::F32(scale),
                    Arg::I32(window),
                ],
            )
        })
    }

    /// One decode step of batched generation: `tokens[t]`, the newest token
    /// of sequence `t`, at position `pos[t]`, attends to that sequence's
    /// cached rows, `(layers, capacities[t], S)` f32 QKV rows at device
    /// address `caches[t]` (positions `0..pos[t]` filled), and its own row,
    /// which is then appended to the cache at `pos[t]` (the caller checks
    /// `pos[t] < capacities[t]`). Every weight is read once for all the
    /// sequences. Returns the final-normed hidden states `(n_seq, d)`.
    pub fn decode(
        &mut self,
        tokens: &[i32],
        pos: &[i32],
        caches: &[DevPtr],
        capacities: &[usize],
    ) -> Result<Buf> {
        let n = tokens.len();
        assert!(
            pos.len() == n && caches.len() == n && capacities.len() == n,
            "decode: one position and cache per sequence"
        );
        let c = &self.config;
        let (h, hkv, hd, layers) = (c.n_heads, c.n_kv_heads, c.head_dim, c.n_layers);
        let s = self.qkv_width();
        let (scale, window) = self.attention_constants();
        let kernel = format!("attention_decode_{}", self.act.suffix());
        let gpu = self.gpu.clone();
        // (layers, n_seq) addresses of every sequence's rows of each layer:
        // one upload per step, one slice of it per layer.
        let mut addrs = Vec::with_capacity(layers * n * 8);
        for l in 0..layers {
            for (&base, &cap) in caches.iter().zip(capacities) {
                addrs.extend_from_slice(&(base + (l * cap * s * 4) as u64).to_le_bytes());
            }
        }
        let addrs = Buf::from_bytes(
            &gpu,
            &addrs,
            &format!("allocating the cache addresses of {n} sequences"),
        )?;
        let n_seq = u32::try_from(n)
            .map_err(|_| Error::gpu(gpu.name(), "a decode step", "too many sequences"))?;
        self.layers_pass(tokens, pos, &mut |l, qkv, posb, att| {
            let layer_caches = Arg::Ptr(addrs.at(l * n * 8));
            gpu.launch(
                &kernel,
                blocks_for(n * h, 4, "decode attention", gpu.as_ref())?,
                128,
                &[
                    qkv.arg(),
                    layer_caches,
                    posb.arg(),
                    att.arg(),
                    Arg::I32(n as i32),
                    Arg::I32(h as i32),
                    Arg::I32(hkv as i32),
                    Arg::I32(hd as i32),
                    Arg::F32(scale),
                    Arg::I32(window),
                ],
            )?;
            gpu.launch(
                "append_rows",
                n_seq,
                256,
                &[qkv.arg(), layer_caches, posb.arg(), Arg::I32(s as i32)],
            )
        })
    }

    /// The attention's score scale and sliding window (0: none).
    fn attention_constants(&self) -> (f32, i32) {
        let c = &self.config;
        let window = c
            .sliding_window
            .map_or(0, |w| w.min(i32::MAX as usize) as i32);
        (1.0 / (c.head_dim as f32).sqrt(), window)
    }

    /// The layers of the forward pass over `T` tokens at positions `pos`,
    /// the attention left to `attend(layer, qkv, positions, out)`: it reads
    /// the rotated `(T, S)` f32 QKV rows and writes `(T, H hd)` outputs of
    /// the activation type. Everything else (embedding, norms, matrix
    /// products, RoPE, SwiGLU, the final norm) is the same for a packed
    /// batch and a decode step. Returns the final-normed `(T, d)`.
    fn layers_pass(
        &mut self,
        tokens: &[i32],
        pos: &[i32],
        attend: &mut dyn FnMut(usize, &Buf, &Buf, &Buf) -> Result<()>,
    ) -> Result<Buf> {
        let n = tokens.len();
        let vocab = self.config.vocab_size;
        if let Some(t) = tokens.iter().find(|&&t| t < 0 || t as usize >= vocab) {
            return Err(Error::invalid_argument(
                "tokens",
                format!("token id {t} is outside the vocabulary of {vocab}"),
            ));
        }
        let max_pos = pos.iter().copied().max().unwrap_or(0).max(0) as usize;
        self.ensure_rope(max_pos + 1)?;
        let c = self.config.clone();
        let (d, hd, f) = (c.d_model, c.head_dim, c.d_ff);
        let (h, hkv) = (c.n_heads, c.n_kv_heads);
        let s = self.qkv_width();
        let a = self.act.bytes();
        let sfx = self.act.suffix();
        let gpu = self.gpu.clone();
        let g = gpu.as_ref();
        let what = |x: &str| format!("allocating {x} for a batch of {n} tokens");

        let ids = Buf::from_i32(&gpu, tokens, &what("token ids"))?;
        let posb = Buf::from_i32(&gpu, pos, &what("positions"))?;
        let x = Buf::new(&gpu, n * d * 4, &what("the residual stream"))?;
        let xn = Buf::new(&gpu, n * d * a, &what("normed activations"))?;
        let qkv = Buf::new(&gpu, n * s * 4, &what("queries, keys and values"))?;
        let att = Buf::new(&gpu, n * h * hd * a, &what("attention outputs"))?;
        let proj = Buf::new(&gpu, n * d * 4, &what("projections"))?;
        let gu = Buf::new(&gpu, n * 2 * f * 4, &what("gate and up"))?;
        let ff = Buf::new(&gpu, n * f * a, &what("SwiGLU outputs"))?;

        let rows =
            u32::try_from(n).map_err(|_| Error::gpu(g.name(), "a batch", "too many tokens"))?;
        gpu.launch(
            &format!("embed_{sfx}"),
            rows,
            256,
            &[self.embed.arg(), ids.arg(), x.arg(), Arg::I32(d as i32)],
        )?;
        let rope = self.rope.as_ref().expect("ensured above");
        let n_rot = n * (h + hkv) * hd / 2;
        let eps = c.rms_eps;
        let norm = |delta: Option<&Buf>, w: &Buf| {
            gpu.launch(
                &format!("add_rmsnorm_{sfx}"),
                rows,
                256,
                &[
                    x.arg(),
                    Arg::Ptr(delta.map_or(0, |b| b.ptr)),
                    w.arg(),
                    xn.arg(),
                    Arg::I32(d as i32),
                    Arg::F32(eps),
                ],
            )
        };
        for (l, layer) in self.layers.iter().enumerate() {
            norm((l > 0).then_some(&proj), &layer.attn_norm)?;
            self.gemm(&layer.wqkv, s, d, &xn, &qkv, n)?;
            gpu.launch(
                "rope",
                blocks_for(n_rot, 256, "rope", g)?,
                256,
                &[
                    qkv.arg(),
                    posb.arg(),
                    rope.cos.arg(),
                    rope.sin.arg(),
                    Arg::I64(n_rot as i64),
                    Arg::I32(h as i32),
                    Arg::I32(hkv as i32),
                    Arg::I32(hd as i32),
                    Arg::I32((c.rope_style == RopeStyle::Interleaved) as i32),
                ],
            )?;
            attend(l, &qkv, &posb, &att)?;
            self.gemm(&layer.wo, d, h * hd, &att, &proj, n)?;
            norm(Some(&proj), &layer.ffn_norm)?;
            self.gemm(&layer.wgu, 2 * f, d, &xn, &gu, n)?;
            gpu.launch(
                &format!("swiglu_{sfx}"),
                blocks_for(n * f, 256, "swiglu", g)?,
                256,
                &[
                    gu.arg(),
                    ff.arg(),
                    Arg::I64((n * f) as i64),
                    Arg::I32(f as i32),
                ],
            )?;
            self.gemm(&layer.wdown, d, f, &ff, &proj, n)?;
        }
        norm(Some(&proj), &self.out_norm)?;
        Ok(xn)
    }

    /// The full logits `(rows, vocab)` f32 of rows `rows` of `hidden` (what
    /// generation samples from), downloaded: the LM head on those rows only.
    pub fn head_logits(&self, hidden: &Buf, rows: &[i32]) -> Result<Vec<f32>> {
        let r = rows.len();
        if r == 0 {
            return Ok(Vec::new());
        }
        let c = &self.config;
        let (d, vocab, a) = (c.d_model, c.vocab_size, self.act.bytes());
        let gpu = &self.gpu;
        let what = |x: &str| format!("allocating {x} for {r} sampled rows");
        let rowsb = Buf::from_i32(gpu, rows, &what("row indices"))?;
        let sel = Buf::new(gpu, r * d * a, &what("hidden rows"))?;
        let n_rows =
            u32::try_from(r).map_err(|_| Error::gpu(gpu.name(), "the LM head", "too many rows"))?;
        gpu.launch(
            &format!("gather_rows_{}", self.act.suffix()),
            n_rows,
            256,
            &[hidden.arg(), rowsb.arg(), sel.arg(), Arg::I32(d as i32)],
        )?;
        let logits = Buf::new(gpu, r * vocab * 4, &what("logits"))?;
        let head = self.head.as_ref().unwrap_or(&self.embed);
        self.gemm(head, vocab, d, &sel, &logits, r)?;
        logits.to_f32(r * vocab)
    }

    /// log p(targets[i] | the context of row rows[i] of `hidden`) for every
    /// i: the LM head on those rows only, with an f32 log-softmax over
    /// vocabulary chunks of at most `chunk` ids (never a `(rows, vocab)` array).
    pub fn head_logprobs(
        &self,
        hidden: &Buf,
        rows: &[i32],
        targets: &[u32],
        chunk: usize,
    ) -> Result<Vec<f64>> {
        let r = rows.len();
        if r == 0 {
            return Ok(Vec::new());
        }
        let c = &self.config;
        let (d, vocab, a) = (c.d_model, c.vocab_size, self.act.bytes());
        let gpu = &self.gpu;
        let sfx = self.act.suffix();
        let what = |x: &str| format!("allocating {x} for {r} target rows");
        let tg: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
        let rowsb = Buf::from_i32(gpu, rows, &what("row indices"))?;
        let tgb = Buf::from_i32(gpu, &tg, &what("targets"))?;
        let sel = Buf::new(gpu, r * d * a, &what("hidden rows"))?;
        let n_rows =
            u32::try_from(r).map_err(|_| Error::gpu(gpu.name(), "the LM head", "too many rows"))?;
        gpu.launch(
            &format!("gather_rows_{sfx}"),
            n_rows,
            256,
            &[hidden.arg(), rowsb.arg(), sel.arg(), Arg::I32(d as i32)],
        )?;
        let run_max = Buf::new(gpu, r * 4, &what("running maxima"))?;
        let run_sum = Buf::new(gpu, r * 8, &what("running sums"))?;
        let tl = Buf::new(gpu, r * 4, &what("target logits"))?;
        gpu.launch(
            "logsumexp_init",
            blocks_for(r, 256, "the LM head", gpu.as_ref())?,
            256,
            &[run_max.arg(), run_sum.arg(), tl.arg(), Arg::I32(r as i32)],
        )?;
        let chunk = chunk.clamp(1, vocab);
        let logits = Buf::new(gpu, r * chunk * 4, &what("a chunk of logits"))?;
        let head = self.head.as_ref().unwrap_or(&self.embed);
        let mut v0 = 0;
        while v0 < vocab {
            let width = chunk.min(vocab - v0);
            gpu.gemm(&Gemm {
                n_out: width,
                n_tok: r,
                n_in: d,
                w: head.at(v0 * d * a),
                x: sel.ptr,
                y: logits.ptr,
                ldy: width,
                ab: self.act,
            })?;
            gpu.launch(
                "logsumexp_chunk",
                n_rows,
                256,
                &[
                    logits.arg(),
                    Arg::I32(width as i32),
                    Arg::I32(v0 as i32),
                    tgb.arg(),
                    run_max.arg(),
                    run_sum.arg(),
                    tl.arg(),
                ],
            )?;
            v0 += width;
        }
        let (m, s, t) = (run_max.to_f32(r)?, run_sum.to_f64(r)?, tl.to_f32(r)?);
        Ok((0..r)
            .map(|i| t[i] as f64 - (m[i] as f64 + s[i].ln()))
            .collect())
    }
}
