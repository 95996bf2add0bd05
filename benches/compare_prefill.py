#!/usr/bin/env python3
"""Prefill speed of main-score against its peers, side by side, in one run.

Every engine computes the log-probability of every token of the same real
text (tests/data/fidelity.txt, 8 segments of 375-850 tokens, each scored as
its own sequence), with the same thread count, on the same machine:

  main-score   `main-score logprobs --report-speed` (--precision fast and exact;
               the default is fast on CPUs with AVX-512 VNNI or AVX-VNNI, exact elsewhere)
  llama.cpp    llama-cpp-python, same GGUF, logits for every position
               (logits_all=True, as a scorer needs), log-softmax in numpy
  PyTorch      transformers on the dequantized F32 weights (fixtures/smollm2-f32)

GGUF types: the Q4_1 fixture and Q8_0 / F16 copies made by `main-score
quantize` (which also shows llama.cpp reads what we write).

Usage: benches/compare_prefill.py [--threads 2] [--types q4_1,q8_0,f16] [--repeat 2]
Needs: scripts/fetch-fixtures, scripts/setup-peers (llama-cpp-python, torch, transformers).
"""
import argparse, json, os, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FX = os.environ.get("MAIN_FIXTURES", os.path.join(ROOT, "fixtures"))
MODEL = os.path.join(FX, "SmolLM2-135M-Instruct.Q4_1.gguf")
SCORE = os.path.join(ROOT, "target", "release", "main-score")


def segments():
    with open(os.path.join(ROOT, "tests", "data", "fidelity.txt"), encoding="utf-8", newline="") as f:
        return f.read().split("\n=====\n")


def gguf_for(ty):
    if ty == "q4_1":
        return MODEL
    path = os.path.join(FX, "bench", f"SmolLM2-135M-Instruct.{ty.upper()}.gguf")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        subprocess.run([SCORE, "quantize", MODEL, path, "--type", ty], check=True)
    return path


def bench_main(model, segs, threads, precision, repeat):
    """Best of `repeat` runs: total tokens / total forward seconds (load excluded)."""
    tmpdir = os.path.join(FX, "bench", "text")
    os.makedirs(tmpdir, exist_ok=True)
    best = None
    for _ in range(repeat):
        n_tok, secs = 0, 0.0
        for i, seg in enumerate(segs):
            p = os.path.join(tmpdir, f"seg{i}.txt")
            with open(p, "w", encoding="utf-8", newline="") as f:
                f.write(seg)
            cmd = [SCORE, "logprobs", "--model", model, "--text-file", p, "--threads", str(threads), "--report-speed"]
            cmd += ["--precision", precision]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rep = json.loads(out.stderr.strip().splitlines()[-1])
            n_tok += rep["tokens"]
            secs += rep["seconds"]
        best = max(best or 0, n_tok / secs)
    return best


def bench_llamacpp(model, segs, threads, repeat):
    import numpy as np
    from llama_cpp import Llama
    llm = Llama(model_path=model, n_ctx=4096, n_batch=1024, n_ubatch=1024, logits_all=True,
                n_threads=threads, n_threads_batch=threads, verbose=False)
    ids = [llm.tokenize(s.encode("utf-8"), add_bos=False, special=False) for s in segs]
    best = None
    for _ in range(repeat):
        n_tok, secs = 0, 0.0
        for toks in ids:
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(toks)
            logits = np.asarray(llm.scores[: len(toks) - 1], dtype=np.float32)
            m = logits.max(axis=1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
            _ = logits[np.arange(len(toks) - 1), toks[1:]] - lse
            secs += time.perf_counter() - t0
            n_tok += len(toks)
        best = max(best or 0, n_tok / secs)
    return best, ids


def bench_torch(ids, threads, repeat):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(os.path.join(FX, "smollm2-f32"), torch_dtype=torch.float32)
    model.eval()
    best = None
    for _ in range(repeat):
        n_tok, secs = 0, 0.0
        for toks in ids:
            x = torch.tensor([toks])
            t0 = time.perf_counter()
            with torch.inference_mode():
                logits = model(x).logits[0, :-1].float()
                _ = torch.log_softmax(logits, dim=-1).gather(1, x[0, 1:, None])
            secs += time.perf_counter() - t0
            n_tok += len(toks)
        best = max(best or 0, n_tok / secs)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default="q4_1,q8_0,f16")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "main-engine", "--bin", "main-score"],
                   cwd=ROOT, check=True)
    segs = segments()
    rows = []
    ids = None
    for ty in args.types.split(","):
        model = gguf_for(ty)
        fast = bench_main(model, segs, args.threads, "fast", args.repeat)
        exact = bench_main(model, segs, args.threads, "exact", args.repeat)
        llama, ids = bench_llamacpp(model, segs, args.threads, args.repeat)
        rows.append((ty, fast, exact, llama))
    torch_tps = None if args.no_torch else bench_torch(ids, args.threads, args.repeat)
    print(f"\nprefill tokens/s, {args.threads} threads, {sum(len(t) for t in ids)} tokens of real text in {len(ids)} sequences")
    print(f"{'weights':<8} {'main fast':>10} {'main exact':>11} {'llama.cpp':>10} {'fast/llama':>11} {'exact/llama':>12} {'fast/torch':>11} {'exact/torch':>12}")
    for ty, fast, exact, llama in rows:
        vs_torch = (f"{fast / torch_tps:>10.2f}x {exact / torch_tps:>11.2f}x" if torch_tps
                    else f"{'-':>11} {'-':>12}")
        print(f"{ty:<8} {fast:>10.0f} {exact:>11.0f} {llama:>10.0f} {fast / llama:>10.2f}x {exact / llama:>11.2f}x {vs_torch}")
    if torch_tps:
        print(f"PyTorch f32 (transformers, dequantized weights): {torch_tps:.0f} tokens/s")


if __name__ == "__main__":
    main()
