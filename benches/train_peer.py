#!/usr/bin/env python3
"""Training speed on CPU, side by side: `main-train sft` (candle) against
PyTorch + transformers doing the same SFT step (full fine-tuning, f32,
AdamW, gradient clipping, loss on target tokens only) on the same model,
the same pairs, the same batch size and thread count.

    /work/cache/venv-peers/bin/python benches/train_peer.py \
        --model fixtures/smollm2-f32 --data fixtures/alpaca_en_demo.jsonl \
        --main-train target/release/main-train --threads 2 --steps 6 --batch-size 4

Tokens/s counts real (unpadded) tokens per optimizer step; the first step
(allocation, warm-up) is left out on both sides. The PyTorch sequences are
built like the engine's forward view (chat template with one user message
and the generation prompt, then the response and the end of turn), so both
sides see sequences of the same lengths.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def pairs(path, n):
    out = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            x = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
            out.append((x, r["output"]))
            if len(out) == n:
                break
    return out


def run_main(args, data):
    with tempfile.TemporaryDirectory() as run:
        cmd = [args.main_train, "sft", "--quiet", "--model", args.model, "--data", data,
               "--direction", "forward", "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--max-tokens", str(args.max_tokens), "--eval-fraction", "0", "--lr", "1e-5",
               "--warmup", "1", "--threads", str(args.threads), "--recompute", args.recompute,
               "--q-block", str(args.q_block), "--out", run]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
        rows = [r for r in rows if "loss" in r]
        tokens = sum(r["tokens"] for r in rows[1:])
        secs = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
        return tokens / secs, [r["loss"] for r in rows]


def run_torch(args, ps):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    model.train()
    eot = "<|im_end|>"
    seqs = []
    for x, y in ps:
        prompt = tok.apply_chat_template([{"role": "user", "content": x}], tokenize=False,
                                         add_generation_prompt=True)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        t = tok(y + eot, add_special_tokens=False)["input_ids"]
        ids = (p + t)[: args.max_tokens]
        n_prompt = min(len(p), len(ids) - 1)
        seqs.append((ids, n_prompt))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    times, tokens, losses = [], [], []
    for step in range(args.steps):
        batch = seqs[step * args.batch_size:(step + 1) * args.batch_size]
        t_max = max(len(s[0]) for s in batch)
        ids = torch.zeros((len(batch), t_max), dtype=torch.long)
        labels = torch.full((len(batch), t_max), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), t_max), dtype=torch.long)
        for b, (s, n_prompt) in enumerate(batch):
            ids[b, : len(s)] = torch.tensor(s)
            labels[b, n_prompt: len(s)] = torch.tensor(s[n_prompt:])
            mask[b, : len(s)] = 1
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        tokens.append(sum(len(s[0]) for s in batch))
        losses.append(out.loss.item())
    return sum(tokens[1:]) / sum(times[1:]), losses, torch.__version__


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="fixtures/smollm2-f32")
    ap.add_argument("--data", default="fixtures/alpaca_en_demo.jsonl")
    ap.add_argument("--main-train", default="target/release/main-train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    # main-train's step: true, the layerwise step (per-layer recomputation,
    # query-block attention, chunked LM head; packed, no padding); false,
    # whole-graph autograd on the padded batch. PyTorch runs without
    # recomputation either way (its fastest CPU setting).
    ap.add_argument("--recompute", default="true", choices=["true", "false"])
    ap.add_argument("--q-block", type=int, default=256)
    args = ap.parse_args()
    ps = pairs(args.data, args.steps * args.batch_size)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for x, y in ps:
            f.write(json.dumps({"prompt": x, "response": y}) + "\n")
        data = f.name
    # main-train shuffles its data; with exactly steps * batch_size pairs
    # each side trains on every pair once.
    main_tps, main_losses = run_main(args, data)
    torch_tps, torch_losses, version = run_torch(args, ps)
    os.unlink(data)
    print(json.dumps({
        "model": args.model, "threads": args.threads, "batch_size": args.batch_size,
        "main_train_recompute": args.recompute, "q_block": args.q_block,
        "steps_timed": args.steps - 1,
        "main_train_tokens_per_s": round(main_tps, 1),
        "torch_tokens_per_s": round(torch_tps, 1), "torch": version,
        "ratio_main_over_torch": round(main_tps / torch_tps, 3),
        "main_train_losses": [round(l, 4) for l in main_losses],
        "torch_losses": [round(l, 4) for l in torch_losses],
    }, indent=1))


if __name__ == "__main__":
    sys.exit(main())
