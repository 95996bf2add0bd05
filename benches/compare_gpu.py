#!/usr/bin/env python3
"""MAIN's GPU scorer against Hugging Face transformers on the same GPU, in one run.

Run by scripts/check-gpu (which passes the prebuilt main-score and the
fixtures); needs a CUDA GPU, PyTorch and transformers. Two models:

  (a) the fixture model (SmolLM2-135M-Instruct Q4_1; its F32 export is what
      transformers runs, so both score the same weights) on 2,000 real pairs
      (the 999 Alpaca demo pairs, cycled);
  (b) a LLaMA-3-8B-shaped model (d 4096, 32 layers, 32/8 heads, d_ff 14336,
      vocab 128256) with random weights made here with torch, written once
      as a Hugging Face folder (bf16 safetensors, about 16 GB of disk) with
      the fixture's tokenizer.json AND tokenizer_config.json (its ChatML
      template), on the first 500 pairs. Both engines read that one folder:
      main-score loads bf16 safetensors directly (no conversion: `quantize`
      takes GGUF input only), and both render the same template.

Peer: transformers in bf16 computing the same four views (DESIGN.md §2:
the model's chat template, REVERSE(y) for the reverse views, targets closed
by the end-of-turn text) and their mean target log-probs, batch 1 (as
Cherry-LLM and Superfiltering score) and batched (sorted by length, padded,
SDPA, the LM head only on target positions).

Prints lines starting with BENCH (check-gpu's summary) and a Markdown table.
"""
import argparse
import json
import os
import subprocess
import sys
import time

REVERSE = "Below is a response to an instruction. Write the instruction that it answers.\n\nResponse:\n"
END_OF_TURN = "<|im_end|>"


def load_pairs(path, n):
    rows = [json.loads(l) for l in open(path)]
    out = []
    while len(out) < n:
        for r in rows:
            x = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
            out.append((x, r["output"]))
            if len(out) == n:
                break
    return out


def write_jsonl(pairs, path):
    with open(path, "w") as f:
        for x, y in pairs:
            f.write(json.dumps({"prompt": x, "response": y}) + "\n")


def run_main(main_score, model, pairs_path, out_path, extra=()):
    """Seconds main-score took; its stderr goes to OUT_PATH.stderr and, on failure, here."""
    if os.path.exists(out_path):
        os.remove(out_path)
    t = time.perf_counter()
    with open(out_path + ".stderr", "w") as err:
        r = subprocess.run([main_score, "score", "--model", model, "--input", pairs_path, "--output", out_path,
                            "--device", "cuda", *extra], stderr=err)
    if r.returncode != 0:
        sys.stderr.write(open(out_path + ".stderr").read()[-4000:])
        raise SystemExit(f"main-score failed (exit {r.returncode}) on {model}")
    return time.perf_counter() - t


def views(tok, template, pairs, max_tokens=1024):
    """Token ids and prompt lengths of the four views of every pair."""
    def render(content):
        return template.render(messages=[{"role": "user", "content": content}], add_generation_prompt=True)

    uncond = tok.encode(render(""), add_special_tokens=False)
    out = []
    for x, y in pairs:
        for prompt_ids, target in (
            (tok.encode(render(x), add_special_tokens=False), y),
            (uncond, y),
            (tok.encode(render(REVERSE + y), add_special_tokens=False), x),
            (uncond, x),
        ):
            t = tok.encode(target + END_OF_TURN, add_special_tokens=False)
            ids = (prompt_ids + t)[:max_tokens]
            out.append((ids, min(len(prompt_ids), len(ids) - 1)))
    return out


def peer(model, vs, batched, torch):
    """Mean target log-prob of every view, and the seconds it took."""
    dev = "cuda"
    torch.cuda.synchronize()
    t = time.perf_counter()
    means = [0.0] * len(vs)
    with torch.inference_mode():
        if not batched:
            for i, (ids, n_prompt) in enumerate(vs):
                x = torch.tensor([ids], device=dev)
                h = model.model(x).last_hidden_state[0, n_prompt - 1:-1]
                lp = torch.log_softmax(model.lm_head(h).float(), -1)
                tgt = x[0, n_prompt:]
                means[i] = lp.gather(1, tgt[:, None]).mean().item()
        else:
            order = sorted(range(len(vs)), key=lambda i: len(vs[i][0]))
            budget = 65536
            at = 0
            while at < len(order):
                width = len(vs[order[at]][0])
                group = []
                while at < len(order) and (len(group) + 1) * len(vs[order[at]][0]) <= budget:
                    group.append(order[at])
                    width = len(vs[order[at]][0])
                    at += 1
                if not group:
                    group, at = [order[at]], at + 1
                    width = len(vs[group[0]][0])
                x = torch.zeros((len(group), width), dtype=torch.long, device=dev)
                mask = torch.zeros((len(group), width), dtype=torch.long, device=dev)
                for r, i in enumerate(group):
                    ids = vs[i][0]
                    x[r, :len(ids)] = torch.tensor(ids, device=dev)
                    mask[r, :len(ids)] = 1
                h = model.model(input_ids=x, attention_mask=mask).last_hidden_state
                rows, cols, tgts, owner = [], [], [], []
                for r, i in enumerate(group):
                    ids, n_prompt = vs[i]
                    for p in range(n_prompt - 1, len(ids) - 1):
                        rows.append(r)
                        cols.append(p)
                        tgts.append(ids[p + 1])
                        owner.append(i)
                sel = h[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]
                lp = torch.log_softmax(model.lm_head(sel).float(), -1)
                got = lp.gather(1, torch.tensor(tgts, device=dev)[:, None])[:, 0].tolist()
                sums = {}
                for i, v in zip(owner, got):
                    sums.setdefault(i, []).append(v)
                for i, v in sums.items():
                    means[i] = sum(v) / len(v)
    torch.cuda.synchronize()
    return means, time.perf_counter() - t


def make_random_llama(path, torch, transformers, tokenizer_dir):
    """A LLaMA-3-8B-shaped model with random weights, as a Hugging Face folder
    with the tokenizer and chat template of `tokenizer_dir` (written once;
    a folder left half-written by a killed run is made again)."""
    import shutil
    done = os.path.join(path, ".complete")
    if os.path.exists(done):
        return
    shutil.rmtree(path, ignore_errors=True)
    cfg = transformers.LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                   rope_theta=500000.0, max_position_embeddings=8192, rms_norm_eps=1e-5,
                                   tie_word_embeddings=False)
    torch.manual_seed(0)
    t = time.perf_counter()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # made in bf16: no 32 GB f32 copy on the GPU
    try:
        with torch.device("cuda"):
            m = transformers.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    m.save_pretrained(path, safe_serialization=True)
    del m
    torch.cuda.empty_cache()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokenizer_dir, f), os.path.join(path, f))
    open(done, "w").close()
    print(f"made {path} in {time.perf_counter() - t:.0f} s", flush=True)


def load_peer(transformers, torch, hf_dir):
    kw = dict(attn_implementation="sdpa")
    try:  # transformers 5 names it dtype, 4 torch_dtype
        m = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.bfloat16, **kw)
    except TypeError:
        m = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.bfloat16, **kw)
    return m.to(torch.bfloat16).cuda().eval()


def run_flops(vs, cfg):
    """FLOPs the scoring must run: the prompt prefix every view shares once,
    each view's other tokens through every layer (2 per weight, attention
    4 * d_attn per query-key pair), the LM head on target rows only."""
    d, n_layers, v = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q_width, kv_width = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    per_token_layers = n_layers * 2 * (d * (q_width + 2 * kv_width) + q_width * d + 3 * d * cfg.intermediate_size)
    shared = len(os.path.commonprefix([ids[:n_prompt] for ids, n_prompt in vs]))
    tokens = shared + sum(len(ids) - shared for ids, _ in vs)
    targets = sum(len(ids) - n_prompt for ids, n_prompt in vs)
    attn = sum(n_layers * 4 * q_width * (len(ids) * (len(ids) + 1) // 2 - shared * (shared + 1) // 2)
               for ids, _ in vs)
    return tokens * per_token_layers + attn + targets * 2 * d * v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--main-score", required=True)
    ap.add_argument("--model", required=True, help="the fixture GGUF")
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--skip-big", action="store_true", help="only the fixture model")
    ap.add_argument("--only-big", action="store_true", help="only the LLaMA-3-8B shape")
    ap.add_argument("--main-batch", type=int, default=512, help="main-score --batch (pairs per scoring call)")
    a = ap.parse_args()
    import jinja2
    import torch
    import transformers

    peak = 989e12  # H100/H200 SXM dense bf16 tensor-core peak
    gpu = torch.cuda.get_device_name(0)
    print(f"GPU: {gpu}; torch {torch.__version__}; transformers {transformers.__version__}")
    rows = []

    def one(name, hf_dir, ggufs, n_pairs, batch1_pairs):
        pairs = load_pairs(a.pairs, n_pairs)
        pairs_path = os.path.join(a.work, f"{name}.jsonl")
        write_jsonl(pairs, pairs_path)
        tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(hf_dir, "tokenizer.json"))
        tpl_src = json.load(open(os.path.join(hf_dir, "tokenizer_config.json")))["chat_template"]
        template = jinja2.Environment().from_string(tpl_src)
        vs = views(tok, template, pairs)
        n_tokens = sum(len(ids) for ids, _ in vs)
        model = load_peer(transformers, torch, hf_dir)
        flops = run_flops(vs, model.config)
        peer(model, vs[:8], True, torch)  # warm-up
        _, t_batched = peer(model, vs, True, torch)
        nb = 4 * batch1_pairs
        _, t_b1 = peer(model, vs[:nb], False, torch)
        del model
        torch.cuda.empty_cache()
        res = {"name": name, "pairs": n_pairs, "tokens": n_tokens,
               "batched": n_pairs / t_batched, "batch1": batch1_pairs / t_b1,
               "peer_mfu": flops / t_batched / peak}
        print(f"{name}: {len(vs)} views, {n_tokens} tokens, {flops / 1e12:.1f} TFLOP to run; "
              f"transformers batched {t_batched:.1f} s, batch 1 {t_b1:.1f} s for {batch1_pairs} pairs", flush=True)
        for label, path in ggufs:
            one_pair = os.path.join(a.work, "one.jsonl")
            write_jsonl(pairs[:1], one_pair)
            extra = ("--batch", str(a.main_batch))
            startup = run_main(a.main_score, path, one_pair, os.path.join(a.work, "one.out"), extra)
            total = run_main(a.main_score, path, pairs_path, os.path.join(a.work, f"{name}-{label}.out"), extra)
            scoring = max(total - startup, 1e-9)
            res[label] = n_pairs / scoring
            res[label + "_wall"] = n_pairs / total
            # The FLOPs the views need (prefix once, head on target rows), over the time taken.
            res[label + "_mfu"] = flops / scoring / peak
        rows.append(res)
        for label, _ in ggufs:
            ratio = res[label] / res["batched"]
            need = 2 if name.startswith("smollm2") else 1.2
            ok = "PASS" if ratio >= need else "FAIL"
            print(f"BENCH {ok} {name} {label}: {res[label]:.1f} pairs/s ({res[label + '_wall']:.1f} with start-up), "
                  f"transformers batched {res['batched']:.1f}, batch 1 {res['batch1']:.2f}; {ratio:.2f}x batched "
                  f"(need {need}x); MFU {100 * res[label + '_mfu']:.1f}% (transformers {100 * res['peer_mfu']:.1f}%)",
                  flush=True)

    hf_small = os.path.join(a.work, "smollm2-hf")
    if not os.path.exists(os.path.join(hf_small, "tokenizer_config.json")):
        subprocess.run([a.main_score, "export", a.model, hf_small], check=True)
    if not a.only_big:
        one("smollm2-135m", hf_small, [("q4_1", a.model)], 2000, 100)

    if not a.skip_big:
        big = os.path.join(a.work, "llama3-8b-random")
        make_random_llama(big, torch, transformers, hf_small)
        # One set of weights for both engines: main-score reads the bf16 folder itself.
        one("llama3-8b-shape", big, [("bf16", big)], 500, 20)

    print("\n| model | pairs | MAIN pairs/s | transformers batched | transformers batch 1 | MAIN / batched | MFU |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        for label in [k for k in r if k in ("q4_1", "bf16")]:
            print(f"| {r['name']} ({label}) | {r['pairs']} | {r[label]:.1f} | {r['batched']:.1f} | {r['batch1']:.2f} "
                  f"| {r[label] / r['batched']:.2f}x | {100 * r[label + '_mfu']:.1f}% |")


if __name__ == "__main__":
    sys.exit(main())
