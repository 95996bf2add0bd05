#!/usr/bin/env python3
"""Write a tiny RANDOM Mistral-architecture model as GGUF (F32 and F16) and as an HF folder.

All three copies hold the same float32 weights (the F16 GGUF rounds them to
float16). The sliding window (16) is shorter than the test texts, so a correct
engine must apply it. The vocabulary is SmolLM2's: the tokenizer.* metadata
keys are copied from the fixture GGUF, so token ids are the same.

    vocab V=49152, d_model D=64, layers L=2, heads H=4, kv heads Hkv=2,
    head_dim hd=16, d_ff F=128, rope theta 10000, rms eps 1e-5, window 16,
    separate (untied) output head.

Layouts
-------
HF (model.safetensors, F32): the original Mistral/LLaMA layout, RoPE rotates
the pairs (i, i + hd/2) of each head ("rotate half").
GGUF: tensors named as llama.cpp names them, architecture "llama" (llama.cpp's
convert_hf_to_gguf.py converts MistralForCausalLM to "llama"), window in the
generic key `llama.attention.sliding_window`. The rows of attn_q / attn_k are
permuted within each head so that RoPE rotates adjacent pairs (2i, 2i+1):
GGUF row 2i = HF row i, GGUF row 2i+1 = HF row i + hd/2 (see `permute_qk`).
Note: llama.cpp itself ignores the sliding window for the "llama" architecture,
so llama.cpp's log-probs on model.gguf match the reference run with --no-window.

CLI:
    python3 tests/reference/make_tiny_mistral.py --out fixtures/mistral-tiny \
        [--vocab-from fixtures/SmolLM2-135M-Instruct.Q4_1.gguf] [--seed 20240601] [--no-verify]
        [--write-reference tests/data/mistral_tiny_f64.json]

writes  OUT/model.gguf  OUT/model-f16.gguf  OUT/hf/{config.json, model.safetensors}
and then verifies with reference.py that the GGUF and HF copies agree (< 1e-9)
on a sequence longer than the window, and that the window changes the result.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

CONFIG = dict(
    vocab_size=49152, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, intermediate_size=128, rope_theta=10000.0,
    rms_norm_eps=1e-5, sliding_window=16, max_position_embeddings=512,
)


# --------------------------------------------------------------------------
# Random weights (HF layout, float32)
# --------------------------------------------------------------------------

def make_weights(seed: int) -> dict:
    """Random float32 weights named and laid out as in an HF Mistral checkpoint.

    Matrices are N(0, 1/in_features) so activations stay O(1); norm weights are
    1 + N(0, 0.1^2) so that a missing norm weight would be noticed.
    """
    c = CONFIG
    V, D, F = c["vocab_size"], c["hidden_size"], c["intermediate_size"]
    H, Hkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    rng = np.random.default_rng(seed)

    def mat(rows, cols, gain=1.0):
        return (rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((V, D)).astype(np.float32)}   # [V, D]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(D)                                          # [D]
        w[p + "self_attn.q_proj.weight"] = mat(H * hd, D, 2.0)                            # [H*hd, D]
        w[p + "self_attn.k_proj.weight"] = mat(Hkv * hd, D, 2.0)                          # [Hkv*hd, D]
        w[p + "self_attn.v_proj.weight"] = mat(Hkv * hd, D)                               # [Hkv*hd, D]
        w[p + "self_attn.o_proj.weight"] = mat(D, H * hd)                                 # [D, H*hd]
        w[p + "post_attention_layernorm.weight"] = norm(D)                                # [D]
        w[p + "mlp.gate_proj.weight"] = mat(F, D)                                         # [F, D]
        w[p + "mlp.up_proj.weight"] = mat(F, D)                                           # [F, D]
        w[p + "mlp.down_proj.weight"] = mat(D, F)                                         # [D, F]
    w["model.norm.weight"] = norm(D)                                                      # [D]
    w["lm_head.weight"] = mat(V, D, 3.0)                                                  # [V, D]
    return w


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF (rotate-half) rows -> GGUF (interleaved) rows, per head.

    w: [n_head*hd, D]. Within each head the rows [r_0..r_{hd/2-1}, r_{hd/2}..r_{hd-1}]
    become [r_0, r_{hd/2}, r_1, r_{hd/2+1}, ...]. Same shape out.
    """
    rows, cols = w.shape
    hd = rows // n_head
    return w.reshape(n_head, 2, hd // 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


# --------------------------------------------------------------------------
# HF folder
# --------------------------------------------------------------------------

def write_safetensors(path: str, tensors: dict) -> None:
    """Write {name: float32 ndarray} as a .safetensors file (numpy + json only)."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)                      # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_hf(folder: str, w: dict) -> None:
    """config.json (model_type mistral) + model.safetensors (F32, HF layout)."""
    os.makedirs(folder, exist_ok=True)
    cfg = {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
           "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32",
           "bos_token_id": 1, "eos_token_id": 2, "attention_dropout": 0.0,
           "initializer_range": 0.02, "use_cache": True, **CONFIG}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(folder, "model.safetensors"), w)


# --------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------

def copy_tokenizer_kv(writer, vocab_gguf: str) -> None:
    """Copy every tokenizer.* key (vocab, merges, special ids, template) from another GGUF."""
    import gguf
    reader = gguf.GGUFReader(vocab_gguf)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), vtype)


def write_gguf(path: str, w: dict, vocab_gguf: str, f16: bool) -> None:
    """Write the weights as a llama-architecture GGUF (2-D tensors F16 when f16)."""
    import gguf
    c = CONFIG
    H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("mistral-tiny-random")
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(H)
    writer.add_head_count_kv(Hkv)
    writer.add_rope_freq_base(c["rope_theta"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    writer.add_rope_dimension_count(c["head_dim"])
    writer.add_vocab_size(c["vocab_size"])
    writer.add_sliding_window(c["sliding_window"])           # llama.attention.sliding_window
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    copy_tokenizer_kv(writer, vocab_gguf)

    def put(name, a):
        if f16 and a.ndim == 2:
            a = a.astype(np.float16)
        writer.add_tensor(name, np.ascontiguousarray(a))

    put("token_embd.weight", w["model.embed_tokens.weight"])                              # [V, D]
    for i in range(c["num_hidden_layers"]):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        put(b + "attn_norm.weight", w[p + "input_layernorm.weight"])
        put(b + "attn_q.weight", permute_qk(w[p + "self_attn.q_proj.weight"], H))
        put(b + "attn_k.weight", permute_qk(w[p + "self_attn.k_proj.weight"], Hkv))
        put(b + "attn_v.weight", w[p + "self_attn.v_proj.weight"])
        put(b + "attn_output.weight", w[p + "self_attn.o_proj.weight"])
        put(b + "ffn_norm.weight", w[p + "post_attention_layernorm.weight"])
        put(b + "ffn_gate.weight", w[p + "mlp.gate_proj.weight"])
        put(b + "ffn_up.weight", w[p + "mlp.up_proj.weight"])
        put(b + "ffn_down.weight", w[p + "mlp.down_proj.weight"])
    put("output_norm.weight", w["model.norm.weight"])
    put("output.weight", w["lm_head.weight"])

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------

def verify(out: str, seed: int) -> None:
    """GGUF == HF (< 1e-9) on 80 tokens; the window matters; F16 is close."""
    sys.path.insert(0, HERE)
    import reference as R
    ids = np.random.default_rng(seed + 1).integers(3, CONFIG["vocab_size"], 80).tolist()
    W = CONFIG["sliding_window"]

    g = R.load_model(os.path.join(out, "model.gguf"))
    hf = R.load_model(os.path.join(out, "hf"))
    g16 = R.load_model(os.path.join(out, "model-f16.gguf"))
    assert g.config.sliding_window == W and hf.config.sliding_window == W

    lp_g = np.array(R.token_logprobs(g, ids)[1:])
    lp_hf = np.array(R.token_logprobs(hf, ids)[1:])
    lp_16 = np.array(R.token_logprobs(g16, ids)[1:])
    lp_full = np.array(R.token_logprobs(g, ids, window=0)[1:])
    d_hf = np.abs(lp_g - lp_hf).max()
    d_16 = np.abs(lp_g - lp_16).max()
    # lp index k scores ids[k+1], predicted from position k; positions < W see no difference.
    d_early = np.abs(lp_g[:W] - lp_full[:W]).max()
    d_late = np.abs(lp_g[W:] - lp_full[W:]).mean()
    print(f"verify: {len(ids)} tokens, window {W}: max|gguf-hf| = {d_hf:.2e}, "
          f"max|f32-f16| = {d_16:.2e}, window off: max|d| first {W} = {d_early:.2e}, "
          f"mean|d| after = {d_late:.3f}, mean lp {lp_g.mean():.3f}", file=sys.stderr)
    assert d_hf < 1e-9, d_hf
    assert d_early < 1e-9, d_early
    assert d_late > 1e-2, d_late
    assert d_16 < 0.05, d_16

    try:
        import llama_cpp
    except ImportError:
        return
    llm = llama_cpp.Llama(os.path.join(out, "model.gguf"), n_ctx=256, logits_all=True,
                          n_threads=2, type_k=0, type_v=0, verbose=False)   # F32 KV cache
    llm.eval(ids)
    x = np.array(llm.scores[: len(ids)], dtype=np.float64)
    x -= x.max(1, keepdims=True)
    ls = x - np.log(np.exp(x).sum(1, keepdims=True))
    lp_cpp = np.array([ls[i - 1, ids[i]] for i in range(1, len(ids))])
    print(f"verify: llama.cpp {llama_cpp.__version__} on model.gguf, F32 KV (ignores the window): "
          f"max|cpp - ref(no window)| = {np.abs(lp_cpp - lp_full).max():.2e}, "
          f"max|cpp - ref(window)| = {np.abs(lp_cpp - lp_g).max():.2e}", file=sys.stderr)


def write_reference(out: str, golden: str, max_tokens: int = 256) -> dict:
    """Float64 log-probs of the tiny model on the fidelity ids (first `max_tokens` of each segment).

    Writes {"segments": [{"ids", "logprobs", "logprobs_no_window"}], ...} (6 decimals),
    so engine tests can check the sliding window without running Python.
    """
    sys.path.insert(0, HERE)
    import reference as R
    with open(golden) as f:
        segs = [s["ids"][:max_tokens] for s in json.load(f)["segments"]]
    m = R.load_model(os.path.join(out, "model.gguf"))
    rnd = lambda lps: [None] + [round(x, 6) for x in lps[1:]]
    result = {"model": "fixtures/mistral-tiny (tests/reference/make_tiny_mistral.py)",
              "config": CONFIG, "seed": None,
              "segments": [{"ids": ids, "logprobs": rnd(R.token_logprobs(m, ids)),
                            "logprobs_no_window": rnd(R.token_logprobs(m, ids, window=0))}
                           for ids in segs]}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "fixtures", "mistral-tiny"))
    ap.add_argument("--vocab-from", default=os.path.join(ROOT, "fixtures", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--write-reference", metavar="JSON", default=None,
                    help="also write float64 log-probs on the fidelity ids, e.g. tests/data/mistral_tiny_f64.json")
    ap.add_argument("--golden", default=os.path.join(ROOT, "tests", "data", "llamacpp_golden.json"),
                    help="source of the token ids for --write-reference")
    args = ap.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    w = make_weights(args.seed)
    write_gguf(os.path.join(args.out, "model.gguf"), w, args.vocab_from, f16=False)
    write_gguf(os.path.join(args.out, "model-f16.gguf"), w, args.vocab_from, f16=True)
    write_hf(os.path.join(args.out, "hf"), w)
    print(f"wrote {args.out}/model.gguf, model-f16.gguf, hf/", file=sys.stderr)
    if not args.no_verify:
        verify(args.out, args.seed)
    if args.write_reference:
        result = write_reference(args.out, args.golden)
        result["seed"] = args.seed
        with open(args.write_reference, "w") as f:
            json.dump(result, f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {args.write_reference}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
