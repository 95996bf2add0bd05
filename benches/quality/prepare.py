"""Builds the labelled sets of the quality benchmark as JSONL for main-score.

Every set comes from PyPI: LLaMA-Factory's source package, which
scripts/fetch-fixtures downloads and checks against its SHA-256.

  dpo_en   300 prompts, each with a chosen and a rejected response (pairwise)
  dpo_zh   the same shape in Chinese (the fixture model is English-only)
  kto_en   300 prompts, each with one response labelled desirable or not

A record is `{"prompt": x, "response": y, "quality": {...}}`: main-score reads
`prompt`/`response` and passes `quality` through untouched. `quality` holds
the set, the group (the prompt a pairwise comparison shares), the label (1:
chosen / desirable, 0: rejected / undesirable) and the kind: "true" for the
data set's own pairs, "mismatch" for an instruction given another group's
response (the mismatch filter's negatives).

Multi-turn records: main-score scores an instruction and one response (the
first user and assistant turns of a conversation), so the instruction is the
last user turn with the system message and the earlier turns written before
it as plain text ("System: ...", "User: ...", "Assistant: ..."): the response
is judged in the context it answered.
"""

import json
import sys
import tarfile

SDIST_MEMBERS = {
    "dpo_en": "data/dpo_en_demo.json",
    "dpo_zh": "data/dpo_zh_demo.json",
    "kto_en": "data/kto_en_demo.json",
}

ROLE = {"human": "User", "user": "User", "gpt": "Assistant", "assistant": "Assistant", "system": "System"}


def flatten(turns, last_user):
    """The instruction: earlier turns as plain text, then the last user turn."""
    if not turns:
        return last_user
    history = "\n\n".join(f"{ROLE[r]}: {t}" for r, t in turns)
    return f"{history}\n\nUser: {last_user}"


def dpo_records(data, name):
    out = []
    for g, r in enumerate(data):
        turns = [(m["from"], m["value"]) for m in r["conversations"]]
        role, last = turns[-1]
        if role != "human":
            raise ValueError(f"{name} record {g}: the conversation does not end with a user turn")
        x = flatten(turns[:-1], last)
        for label, key in ((1, "chosen"), (0, "rejected")):
            out.append({"prompt": x, "response": r[key]["value"],
                        "quality": {"set": name, "group": g, "label": label, "kind": "true"}})
    return out


def kto_records(data, name):
    out = []
    for g, r in enumerate(data):
        turns = [(m["role"], m["content"]) for m in r["messages"]]
        if len(turns) < 2 or turns[-1][0] != "assistant" or turns[-2][0] != "user":
            raise ValueError(f"{name} record {g}: does not end with a user turn and its answer")
        x = flatten(turns[:-2], turns[-2][1])
        out.append({"prompt": x, "response": turns[-1][1],
                    "quality": {"set": name, "group": g, "label": int(bool(r["label"])), "kind": "true"}})
    return out


def mismatches(records, name, n):
    """`n` instructions each given the response of a group half the set away."""
    groups = sorted({r["quality"]["group"] for r in records})
    by_group = {}
    for r in records:
        by_group.setdefault(r["quality"]["group"], r)
    out = []
    step = max(1, len(groups) // 2)
    for i, g in enumerate(groups[:n]):
        other = by_group[groups[(i + step) % len(groups)]]
        out.append({"prompt": by_group[g]["prompt"], "response": other["response"],
                    "quality": {"set": name, "group": g, "label": -1, "kind": "mismatch"}})
    return out


def load_sets(sdist, version, sets, groups=None, n_mismatch=100):
    """Records of each set in `sets` (the first `groups` groups when given)."""
    records = []
    with tarfile.open(sdist) as t:
        for name in sets:
            member = SDIST_MEMBERS[name]
            raw = t.extractfile(f"llamafactory-{version}/{member}").read()
            data = json.loads(raw)
            if groups is not None:
                data = data[:groups]
            rs = kto_records(data, name) if name.startswith("kto") else dpo_records(data, name)
            records += rs + mismatches(rs, name, min(n_mismatch, len(data)))
    return records


if __name__ == "__main__":
    sdist, version, out = sys.argv[1:4]
    rs = load_sets(sdist, version, ["dpo_en", "kto_en", "dpo_zh"])
    with open(out, "w", encoding="utf-8") as f:
        for r in rs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rs)} records -> {out}", file=sys.stderr)
