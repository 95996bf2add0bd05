#!/usr/bin/env python3
"""Independent rendering of the four views of a pair (DESIGN.md §2).

Renders the SmolLM2 fixture's chat template (GGUF `tokenizer.chat_template`,
read with the `gguf` package) with Jinja2 configured as `transformers`
configures it for `apply_chat_template` (trim_blocks, lstrip_blocks, loop
controls, HF's `tojson`, `raise_exception`, `strftime_now`), and tokenizes
each view with llama.cpp's tokenizer (llama-cpp-python, vocab only):

* prompt ids = tokenize(prompt, add_bos=False, special=True), with BOS put
  first when the model adds BOS and the prompt does not already start with it;
* target ids = tokenize(target, add_bos=False, special=True).

The end of turn is the text the template writes after an assistant message
(rendered with a sentinel content), trailing whitespace removed.

The same is done for LLaMA-2 and Mistral templates (which write BOS
themselves) on llama.cpp's SentencePiece test vocabulary
(fixtures/llama-vocab/ggml-vocab-llama-spm.gguf, which adds BOS).

CLI:
    python3 tests/reference/render_views.py \
        [--model fixtures/SmolLM2-135M-Instruct.Q4_1.gguf] \
        [--spm-vocab fixtures/llama-vocab/ggml-vocab-llama-spm.gguf] [--out tests/data/views_jinja2.json]

Output JSON:
    {"model": "...", "jinja2_version": "...", "llama_cpp_version": "...",
     "reverse_prompt": "...", "end_of_turn": "<|im_end|>",
     "pairs": [{"instruction": x, "response": y,
                "views": [{"kind": "fwd_cond", "prompt": "...", "target": "...",
                           "prompt_ids": [...], "target_ids": [...]}, ... 4 views]}],
     "spm_vocab": "llama-vocab/ggml-vocab-llama-spm.gguf",
     "spm": {"llama2": {"template": "...", "end_of_turn": " </s>", "pairs": [... as above]},
             "mistral": {...}}}
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re

import gguf
import jinja2
import jinja2.ext
import jinja2.sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

REVERSE_PROMPT = (
    "Below is a response to an instruction. Write the instruction that it answers.\n\nResponse:\n"
)
SENTINEL = "MAINx7f3aSENTINELx91c2"

LONG = (
    "The mitochondrion is the powerhouse of the cell: it turns nutrients into ATP "
    "through oxidative phosphorylation, and it keeps its own small circular genome. "
) * 12

PAIRS = [
    ("Give three tips for staying healthy.",
     "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep seven to nine hours."),
    ("Translate to French: \"Where is the station?\"", "Où est la gare ? 🚉 — naïve café, Ærøskøbing, 東京駅。"),
    ("Write a Python function that reverses a string.",
     "```python\ndef reverse(s: str) -> str:\n    return s[::-1]\n```\n\nUse it as `reverse(\"abc\")`."),
    ("", "A response to an empty instruction."),
    ("Say nothing.", ""),
    ("Summarize the following text.\n\n" + LONG, "Mitochondria make ATP and carry their own DNA."),
    ("Explain Jinja syntax such as {{ name }} and {% for x in xs %}.",
     "Braces stay literal: {{ name }} prints a variable, {% if %} starts a block, {# comment #}."),
    ("  leading and trailing spaces\t\r\n", "\n\nstarts with blank lines and ends with spaces   "),
    ("What does the token <|im_end|> mean?", "It ends a turn: <|im_end|> closes a message in ChatML."),
    ("Classify the sentiment.\n\nI loved every minute of it!", "Positive"),
]


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' filter: json.dumps without HTML escaping.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(fmt):
    # The engine formats a fixed date so scores do not depend on the day.
    return datetime.datetime(2024, 7, 26).strftime(fmt)


def compile_template(source: str) -> jinja2.Template:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def field_str(reader: gguf.GGUFReader, key: str) -> str:
    f = reader.fields[key]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def field_int(reader: gguf.GGUFReader, key: str):
    f = reader.fields.get(key)
    return None if f is None else int(f.parts[f.data[0]][0])


# Templates of SentencePiece models (BOS written by the template itself),
# rendered on llama.cpp's LLaMA SPM test vocabulary (fixtures/llama-vocab).
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
SPM_PAIRS = [PAIRS[0], PAIRS[1], PAIRS[2], PAIRS[3], PAIRS[7]]


def model_views(path: str, source: str | None, pairs) -> dict:
    """The views of `pairs` for the model (or vocabulary) GGUF at `path`,
    rendered with `source` (None: the file's own template)."""
    reader = gguf.GGUFReader(path)
    if source is None:
        source = field_str(reader, "tokenizer.chat_template")
    tokens = reader.fields["tokenizer.ggml.tokens"]
    token_text = lambda i: bytes(tokens.parts[tokens.data[i]]).decode("utf-8")
    bos_id = field_int(reader, "tokenizer.ggml.bos_token_id")
    eos_id = field_int(reader, "tokenizer.ggml.eos_token_id")
    add_bos = bool(field_int(reader, "tokenizer.ggml.add_bos_token") or 0)
    special = {}
    if bos_id is not None:
        special["bos_token"] = token_text(bos_id)
    if eos_id is not None:
        special["eos_token"] = token_text(eos_id)

    template = compile_template(source)

    def render(messages, add_generation_prompt):
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               tools=None, documents=None, **special)

    def prompt(content):
        return render([{"role": "user", "content": content}], True)

    turn = render([{"role": "user", "content": "u"}, {"role": "assistant", "content": SENTINEL}], False)
    end_of_turn = turn[turn.rindex(SENTINEL) + len(SENTINEL):].rstrip()

    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)

    def tokenize(text):
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else []

    def prompt_ids(text):
        ids = tokenize(text)
        if add_bos and (not ids or ids[0] != bos_id):
            ids = [bos_id] + ids
        return ids

    def view(kind, content, target_content):
        p = prompt(content)
        t = target_content + end_of_turn
        return {"kind": kind, "prompt": p, "target": t, "prompt_ids": prompt_ids(p), "target_ids": tokenize(t)}

    out = {"template": source, "end_of_turn": end_of_turn, "pairs": []}
    for x, y in pairs:
        out["pairs"].append({
            "instruction": x,
            "response": y,
            "views": [
                view("fwd_cond", x, y),
                view("fwd_uncond", "", y),
                view("rev_cond", REVERSE_PROMPT + y, x),
                view("rev_uncond", "", x),
            ],
        })
    return out


def main() -> None:
    import llama_cpp

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "fixtures", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--spm-vocab", default=os.path.join(ROOT, "fixtures", "llama-vocab", "ggml-vocab-llama-spm.gguf"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "views_jinja2.json"))
    args = ap.parse_args()

    model = model_views(args.model, None, PAIRS)
    out = {
        "model": os.path.basename(args.model),
        "jinja2_version": jinja2.__version__,
        "llama_cpp_version": llama_cpp.__version__,
        "reverse_prompt": REVERSE_PROMPT,
        "end_of_turn": model["end_of_turn"],
        "pairs": model["pairs"],
        "spm_vocab": "llama-vocab/" + os.path.basename(args.spm_vocab),
        "spm": {
            "llama2": model_views(args.spm_vocab, LLAMA2_TEMPLATE, SPM_PAIRS),
            "mistral": model_views(args.spm_vocab, MISTRAL_TEMPLATE, SPM_PAIRS),
        },
    }
    text = json.dumps(out, ensure_ascii=False, indent=1)
    # One line per id array keeps the file short and diffs readable.
    text = re.sub(r"\[\s*(\d+(?:,\s*\d+)*)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    views = [v for p in out["pairs"] for v in p["views"]]
    longest = max(len(v["prompt_ids"]) + len(v["target_ids"]) for v in views)
    print(f"{len(out['pairs'])} pairs, end of turn {out['end_of_turn']!r}, longest view {longest} tokens; "
          f"SPM end of turn llama2 {out['spm']['llama2']['end_of_turn']!r}, mistral {out['spm']['mistral']['end_of_turn']!r} -> {args.out}")


if __name__ == "__main__":
    main()
