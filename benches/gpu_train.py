#!/usr/bin/env python3
"""PyTorch's side of benches/gpu_train.sh (issue 19's GPU check): the same
model shape (config.json, random weights made on the GPU), the same number
of optimizer steps of the same tokens per step, with the settings a
PyTorch user would pick to fit a 7-8B full fine-tune on one GPU: bf16
weights, SDPA attention, activation checkpointing, fused AdamW (its state
in the weights' dtype, bf16).

    python benches/gpu_train.py --config CONFIG.json --data pairs.jsonl \
        --tokenizer fixtures/smollm2-f32 --steps 20 --tokens 4096

Each step trains on one row of `--tokens` tokens: tokenized chat pairs
concatenated (causal across pair boundaries: PyTorch's SDPA has no packed
block-diagonal mask, so its attention does a little more work than
main-train's packed step). Prints one JSON object: tokens/s over the steps
after the first, the peak of torch.cuda.max_memory_allocated and of
max_memory_reserved, and the losses.
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    cfg = AutoConfig.from_pretrained(args.config)
    cfg.attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    # Activation checkpointing (renamed in transformers 5).
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.config.use_cache = False
    model.train()
    n_params = sum(p.numel() for p in model.parameters())

    ids = []
    with open(args.data) as f:
        for line in f:
            r = json.loads(line)
            x = r.get("instruction", r.get("prompt", "")) + ("\n\n" + r["input"] if r.get("input") else "")
            y = r.get("output", r.get("response", ""))
            msgs = [{"role": "user", "content": x}, {"role": "assistant", "content": y}]
            text = tok.apply_chat_template(msgs, tokenize=False)
            ids += tok(text, add_special_tokens=False)["input_ids"]
            if len(ids) >= args.steps * args.tokens:
                break
    while len(ids) < args.steps * args.tokens:
        ids += ids
    vocab = cfg.vocab_size
    ids = [i % vocab for i in ids]

    fused = dev.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, fused=fused)
    times, losses = [], []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps):
        row = torch.tensor(ids[step * args.tokens:(step + 1) * args.tokens], device=dev)[None]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=row, labels=row)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(out.loss.item())
    tps = args.tokens * (args.steps - 1) / sum(times[1:]) if args.steps > 1 else 0.0
    res = {
        "peer": f"torch {torch.__version__}, {str(dtype).removeprefix('torch.')} weights and "
                f"AdamW state, SDPA, activation checkpointing, {'fused' if fused else 'foreach'} AdamW",
        "n_params": n_params,
        "tokens_per_step": args.tokens,
        "steps": args.steps,
        "tokens_per_s": round(tps, 1),
        "losses": [round(l, 4) for l in losses],
    }
    if dev.type == "cuda":
        res["max_memory_allocated"] = torch.cuda.max_memory_allocated()
        res["max_memory_reserved"] = torch.cuda.max_memory_reserved()
    print(json.dumps(res))


if __name__ == "__main__":
    sys.exit(main())
