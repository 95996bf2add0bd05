#!/usr/bin/env python3
"""Independent float64 numpy reference forward pass for LLaMA-family models.

This is the oracle the Rust engine is tested against. It is written to be read:
every step of the forward pass is a few lines of numpy, in float64, with the
shape of every array in a comment (in the spirit of llama2.c's run.c).

Supported models
----------------
* GGUF files (llama.cpp), architecture "llama" or "mistral" (any arch whose keys
  follow the `{arch}.*` llama layout). Every tensor is dequantized with
  `gguf.quants.dequantize` (F32, F16, Q4_0, Q4_1, Q8_0, K-quants, ...) and then
  widened to float64. llama.cpp's converter permutes the rows of the Q and K
  projections so that RoPE rotates *adjacent* pairs (2i, 2i+1) of every head
  ("NORM" rope in llama.cpp); we therefore use interleaved RoPE for GGUF.
* Hugging Face folders: config.json + model.safetensors (or a sharded
  model.safetensors.index.json), parsed with numpy only. HF keeps the original
  layout in which RoPE rotates the pairs (i, i + head_dim/2) ("rotate half").

The maths
---------
    h = embed[ids]                                          # [T, D]
    for each layer:
        x = rmsnorm(h) * attn_norm                          # [T, D]
        q, k, v = x Wq^T, x Wk^T, x Wv^T                    # [T, H*hd], [T, Hkv*hd] x2
        q, k = rope(q), rope(k)
        a = softmax(q k^T / sqrt(hd) + causal/sliding mask) v   (GQA: head h uses kv head h // (H/Hkv))
        h = h + a Wo^T
        x = rmsnorm(h) * ffn_norm
        h = h + Wdown^T (silu(x Wgate^T) * (x Wup^T))
    logits = rmsnorm(h) * out_norm @ Wout^T                 # [T, V]
    logprobs[i] = log_softmax(logits[i-1])[ids[i]]          # nats, float64

Sliding window (Mistral): query position i attends to key position j iff
j <= i and i - j < window.

CLI
---
    python3 tests/reference/reference.py --model PATH --ids-json FILE --out FILE

PATH is a .gguf file or an HF folder. FILE holds {"sequences": [[id, ...], ...]}.
The output holds {"logprobs": [[null, lp1, lp2, ...], ...]} where
logprobs[s][i] = log p(ids[i] | ids[:i]) in nats (float64), plus "model",
"config" and "seconds" for the record. `--no-window` disables the sliding window
(used to check that the window matters).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
from dataclasses import dataclass, field, asdict

import numpy as np


# --------------------------------------------------------------------------
# Model description
# --------------------------------------------------------------------------

@dataclass
class Config:
    """Hyper-parameters of a LLaMA-family decoder."""
    n_layers: int            # L
    d_model: int             # D
    n_heads: int             # H   (query heads)
    n_kv_heads: int          # Hkv (key/value heads; H % Hkv == 0)
    head_dim: int            # hd
    d_ff: int                # F
    vocab_size: int          # V
    rope_theta: float        # RoPE base
    rms_eps: float           # RMSNorm epsilon
    rope_style: str          # "interleaved" (GGUF, pairs 2i,2i+1) or "half" (HF, pairs i,i+hd/2)
    sliding_window: int = 0  # 0 = full causal attention
    rope_linear_factor: float = 1.0   # "linear" rope scaling: positions are divided by this
    # LLaMA-3 style per-frequency divisors, [hd/2]; None = no scaling.
    rope_freq_factors: list | None = field(default=None, repr=False)


@dataclass
class Layer:
    """Weights of one transformer block (all float64, PyTorch (out, in) layout)."""
    attn_norm: np.ndarray    # [D]
    wq: np.ndarray           # [H*hd, D]
    wk: np.ndarray           # [Hkv*hd, D]
    wv: np.ndarray           # [Hkv*hd, D]
    wo: np.ndarray           # [D, H*hd]
    ffn_norm: np.ndarray     # [D]
    w_gate: np.ndarray       # [F, D]
    w_up: np.ndarray         # [F, D]
    w_down: np.ndarray       # [D, F]


@dataclass
class Model:
    config: Config
    tok_embd: np.ndarray     # [V, D]
    layers: list             # L x Layer
    out_norm: np.ndarray     # [D]
    output: np.ndarray       # [V, D] (the same array as tok_embd when tied)


# --------------------------------------------------------------------------
# GGUF loading
# --------------------------------------------------------------------------

def _gguf_value(reader, key, default=None):
    """Return the python value of GGUF metadata `key`, or `default` when absent."""
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def load_gguf(path: str) -> Model:
    """Load a GGUF file, dequantizing every tensor to float64.

    Tensor shapes follow numpy/PyTorch order (rows = output features), which is
    the reverse of ggml's `ne` order: e.g. blk.N.attn_q.weight is [H*hd, D].
    """
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(path)
    arch = _gguf_value(reader, "general.architecture")
    k = lambda name, default=None: _gguf_value(reader, f"{arch}.{name}", default)

    d_model = int(k("embedding_length"))
    n_heads = int(k("attention.head_count"))
    n_kv = k("attention.head_count_kv", n_heads)
    head_dim = int(k("attention.key_length", d_model // n_heads))

    tensors = {t.name: t for t in reader.tensors}

    def get(name) -> np.ndarray:
        t = tensors[name]
        return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64)

    tok_embd = get("token_embd.weight")                              # [V, D]
    vocab = int(k("vocab_size", tok_embd.shape[0]))

    freq_factors = None
    if "rope_freqs.weight" in tensors:                               # LLaMA-3.1 rope scaling
        freq_factors = get("rope_freqs.weight").reshape(-1).tolist()  # [hd/2]
    linear = 1.0
    if k("rope.scaling.type") == "linear":
        linear = float(k("rope.scaling.factor", 1.0))

    rope_dim = int(k("rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise NotImplementedError(f"partial rotary (rope dim {rope_dim} != head dim {head_dim})")

    config = Config(
        n_layers=int(k("block_count")),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=int(n_kv),
        head_dim=head_dim,
        d_ff=int(k("feed_forward_length")),
        vocab_size=vocab,
        rope_theta=float(k("rope.freq_base", 10000.0)),
        rms_eps=float(k("attention.layer_norm_rms_epsilon")),
        rope_style="interleaved",
        sliding_window=int(k("attention.sliding_window", 0) or 0),
        rope_linear_factor=linear,
        rope_freq_factors=freq_factors,
    )

    layers = []
    for i in range(config.n_layers):
        p = f"blk.{i}."
        layers.append(Layer(
            attn_norm=get(p + "attn_norm.weight"),
            wq=get(p + "attn_q.weight"),
            wk=get(p + "attn_k.weight"),
            wv=get(p + "attn_v.weight"),
            wo=get(p + "attn_output.weight"),
            ffn_norm=get(p + "ffn_norm.weight"),
            w_gate=get(p + "ffn_gate.weight"),
            w_up=get(p + "ffn_up.weight"),
            w_down=get(p + "ffn_down.weight"),
        ))
    output = get("output.weight") if "output.weight" in tensors else tok_embd
    return Model(config, tok_embd, layers, get("output_norm.weight"), output)


# --------------------------------------------------------------------------
# Hugging Face (config.json + safetensors) loading, numpy only
# --------------------------------------------------------------------------

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8}


def read_safetensors(path: str) -> dict:
    """Parse a .safetensors file into {name: float64 ndarray}.

    Layout: u64 little-endian header size N, N bytes of JSON header
    {name: {"dtype", "shape", "data_offsets": [begin, end]}}, then the data
    (offsets are relative to the end of the header).
    """
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = blob[base + begin: base + end]
        dtype = info["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(_ST_DTYPES[dtype]).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


def load_hf(folder: str) -> Model:
    """Load an HF LLaMA/Mistral folder (config.json + safetensors) to float64."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        w = {}
        for s in shards:
            w.update(read_safetensors(os.path.join(folder, s)))
    else:
        w = read_safetensors(os.path.join(folder, "model.safetensors"))

    d_model = cfg["hidden_size"]
    n_heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or d_model // n_heads

    linear, freq_factors = 1.0, None
    rs = cfg.get("rope_scaling") or {}
    rtype = rs.get("rope_type", rs.get("type"))
    if rtype == "linear":
        linear = float(rs["factor"])
    elif rtype == "llama3":
        freq_factors = llama3_freq_factors(head_dim, cfg.get("rope_theta", 10000.0), rs)
    elif rtype not in (None, "default"):
        raise NotImplementedError(f"rope_scaling {rs}")

    window = cfg.get("sliding_window") or 0
    if cfg.get("use_sliding_window") is False:   # Qwen2-style switch; Mistral has none
        window = 0

    config = Config(
        n_layers=cfg["num_hidden_layers"],
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
        head_dim=head_dim,
        d_ff=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"],
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_style="half",
        sliding_window=int(window),
        rope_linear_factor=linear,
        rope_freq_factors=freq_factors,
    )
    layers = []
    for i in range(config.n_layers):
        p = f"model.layers.{i}."
        layers.append(Layer(
            attn_norm=w[p + "input_layernorm.weight"],
            wq=w[p + "self_attn.q_proj.weight"],
            wk=w[p + "self_attn.k_proj.weight"],
            wv=w[p + "self_attn.v_proj.weight"],
            wo=w[p + "self_attn.o_proj.weight"],
            ffn_norm=w[p + "post_attention_layernorm.weight"],
            w_gate=w[p + "mlp.gate_proj.weight"],
            w_up=w[p + "mlp.up_proj.weight"],
            w_down=w[p + "mlp.down_proj.weight"],
        ))
    tok_embd = w["model.embed_tokens.weight"]
    output = w.get("lm_head.weight", tok_embd) if not cfg.get("tie_word_embeddings", False) else tok_embd
    return Model(config, tok_embd, layers, w["model.norm.weight"], output)


def llama3_freq_factors(head_dim: int, theta: float, rs: dict) -> list:
    """LLaMA-3.1 rope scaling as per-frequency divisors, [hd/2].

    The frequency of pair i, base^(-2i/hd), is divided by the returned factor:
    1 for short wavelengths, `factor` for long ones, and a smooth blend between.
    """
    factor = rs.get("factor", 8.0)
    low, high = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old_ctx = rs.get("original_max_position_embeddings", 8192)
    out = []
    for i in range(head_dim // 2):
        freq = theta ** (-2.0 * i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return out


def load_model(path: str) -> Model:
    """Load a GGUF file or an HF folder."""
    if os.path.isdir(path):
        return load_hf(path)
    return load_gguf(path)


# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------

def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x: [T, D], w: [D] -> x / sqrt(mean(x^2) + eps) * w, [T, D]."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_angles(cfg: Config, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the rotation angles, each [T, hd/2].

    angle[t, i] = (pos_t / linear_factor) * theta^(-2i/hd) / freq_factor[i].
    """
    hd = cfg.head_dim
    inv_freq = cfg.rope_theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)   # [hd/2]
    if cfg.rope_freq_factors is not None:
        inv_freq = inv_freq / np.asarray(cfg.rope_freq_factors, dtype=np.float64)
    pos = positions.astype(np.float64) / cfg.rope_linear_factor                     # [T]
    ang = pos[:, None] * inv_freq[None, :]                                          # [T, hd/2]
    return np.cos(ang), np.sin(ang)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, style: str) -> np.ndarray:
    """Rotate x: [T, nh, hd] by the angles cos/sin: [T, hd/2]; returns [T, nh, hd].

    style "interleaved": pair i is (x[2i], x[2i+1])      (GGUF / llama.cpp NORM)
    style "half":        pair i is (x[i], x[i + hd/2])   (HF rotate_half)
    """
    hd = x.shape[-1]
    c, s = cos[:, None, :], sin[:, None, :]                                         # [T, 1, hd/2]
    if style == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
    elif style == "half":
        a, b = x[..., : hd // 2], x[..., hd // 2:]
    else:
        raise ValueError(style)
    ra, rb = a * c - b * s, a * s + b * c                                           # [T, nh, hd/2]
    out = np.empty_like(x)
    if style == "interleaved":
        out[..., 0::2], out[..., 1::2] = ra, rb
    else:
        out[..., : hd // 2], out[..., hd // 2:] = ra, rb
    return out


def attention_mask(T: int, window: int) -> np.ndarray:
    """Additive mask [T, T]: 0 where query i may see key j, -inf elsewhere.

    Causal: j <= i. With a sliding window W > 0 also i - j < W.
    """
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    allowed = j <= i
    if window > 0:
        allowed &= (i - j) < window
    return np.where(allowed, 0.0, -np.inf)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grouped-query attention.

    q: [T, H, hd], k, v: [T, Hkv, hd], mask: [T, T] -> [T, H*hd].
    Query head h reads key/value head h // (H / Hkv).
    """
    T, H, hd = q.shape
    group = H // k.shape[1]
    out = np.empty((T, H, hd))
    scale = 1.0 / math.sqrt(hd)
    for h in range(H):
        kh, vh = k[:, h // group, :], v[:, h // group, :]                           # [T, hd]
        scores = q[:, h, :] @ kh.T * scale + mask                                   # [T, T]
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)                                          # softmax rows
        out[:, h, :] = p @ vh                                                       # [T, hd]
    return out.reshape(T, H * hd)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), elementwise (stable for large |x|)."""
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))


# --------------------------------------------------------------------------
# Forward pass and log-probs
# --------------------------------------------------------------------------

def forward_hidden(model: Model, ids: list[int], window: int | None = None) -> np.ndarray:
    """Run the decoder stack; returns the final-normed hidden states [T, D].

    `window` overrides the model's sliding window (0 = none).
    """
    cfg = model.config
    T = len(ids)
    H, Hkv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    cos, sin = rope_angles(cfg, np.arange(T))                                       # [T, hd/2] x2
    mask = attention_mask(T, cfg.sliding_window if window is None else window)      # [T, T]

    h = model.tok_embd[np.asarray(ids, dtype=np.int64)]                             # [T, D]
    for layer in model.layers:
        x = rmsnorm(h, layer.attn_norm, cfg.rms_eps)                                # [T, D]
        q = (x @ layer.wq.T).reshape(T, H, hd)                                      # [T, H, hd]
        k = (x @ layer.wk.T).reshape(T, Hkv, hd)                                    # [T, Hkv, hd]
        v = (x @ layer.wv.T).reshape(T, Hkv, hd)                                    # [T, Hkv, hd]
        q = apply_rope(q, cos, sin, cfg.rope_style)
        k = apply_rope(k, cos, sin, cfg.rope_style)
        h = h + attention(q, k, v, mask) @ layer.wo.T                               # [T, D]

        x = rmsnorm(h, layer.ffn_norm, cfg.rms_eps)                                 # [T, D]
        gate = x @ layer.w_gate.T                                                   # [T, F]
        up = x @ layer.w_up.T                                                       # [T, F]
        h = h + (silu(gate) * up) @ layer.w_down.T                                  # [T, D]
    return rmsnorm(h, model.out_norm, cfg.rms_eps)                                  # [T, D]


def token_logprobs(model: Model, ids: list[int], window: int | None = None,
                   chunk: int = 256) -> list:
    """[None, lp_1, ..., lp_{T-1}] with lp_i = log p(ids[i] | ids[:i]) in nats.

    The LM head and log-softmax run over `chunk` positions at a time so that a
    full [T, V] logits array is never held.
    """
    T = len(ids)
    out = [None]
    if T < 2:
        return out
    hidden = forward_hidden(model, ids, window)                                     # [T, D]
    targets = np.asarray(ids[1:], dtype=np.int64)                                   # [T-1]
    for s in range(0, T - 1, chunk):
        e = min(s + chunk, T - 1)
        logits = hidden[s:e] @ model.output.T                                       # [n, V]
        m = logits.max(axis=-1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=-1))                     # [n]
        picked = logits[np.arange(e - s), targets[s:e]]                             # [n]
        out.extend((picked - lse).tolist())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="GGUF file or HF folder")
    ap.add_argument("--ids-json", required=True, help='{"sequences": [[ids...], ...]}')
    ap.add_argument("--out", required=True, help='output JSON {"logprobs": [[null, ...], ...]}')
    ap.add_argument("--no-window", action="store_true", help="ignore the sliding window")
    args = ap.parse_args(argv)

    t0 = time.time()
    model = load_model(args.model)
    t_load = time.time() - t0
    with open(args.ids_json) as f:
        seqs = json.load(f)["sequences"]
    for s in seqs:
        bad = [t for t in s if not 0 <= t < model.tok_embd.shape[0]]
        if bad:
            raise SystemExit(f"token ids out of range: {bad[:5]}")
    t1 = time.time()
    window = 0 if args.no_window else None
    lps = [token_logprobs(model, s, window) for s in seqs]
    t_fwd = time.time() - t1
    n_tok = sum(len(s) for s in seqs)
    cfg = asdict(model.config)
    cfg.pop("rope_freq_factors")
    result = {"model": os.path.basename(os.path.normpath(args.model)), "config": cfg,
              "no_window": args.no_window, "load_seconds": round(t_load, 3),
              "forward_seconds": round(t_fwd, 3), "tokens": n_tok, "logprobs": lps}
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(f"reference: {len(seqs)} sequences, {n_tok} tokens, load {t_load:.1f}s, "
          f"forward {t_fwd:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
