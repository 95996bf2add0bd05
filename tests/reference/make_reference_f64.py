#!/usr/bin/env python3
"""Float64 reference log-probs for the fidelity segments, and the llama.cpp gap.

Reads the token ids from tests/data/llamacpp_golden.json (so both sides score
exactly the same ids), runs reference.py's float64 forward pass on each
segment, writes tests/data/reference_f64.json and prints how far llama.cpp's
log-probs are from the float64 reference.

CLI:
    python3 tests/reference/make_reference_f64.py \
        [--model fixtures/SmolLM2-135M-Instruct.Q4_1.gguf] \
        [--golden tests/data/llamacpp_golden.json] [--out tests/data/reference_f64.json]

Output JSON (6 decimals):
    {"model": "...", "segments": [{"ids": [...], "logprobs": [null, ...]}, ...],
     "n_scored": N, "mean_logprob": ..., "pooled_ppl": ...,
     "vs_llamacpp": {"mean_abs_diff": ..., "max_abs_diff": ..., "llamacpp_pooled_ppl": ...}}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import reference  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "fixtures", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--golden", default=os.path.join(ROOT, "tests", "data", "llamacpp_golden.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "reference_f64.json"))
    args = ap.parse_args(argv)

    with open(args.golden) as f:
        golden = json.load(f)
    model = reference.load_model(args.model)

    t0 = time.time()
    segments, ref_all, gold_all = [], [], []
    for seg in golden["segments"]:
        lps = reference.token_logprobs(model, seg["ids"])
        segments.append({"ids": seg["ids"], "logprobs": [None] + [round(x, 6) for x in lps[1:]]})
        ref_all.extend(lps[1:])
        gold_all.extend(seg["logprobs"][1:])
    seconds = time.time() - t0

    ref = np.array(ref_all)                                                 # [N]
    gold = np.array(gold_all)                                               # [N]
    diff = np.abs(ref - gold)
    n = len(ref)
    per_segment = []
    for seg_ref, seg_gold in zip(segments, golden["segments"]):
        d = np.abs(np.array(seg_ref["logprobs"][1:]) - np.array(seg_gold["logprobs"][1:]))
        per_segment.append({"n": len(d), "mean_abs_diff": round(float(d.mean()), 6),
                            "max_abs_diff": round(float(d.max()), 6)})
    result = {
        "model": os.path.basename(args.model),
        "note": "float64 numpy reference (tests/reference/reference.py) on the ids of llamacpp_golden.json",
        "segments": segments,
        "n_scored": n,
        "mean_logprob": round(float(ref.mean()), 6),
        "pooled_ppl": round(math.exp(-ref.mean()), 6),
        "vs_llamacpp": {
            "llama_cpp_version": golden.get("llama_cpp_version"),
            "llamacpp_pooled_ppl": golden.get("pooled_ppl"),
            "mean_abs_diff": round(float(diff.mean()), 6),
            "max_abs_diff": round(float(diff.max()), 6),
            "p99_abs_diff": round(float(np.quantile(diff, 0.99)), 6),
            "per_segment": per_segment,
        },
    }
    with open(args.out, "w") as f:
        json.dump(result, f, separators=(",", ":"))
        f.write("\n")
    v = result["vs_llamacpp"]
    print(f"reference f64: {n} scored tokens in {seconds:.1f}s, pooled ppl {result['pooled_ppl']:.4f}; "
          f"llama.cpp pooled ppl {v['llamacpp_pooled_ppl']:.4f}; |delta| mean {v['mean_abs_diff']:.4f} "
          f"max {v['max_abs_diff']:.4f} p99 {v['p99_abs_diff']:.4f}", file=sys.stderr)
    for i, s in enumerate(per_segment):
        print(f"  segment {i}: n={s['n']} mean|d|={s['mean_abs_diff']:.4f} max|d|={s['max_abs_diff']:.4f}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
