#!/usr/bin/env python3
"""Pairs per second of `main-score score` against the two peers a user would
pick instead, on the same real pairs, in one run, same machine, same threads.

Every engine does the same work: the four views of each pair (DESIGN.md §2:
the model's chat template rendered with Jinja2, the REVERSE prompt, the
end-of-turn `<|im_end|>`), each view's full sequence evaluated and the mean
log-prob of its target tokens computed.

  main-score      `main-score score --threads N` (--precision exact, and fast: the
                  default on CPUs with AVX-512 VNNI);
                  wall time of the process minus its start-up (model load and
                  the scorer's shared prompt), measured on an empty input
  llama.cpp       llama-cpp-python on the same GGUF. Mode `batch` (default):
                  the low-level API, many views per llama_decode (one sequence
                  id each, n_batch = n_ubatch = --llama-batch tokens, unified KV
                  cache), logits requested only at the positions that predict
                  a target. Mode `eval`: the high-level `Llama` with
                  logits_all=True, reset + eval per view (what most scripts do)
  PyTorch         transformers on the dequantized F32 weights
                  (fixtures/smollm2-f32), CPU, the way Cherry-LLM and
                  Superfiltering score: batch 1 (full logits, log-softmax,
                  gather), and batched with right padding + attention mask
                  (--torch-batch sequences per call, sorted by length)

Views are tokenized once, up front, with llama.cpp's tokenizer (exactly as
tests/reference/render_views.py does); peers are not charged for it,
main-score is (it tokenizes, scores and writes JSONL inside the timed run).

tokens/s counts the tokens of the four full view sequences (prompt + target),
the same number for every engine, so it is pairs/s times a constant.
main-score computes fewer (views continue from a shared system prompt).
% of peak = tokens/s x 269 MFLOP/token / peak, where the f32 peak is
cores x 64 FLOP/cycle (AVX-512: two 16-wide FMA pipes) x clock (--ghz,
default: /proc/cpuinfo) and the int8 peak is 4x that (VNNI).

Usage:
  benches/compare_pairs.py [--pairs 100] [--stride 10] [--threads 2] [--repeat 1]
                           [--engines main,main-fast,llama,torch1,torchN]
                           [--json FILE]
Needs: scripts/fetch-fixtures, scripts/setup-peers. If `torch` cannot be
imported, the script re-runs itself with the peers' python
($MAIN_PEERS_VENV, default ~/.cache/main-peers).
The last line of stdout is the result table as one JSON object.
"""
import argparse, json, os, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FX = os.environ.get("MAIN_FIXTURES", os.path.join(ROOT, "fixtures"))
MODEL = os.path.join(FX, "SmolLM2-135M-Instruct.Q4_1.gguf")
HF_F32 = os.path.join(FX, "smollm2-f32")
PAIRS_FILE = os.path.join(FX, "alpaca_en_demo.jsonl")
SCORE = os.path.join(ROOT, "target", "release", "main-score")
MFLOP_PER_TOKEN = 269.0
ALL_ENGINES = "main,main-fast,llama,torch1,torchN"


def ensure_peers_python(engines):
    """Re-exec under the peers' venv when torch is needed but missing here."""
    if not any(e.startswith("torch") for e in engines):
        return
    try:
        import torch  # noqa: F401
        import llama_cpp  # noqa: F401
        return
    except ImportError:
        pass
    venv = os.environ.get("MAIN_PEERS_VENV", os.path.expanduser("~/.cache/main-peers"))
    py = os.path.join(venv, "bin", "python")
    # (A venv's python is often a link to this very interpreter: compare prefixes.)
    if os.path.exists(py) and os.path.realpath(venv) != os.path.realpath(sys.prefix) \
            and not os.environ.get("MAIN_BENCH_REEXEC"):
        os.environ["MAIN_BENCH_REEXEC"] = "1"
        os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit(f"compare_pairs: torch/llama_cpp not importable and no peers venv at {venv}; run scripts/setup-peers")


# ---------------------------------------------------------------- the pairs

def load_pairs(n, stride):
    """Every `stride`-th record of the Alpaca demo set, `n` of them: (line, x, y)."""
    out = []
    with open(PAIRS_FILE, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % stride or not line.strip():
                continue
            r = json.loads(line)
            x = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
            out.append((line, x, r["output"]))
            if len(out) == n:
                break
    if len(out) < n:
        sys.exit(f"compare_pairs: only {len(out)} pairs at stride {stride} in {PAIRS_FILE}")
    return out


def build_views(pairs):
    """The 4 views of every pair, with llama.cpp token ids: list of (pair, kind, ids, n_prompt)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    from render_views import model_views
    mv = model_views(MODEL, None, [(x, y) for _, x, y in pairs])
    views = []
    for i, p in enumerate(mv["pairs"]):
        for v in p["views"]:
            views.append((i, v["kind"], v["prompt_ids"] + v["target_ids"], len(v["prompt_ids"])))
    return views


def mean_logprobs_from_rows(logp_rows, ids, n_prompt):
    """Mean of log p(ids[p+1]) over the target positions p = n_prompt-1 .. len-2."""
    import numpy as np
    tgt = np.asarray(ids[n_prompt:])
    return float(logp_rows[np.arange(len(tgt)), tgt].mean())


def log_softmax_np(logits):
    import numpy as np
    m = logits.max(axis=1, keepdims=True)
    return logits - (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))


# ---------------------------------------------------------------- main-score

def run_main(pairs, threads, precision, repeat, tmp, max_tokens):
    inp = os.path.join(tmp, "pairs.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        f.writelines(line if line.endswith("\n") else line + "\n" for line, _, _ in pairs)
    empty = os.path.join(tmp, "empty.jsonl")
    open(empty, "w").close()
    out = os.path.join(tmp, "out.jsonl")

    def once(path):
        if os.path.exists(out):
            os.remove(out)  # the command resumes from an existing output
        cmd = [SCORE, "score", "--input", path, "--output", out, "--threads", str(threads),
               "--max-tokens", str(max_tokens)]
        cmd += ["--precision", precision]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t0

    startup = min(once(empty) for _ in range(max(3, repeat)))
    best = min(once(inp) for _ in range(repeat))
    with open(out, encoding="utf-8") as f:
        scores = [json.loads(l)["alignment"] for l in f]
    means = {}
    for i, s in enumerate(scores):
        for k in ("fwd_cond", "fwd_uncond", "rev_cond", "rev_uncond"):
            means[(i, k)] = s[k]
    return best - startup, {"startup_s": round(startup, 3)}, means


# ---------------------------------------------------------------- llama.cpp

FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


def run_llama_batch(views, threads, repeat, n_batch, n_seq, unified, flash_attn):
    import ctypes
    import numpy as np
    import llama_cpp as L

    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(MODEL.encode(), mp)
    if not model:
        raise RuntimeError("llama.cpp could not load the model")
    vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    longest = max(len(ids) for _, _, ids, _ in views)
    if n_batch < longest:
        n_batch = longest
    cp = L.llama_context_default_params()
    cp.n_ctx = n_batch if unified else max(n_batch, longest * n_seq)
    cp.n_batch = n_batch
    cp.n_ubatch = n_batch
    cp.n_seq_max = n_seq
    cp.kv_unified = unified
    cp.n_threads = threads
    cp.n_threads_batch = threads
    cp.no_perf = True
    cp.flash_attn_type = FLASH_ATTN[flash_attn]
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        raise RuntimeError("llama.cpp could not make a context with these batch settings")
    n_batch = L.llama_n_batch(ctx)
    n_ubatch = L.llama_n_ubatch(ctx)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(n_batch, 0, 1)

    # Greedy packing in view order: as many whole views as fit in n_batch tokens and n_seq sequences.
    groups, cur, cur_tok = [], [], 0
    for v in views:
        if cur and (cur_tok + len(v[2]) > n_batch or len(cur) == n_seq):
            groups.append(cur)
            cur, cur_tok = [], 0
        cur.append(v)
        cur_tok += len(v[2])
    groups.append(cur)

    def run_all():
        means = {}
        for g in groups:
            n = 0
            for s, (_, _, ids, n_prompt) in enumerate(g):
                for p, tok in enumerate(ids):
                    batch.token[n] = tok
                    batch.pos[n] = p
                    batch.n_seq_id[n] = 1
                    batch.seq_id[n][0] = s
                    batch.logits[n] = 1 if n_prompt - 1 <= p < len(ids) - 1 else 0
                    n += 1
            batch.n_tokens = n
            rc = L.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            n_out = sum(len(ids) - n_prompt for _, _, ids, n_prompt in g)
            ptr = L.llama_get_logits(ctx)
            logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_out, vocab))
            lp = log_softmax_np(logits)
            at = 0
            for (i, kind, ids, n_prompt) in g:
                k = len(ids) - n_prompt
                means[(i, kind)] = mean_logprobs_from_rows(lp[at:at + k], ids, n_prompt)
                at += k
            L.llama_memory_clear(mem, True)
        return means

    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        means = run_all()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    info = {"mode": "batch", "n_batch": n_batch, "n_ubatch": n_ubatch, "n_seq_max": n_seq,
            "kv_unified": unified, "flash_attn": flash_attn, "decode_calls": len(groups),
            "llama_cpp_python": L.__version__}
    return best, info, means


def run_llama_eval(views, threads, repeat):
    import numpy as np
    from llama_cpp import Llama
    longest = max(len(ids) for _, _, ids, _ in views)
    n = max(512, longest)
    llm = Llama(model_path=MODEL, n_ctx=n, n_batch=n, n_ubatch=n, logits_all=True,
                n_threads=threads, n_threads_batch=threads, verbose=False)
    best = None
    for _ in range(repeat):
        means = {}
        t0 = time.perf_counter()
        for (i, kind, ids, n_prompt) in views:
            llm.reset()
            llm.eval(ids)
            logits = np.asarray(llm.scores[n_prompt - 1: len(ids) - 1], dtype=np.float32)
            means[(i, kind)] = mean_logprobs_from_rows(log_softmax_np(logits), ids, n_prompt)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, {"mode": "eval", "n_batch": n, "logits_all": True}, means


# ---------------------------------------------------------------- PyTorch

_TORCH = {}


def torch_model(threads):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    if "model" not in _TORCH:
        m = AutoModelForCausalLM.from_pretrained(HF_F32, dtype=torch.float32)
        m.eval()
        _TORCH["model"] = m
    return _TORCH["model"]


def run_torch(views, threads, repeat, batch_size):
    import torch
    model = torch_model(threads)
    order = list(range(len(views)))
    if batch_size > 1:
        order.sort(key=lambda j: len(views[j][2]))
    groups = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    pad = 0
    for g in groups:
        pad += max(len(views[j][2]) for j in g) * len(g) - sum(len(views[j][2]) for j in g)

    def run_all():
        means = {}
        with torch.inference_mode():
            for g in groups:
                T = max(len(views[j][2]) for j in g)
                x = torch.zeros((len(g), T), dtype=torch.long)
                mask = torch.zeros((len(g), T), dtype=torch.long)
                for r, j in enumerate(g):
                    ids = views[j][2]
                    x[r, :len(ids)] = torch.tensor(ids)
                    mask[r, :len(ids)] = 1
                if batch_size == 1:
                    logits = model(x).logits  # Cherry-LLM: full logits of the whole sequence
                else:
                    logits = model(input_ids=x, attention_mask=mask).logits
                for r, j in enumerate(g):
                    i, kind, ids, n_prompt = views[j]
                    rows = logits[r, n_prompt - 1:len(ids) - 1].float()
                    tgt = torch.tensor(ids[n_prompt:])
                    lp = torch.log_softmax(rows, dim=-1).gather(1, tgt[:, None])
                    means[(i, kind)] = float(lp.mean())
                del logits
        return means

    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        means = run_all()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    import transformers
    return best, {"batch": batch_size, "padding_tokens": pad, "torch": torch.__version__,
                  "transformers": transformers.__version__}, means


# ---------------------------------------------------------------- report

def cpu_ghz():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--stride", type=int, default=10, help="take every STRIDE-th line of the demo set")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="best of REPEAT timed runs per engine")
    ap.add_argument("--engines", default=ALL_ENGINES)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--llama-mode", choices=["batch", "eval"], default="batch")
    ap.add_argument("--llama-batch", type=int, default=2048, help="n_batch = n_ubatch (tokens per llama_decode)")
    ap.add_argument("--llama-seqs", type=int, default=1,
                    help="views per llama_decode (n_seq_max); 1 measured fastest on CPU, see benches/README.md")
    ap.add_argument("--llama-split-kv", action="store_true", help="kv_unified=false (one KV stream per sequence)")
    ap.add_argument("--llama-flash-attn", choices=list(FLASH_ATTN), default="auto")
    ap.add_argument("--torch-batch", type=int, default=8, help="sequences per padded batch for torchN")
    ap.add_argument("--ghz", type=float, default=None, help="clock for the peak (default: /proc/cpuinfo)")
    ap.add_argument("--cores", type=int, default=None, help="cores for the peak (default: --threads)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--json", help="also write the JSON result here")
    args = ap.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    bad = set(engines) - set(ALL_ENGINES.split(","))
    if bad:
        sys.exit(f"compare_pairs: unknown engines {sorted(bad)}; known: {ALL_ENGINES}")
    ensure_peers_python(engines)

    if not args.no_build and any(e.startswith("main") for e in engines):
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "main-engine", "--bin", "main-score"],
                       cwd=ROOT, check=True)
    pairs = load_pairs(args.pairs, args.stride)
    views = build_views(pairs)
    lengths = [len(ids) for _, _, ids, _ in views]
    too_long = sum(l > args.max_tokens for l in lengths)
    if too_long:
        print(f"warning: {too_long} views exceed --max-tokens {args.max_tokens}: main-score truncates them, the peers do not",
              file=sys.stderr)
    n_pairs, n_tokens = len(pairs), sum(lengths)
    n_target = sum(len(ids) - n_prompt for _, _, ids, n_prompt in views)
    ghz = args.ghz or cpu_ghz()
    cores = args.cores or args.threads
    peak_f32 = cores * 64 * ghz * 1e9 if ghz else None
    peak_text = (f", peak f32 {peak_f32 / 1e9:.0f} GFLOP/s ({cores} cores x 64 x {ghz:.2f} GHz), int8 4x"
                 if peak_f32 else ", clock unknown (pass --ghz for % of peak)")
    print(f"{n_pairs} pairs (every {args.stride}th of {os.path.basename(PAIRS_FILE)}), {len(views)} views, "
          f"{n_tokens} view tokens ({n_target} targets, longest view {max(lengths)}), {args.threads} threads"
          + peak_text, file=sys.stderr)

    results, means = {}, {}
    with tempfile.TemporaryDirectory(prefix="main-bench-") as tmp:
        for e in engines:
            print(f"running {e} ...", file=sys.stderr, flush=True)
            if e == "main":
                secs, info, m = run_main(pairs, args.threads, "exact", args.repeat, tmp, args.max_tokens)
            elif e == "main-fast":
                secs, info, m = run_main(pairs, args.threads, "fast", args.repeat, tmp, args.max_tokens)
            elif e == "llama":
                if args.llama_mode == "batch":
                    secs, info, m = run_llama_batch(views, args.threads, args.repeat, args.llama_batch,
                                                    args.llama_seqs, not args.llama_split_kv, args.llama_flash_attn)
                else:
                    secs, info, m = run_llama_eval(views, args.threads, args.repeat)
            elif e == "torch1":
                secs, info, m = run_torch(views, args.threads, args.repeat, 1)
            else:
                secs, info, m = run_torch(views, args.threads, args.repeat, args.torch_batch)
            results[e] = {"seconds": secs, **info}
            means[e] = m
            print(f"  {e}: {secs:.2f} s, {n_pairs / secs:.2f} pairs/s", file=sys.stderr, flush=True)

    # Agreement of the per-view mean log-probs with the first engine that ran (sanity: same work).
    ref = engines[0]
    for e in engines:
        common = set(means[e]) & set(means[ref])
        diffs = [abs(means[e][k] - means[ref][k]) for k in common]
        results[e]["max_abs_diff_vs_" + ref] = max(diffs) if diffs else None

    names = {"main": "main-score --precision exact", "main-fast": "main-score --precision fast",
             "llama": f"llama.cpp ({results.get('llama', {}).get('mode', '')})",
             "torch1": "PyTorch f32 batch 1", "torchN": f"PyTorch f32 batch {args.torch_batch} padded"}
    int8 = {"main-fast", "llama"}  # int8 dot products (main fast: VNNI; llama.cpp Q4_1 x Q8_1)
    peers = [p for p in ("llama", "torch1", "torchN") if p in results]
    for e, r in results.items():
        r["pairs_per_s"] = n_pairs / r["seconds"]
        r["tokens_per_s"] = n_tokens / r["seconds"]
        flops = r["tokens_per_s"] * MFLOP_PER_TOKEN * 1e6
        r["gflops"] = flops / 1e9
        if peak_f32:
            r["pct_peak_f32"] = 100 * flops / peak_f32
            r["pct_peak_int8"] = 100 * flops / (4 * peak_f32)
            r["pct_peak_own"] = r["pct_peak_int8"] if e in int8 else r["pct_peak_f32"]
    for e, r in results.items():
        for p in peers:
            r["x_vs_" + p] = r["pairs_per_s"] / results[p]["pairs_per_s"]

    print()
    head = f"{'engine':<30} {'pairs/s':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'%pk f32':>8} {'%pk i8':>7}"
    head += "".join(f" {'x ' + p:>9}" for p in peers)
    print(head)
    for e, r in results.items():
        row = f"{names[e]:<30} {r['pairs_per_s']:>8.2f} {r['tokens_per_s']:>9.0f} {r['gflops']:>8.1f}"
        row += f" {r.get('pct_peak_f32', float('nan')):>7.1f}% {r.get('pct_peak_int8', float('nan')):>6.1f}%"
        row += "".join(f" {r['x_vs_' + p]:>8.2f}x" for p in peers)
        print(row)
    print(f"(tokens = the {n_tokens} tokens of the {len(views)} full view sequences; "
          f"% of peak at {MFLOP_PER_TOKEN:.0f} MFLOP/token; max |mean log-prob diff| vs {ref}: "
          + ", ".join(f"{e} {results[e]['max_abs_diff_vs_' + ref] or 0:.3g}" for e in engines if e != ref) + ")")
    summary = {"pairs": n_pairs, "views": len(views), "view_tokens": n_tokens, "target_tokens": n_target,
               "threads": args.threads, "ghz": ghz, "cores_for_peak": cores,
               "peak_f32_gflops": peak_f32 / 1e9 if peak_f32 else None,
               "mflop_per_token": MFLOP_PER_TOKEN, "engines": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
