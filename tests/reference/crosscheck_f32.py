#!/usr/bin/env python3
"""Cross-check reference.py against llama.cpp on a *dequantized* copy of a GGUF.

The gap between llama.cpp on a Q4_1 model and the float64 reference mixes two
things: errors of the reference (there should be none) and llama.cpp's own
arithmetic (activations quantized to Q8_0/Q8_1 for the quantized matmuls, F16
KV cache). This script removes llama.cpp's shortcuts: it writes a copy of the
model whose every tensor is the float32 dequantization of the original (so the
weights are exactly those reference.py uses), runs llama.cpp on it with an F32
KV cache, and compares with tests/data/reference_f64.json. What remains is
float32-vs-float64 rounding, which should be ~1e-4 nats or less.

CLI:
    python3 tests/reference/crosscheck_f32.py \
        [--model fixtures/SmolLM2-135M-Instruct.Q4_1.gguf] \
        [--f32-out fixtures/SmolLM2-135M-Instruct.dequant-f32.gguf] \
        [--reference tests/data/reference_f64.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def write_dequantized(src: str, dst: str) -> None:
    """Copy GGUF `src` to `dst` with every tensor dequantized to F32 (metadata kept)."""
    import gguf
    from gguf.quants import dequantize
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), vtype)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "fixtures", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--f32-out", default=os.path.join(ROOT, "fixtures", "SmolLM2-135M-Instruct.dequant-f32.gguf"))
    ap.add_argument("--reference", default=os.path.join(ROOT, "tests", "data", "reference_f64.json"))
    args = ap.parse_args(argv)

    import llama_cpp
    if not os.path.exists(args.f32_out):
        write_dequantized(args.model, args.f32_out)
    with open(args.reference) as f:
        ref = json.load(f)

    llm = llama_cpp.Llama(model_path=args.f32_out, n_ctx=4096, logits_all=True, n_threads=2,
                          n_batch=512, type_k=0, type_v=0, verbose=False)   # 0 = GGML_TYPE_F32
    diffs = []
    for seg in ref["segments"]:
        ids = seg["ids"]
        llm.reset()
        llm.eval(ids)
        x = np.array(llm.scores[: len(ids)], dtype=np.float64)              # [T, V]
        x -= x.max(axis=1, keepdims=True)
        ls = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        cpp = np.array([ls[i - 1, ids[i]] for i in range(1, len(ids))])
        diffs.append(np.abs(cpp - np.array(seg["logprobs"][1:])))
    d = np.concatenate(diffs)
    print(f"llama.cpp {llama_cpp.__version__} on dequantized F32 weights, F32 KV cache, vs float64 "
          f"reference: {len(d)} tokens, mean|d| {d.mean():.2e}, max|d| {d.max():.2e} "
          f"(reference rounded to 1e-6)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
