#!/usr/bin/env python3
"""Golden per-view means of real pairs, computed independently of the engine.

For the first N (default 50) pairs of fixtures/alpaca_en_demo.jsonl whose
total length len(instruction) + len(input) + len(output) is between 100 and
600 characters (inclusive), this builds the four views of DESIGN.md §2 and
scores their targets with the float64 numpy forward pass of reference.py:

* the prompt is the GGUF's `tokenizer.chat_template` rendered with Jinja2 as
  `transformers` renders it (one user message, generation prompt);
  instruction x = instruction + "\\n\\n" + input when input is non-empty;
* end-of-turn = what the template writes after an assistant message
  (rendered around a sentinel), trailing whitespace removed;
* prompt ids = llama.cpp tokenize(prompt, add_bos=False, special=True), BOS
  put first when the model adds BOS and the prompt does not start with it;
  target ids = tokenize(target + end-of-turn, add_bos=False, special=True);
* per view, lp = mean over the target ids of log p(id | everything before).

Nothing here is shared with the Rust code. The pair texts are not written to
the output (the data set is not ours to commit): only 0-based line numbers.

    python3 tests/reference/score_views.py \
        [--model fixtures/SmolLM2-135M-Instruct.Q4_1.gguf] \
        [--data fixtures/alpaca_en_demo.jsonl] [--n 50] \
        [--out tests/data/scorer_views_f64.json]

Output: {"model", "source", "selection", "max_tokens", "end_of_turn",
         "pairs": [{"line", "fwd_cond", "fwd_uncond", "rev_cond", "rev_uncond",
                    "n_fwd", "n_rev"}]}  (means in nats, 6 decimals)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from reference import forward_hidden, load_gguf  # noqa: E402

REVERSE_PROMPT = (
    "Below is a response to an instruction. Write the instruction that it answers.\n\nResponse:\n"
)
SENTINEL = "MAINx7f3aSENTINELx91c2"
MAX_TOKENS = 1024
MIN_CHARS, MAX_CHARS = 100, 600


def select_pairs(path: str, n: int) -> list[tuple[int, str, str]]:
    """The first `n` (line, x, y) whose total length is in [MIN_CHARS, MAX_CHARS]."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if not line.strip():
                continue
            d = json.loads(line)
            instr, inp, outp = d["instruction"], d.get("input", ""), d["output"]
            if not MIN_CHARS <= len(instr) + len(inp) + len(outp) <= MAX_CHARS:
                continue
            x = instr + "\n\n" + inp if inp else instr
            out.append((line_no, x, outp))
            if len(out) == n:
                break
    if len(out) < n:
        raise SystemExit(f"only {len(out)} pairs of {path} qualify, {n} asked")
    return out


def chat_template(path: str):
    """(render_prompt(content), end_of_turn, bos_id, add_bos) of the GGUF's template."""
    import gguf
    import jinja2
    import jinja2.ext
    import jinja2.sandbox

    reader = gguf.GGUFReader(path)

    def field(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    tokens = reader.fields["tokenizer.ggml.tokens"]
    token_text = lambda i: bytes(tokens.parts[tokens.data[i]]).decode("utf-8")
    bos_id, eos_id = field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")
    add_bos = bool(field("tokenizer.ggml.add_bos_token") or False)
    special = {}
    if bos_id is not None:
        special["bos_token"] = token_text(int(bos_id))
    if eos_id is not None:
        special["eos_token"] = token_text(int(eos_id))

    # transformers' apply_chat_template environment.
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime(2024, 7, 26).strftime(fmt)
    template = env.from_string(field("tokenizer.chat_template"))

    def render(messages, add_generation_prompt):
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               tools=None, documents=None, **special)

    def render_prompt(content):
        return render([{"role": "user", "content": content}], True)

    turn = render([{"role": "user", "content": "u"},
                   {"role": "assistant", "content": SENTINEL}], False)
    end_of_turn = turn[turn.rindex(SENTINEL) + len(SENTINEL):].rstrip()
    return render_prompt, end_of_turn, (None if bos_id is None else int(bos_id)), add_bos


def target_logprobs(model, ids: list[int], n_prompt: int) -> np.ndarray:
    """log p(ids[i] | ids[:i]) for i in n_prompt..len(ids)-1, float64 [n_target].

    The LM head runs only at the rows that predict a target token.
    """
    hidden = forward_hidden(model, ids)                                    # [T, D]
    rows = hidden[n_prompt - 1: len(ids) - 1]                              # [n, D]
    logits = rows @ model.output.T                                         # [n, V]
    m = logits.max(axis=-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=-1))                # [n]
    targets = np.asarray(ids[n_prompt:], dtype=np.int64)
    return logits[np.arange(len(targets)), targets] - lse


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "fixtures", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--data", default=os.path.join(ROOT, "fixtures", "alpaca_en_demo.jsonl"))
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "scorer_views_f64.json"))
    args = ap.parse_args()

    import llama_cpp

    pairs = select_pairs(args.data, args.n)
    render_prompt, end_of_turn, bos_id, add_bos = chat_template(args.model)
    llm = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)

    def tokenize(text: str) -> list[int]:
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else []

    def view(content: str, target: str) -> tuple[list[int], int]:
        prompt = tokenize(render_prompt(content))
        if add_bos and (not prompt or prompt[0] != bos_id):
            prompt = [bos_id] + prompt
        tgt = tokenize(target + end_of_turn)
        assert tgt, "empty target"
        ids = prompt + tgt
        assert len(ids) <= MAX_TOKENS, f"view of {len(ids)} tokens would be truncated"
        return ids, len(prompt)

    t0 = time.time()
    model = load_gguf(args.model)
    print(f"loaded {os.path.basename(args.model)} in {time.time() - t0:.1f}s; "
          f"end of turn {end_of_turn!r}, add_bos {add_bos}", file=sys.stderr)

    kinds = ("fwd_cond", "fwd_uncond", "rev_cond", "rev_uncond")
    out_pairs = []
    n_tokens = 0
    t1 = time.time()
    for k, (line, x, y) in enumerate(pairs):
        views = [view(x, y), view("", y), view(REVERSE_PROMPT + y, x), view("", x)]
        rec = {"line": line}
        for kind, (ids, n_prompt) in zip(kinds, views):
            lps = target_logprobs(model, ids, n_prompt)
            rec[kind] = round(float(lps.mean()), 6)
            n_tokens += len(ids)
        rec["n_fwd"] = len(views[0][0]) - views[0][1]
        rec["n_rev"] = len(views[2][0]) - views[2][1]
        assert rec["n_fwd"] == len(views[1][0]) - views[1][1]
        assert rec["n_rev"] == len(views[3][0]) - views[3][1]
        out_pairs.append(rec)
        print(f"[{k + 1}/{len(pairs)}] line {line}: " +
              " ".join(f"{kd} {rec[kd]:.4f}" for kd in kinds) +
              f" ({rec['n_fwd']}/{rec['n_rev']} targets)", file=sys.stderr)

    result = {
        "model": os.path.basename(args.model),
        "source": "fixtures/alpaca_en_demo.jsonl",
        "selection": f"first {args.n} lines with {MIN_CHARS} <= len(instruction)+len(input)+len(output) "
                     f"<= {MAX_CHARS} characters",
        "max_tokens": MAX_TOKENS,
        "end_of_turn": end_of_turn,
        "pairs": out_pairs,
    }
    # One line per pair keeps the file short and diffs readable.
    head = json.dumps({k: v for k, v in result.items() if k != "pairs"}, ensure_ascii=False, indent=1)
    text = head[:-2] + ',\n "pairs": [\n' + ",\n".join(
        "  " + json.dumps(p, ensure_ascii=False) for p in out_pairs) + "\n ]\n}"
    assert json.loads(text) == result
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"{len(out_pairs)} pairs, {n_tokens} tokens in {time.time() - t1:.1f}s -> {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
