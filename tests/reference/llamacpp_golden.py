#!/usr/bin/env python3
"""Golden token ids and log-probs from llama.cpp (via llama-cpp-python).

For every segment of tests/data/fidelity.txt (segments are separated by a line
"=====", i.e. text.split("\\n=====\\n")), this script records

* the token ids llama.cpp produces: Llama.tokenize(segment, add_bos=<the
  model's rule, GGUF tokenizer.ggml.add_bos_token>, special=False);
* the per-token log-probs log p(ids[i] | ids[:i]) in nats, computed from
  llama.cpp's logits with a float64 log-softmax (the first token has none);
* the pooled perplexity exp(-sum(lp) / n) over all scored tokens of all segments.

Each segment is evaluated on its own from an empty KV cache.

CLI:
    python3 tests/reference/llamacpp_golden.py \
        [--model fixtures/SmolLM2-135M-Instruct.Q4_1.gguf] \
        [--text tests/data/fidelity.txt] [--out tests/data/llamacpp_golden.json]

Output JSON (log-probs rounded to 5 decimals to keep the file small):
    {"llama_cpp_version": "...", "model": "...", "add_bos": false,
     "segment_separator": "\\n=====\\n",
     "segments": [{"ids": [...], "logprobs": [null, ...]}, ...],
     "n_scored": N, "mean_logprob": ..., "pooled_ppl": ...}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

SEPARATOR = "\n=====\n"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def read_segments(path: str) -> list[str]:
    """The fidelity text split into segments (bytes preserved: CR LF, tabs...)."""
    with open(path, "r", encoding="utf-8", newline="") as f:
        return f.read().split(SEPARATOR)


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """logits: [T, V] -> log-softmax of each row in float64, [T, V]."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def model_adds_bos(llm) -> bool:
    """The model's BOS rule: GGUF tokenizer.ggml.add_bos_token (llama.cpp default: true for SPM)."""
    v = llm.metadata.get("tokenizer.ggml.add_bos_token")
    if v is not None:
        return str(v).lower() == "true"
    return llm.metadata.get("tokenizer.ggml.model", "llama") == "llama"


def score_segment(llm, text: str, add_bos: bool) -> tuple[list[int], list]:
    """Tokenize and evaluate one segment; returns (ids, [None, lp_1, ...])."""
    ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float64)            # [T, V]
    ls = log_softmax_rows(logits)                                          # [T, V]
    lps = [None] + [float(ls[i - 1, ids[i]]) for i in range(1, len(ids))]
    return ids, lps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "fixtures", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--text", default=os.path.join(ROOT, "tests", "data", "fidelity.txt"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "llamacpp_golden.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import llama_cpp

    t0 = time.time()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=4096, logits_all=True,
                          n_threads=args.threads, n_batch=512, verbose=False)
    add_bos = model_adds_bos(llm)
    segments = []
    total, n = 0.0, 0
    for text in read_segments(args.text):
        ids, lps = score_segment(llm, text, add_bos)
        total += sum(lps[1:])
        n += len(lps) - 1
        segments.append({"ids": ids,
                         "logprobs": [None] + [round(x, 5) for x in lps[1:]]})
    result = {
        "llama_cpp_version": llama_cpp.__version__,
        "model": os.path.basename(args.model),
        "add_bos": add_bos,
        "n_ctx": 4096, "n_batch": 512, "n_threads": args.threads,
        "segment_separator": SEPARATOR,
        "segments": segments,
        "n_scored": n,
        "mean_logprob": round(total / n, 6),
        "pooled_ppl": round(math.exp(-total / n), 6),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, separators=(",", ":"))
        f.write("\n")
    print(f"llama.cpp {llama_cpp.__version__}: {len(segments)} segments, {n} scored tokens, "
          f"pooled ppl {result['pooled_ppl']:.4f}, {time.time() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
