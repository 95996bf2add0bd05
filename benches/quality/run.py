#!/usr/bin/env python3
"""The quality benchmark: every MAIN score, and the peers', against labels.

    python3 benches/quality/run.py               # the full tables (BENCHMARKS.md), ~1-2 h on 2 cores
    python3 benches/quality/run.py --small       # the CI version: a few groups per set, short views
    python3 benches/quality/run.py --small --check benches/quality/expected_small.json

It builds the labelled sets (prepare.py, from LLaMA-Factory's PyPI source
package that scripts/fetch-fixtures downloads), scores them with main-score
(resumable: a killed run continues where it stopped), and prints, for each
set and each score used in its keep direction:

  agree    share of (better, worse) comparisons the score orders the labels'
           way (pairwise sets: the chosen and rejected answer to one prompt;
           kto_en: every desirable against every undesirable record), ties half
  agr|len  the same on comparisons whose two responses are within 25% of
           each other's length in tokens (n: how many)
  AUC      better against worse records, pooled
  rho      rank correlation with the label
  rho|len  partial rank correlation with the label, log length held fixed
  rho_len  rank correlation with response length (the confound)
  keep     label mean of the half `--keep-top 0.5` keeps minus the half it drops
  mmAUC    true pairs against the same instructions given another prompt's
           response (the mismatch filter's job)

Scores are read from main-score's output records; peers are computed from
the same records: Cherry-LLM's IFD (keep the highest IFD below 1, as
Cherry's selection does), plain perplexity of the response given the
instruction (keep low), and response length (keep long).

--check compares the measured agreement of every score with an expected-
values file and fails on any change beyond one comparison (the rounding of
another instruction set can flip a near-tie); --write-expected rewrites it.
"""

import argparse
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import metrics  # noqa: E402
import prepare  # noqa: E402

LLAMAFACTORY_VERSION = "0.9.4"
DEFAULT_MAIN_SCORE = os.path.join(ROOT, "target", "release", "main-score")

# (name, how it is read from a record's "alignment" object, direction).
# direction +1: keep high; -1: keep low (negated before ranking).
SCORES = [
    ("alignment", lambda a: a["alignment"], +1),
    ("fwd_pmi", lambda a: a["fwd_pmi"], +1),
    ("rev_pmi", lambda a: a["rev_pmi"], +1),
    ("fwd_pmi_total", lambda a: a["fwd_pmi_total"], +1),
    ("rev_pmi_total", lambda a: a["rev_pmi_total"], +1),
    ("semantic", lambda a: a["semantic"], +1),
    ("structural", lambda a: a["structural"], +1),
    ("fwd_cond", lambda a: a["fwd_cond"], +1),
    ("fwd_uncond", lambda a: a["fwd_uncond"], +1),
    ("rev_cond", lambda a: a["rev_cond"], +1),
    ("rev_uncond", lambda a: a["rev_uncond"], +1),
    # Peers.
    ("cherry_ifd", lambda a: a["ifd"] if a["ifd"] < 1 else -math.inf, +1),
    ("perplexity", lambda a: math.exp(-a["fwd_cond"]), -1),
    ("length", lambda a: a["response_tokens"], +1),
]

# Scores of a record relative to its data set, computed here (they need
# every record first, so the fused pass cannot give them per pair):
# fwd_pmi minus what an ordinary least-squares line on log response length
# predicts for a response of that length in the same set.
DERIVED = ["fwd_pmi_lenadj"]


def length_adjusted(values, loglen):
    """Residuals of `values` after a least-squares fit on `loglen`."""
    n = len(values)
    mx, my = sum(loglen) / n, sum(values) / n
    sxx = sum((x - mx) ** 2 for x in loglen)
    b = sum((x - mx) * (y - my) for x, y in zip(loglen, values)) / sxx if sxx else 0.0
    return [y - (my + b * (x - mx)) for x, y in zip(loglen, values)]


def agreement_ci(value, comps, pairwise, n_pos, n_neg):
    """Half-width of a 95% interval of `agree`: binomial over independent
    pairwise comparisons; Hanley and McNeil's AUC standard error where every
    positive is compared with every negative."""
    if comps == 0 or math.isnan(value):
        return float("nan")
    if pairwise:
        return 1.96 * math.sqrt(value * (1 - value) / comps)
    a = value
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return 1.96 * math.sqrt(max(var, 0.0))


def score_file(main_score, records_path, out_path, args, extra=()):
    cmd = [main_score, "score", "--input", records_path, "--output", out_path,
           "--precision", "exact", "--threads", str(args.threads),
           "--max-tokens", str(args.max_tokens), "--progress", *extra]
    if args.model:
        cmd += ["--model", args.model]
    print("quality: " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def write_if_changed(path, records):
    """Rewritten only when it changes, so a resumed run sees the same input."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def score_sets(records, out, args):
    """Scores each set's own pairs with main-score's default `--keep-top 0.5`
    (what a curator runs: the kept file is read back to measure the filter
    itself) and its mismatched pairs; returns every scored record and, per
    set, the kept records' input lines."""
    scored, kept = [], {}
    for st in sorted({r["quality"]["set"] for r in records}):
        true = [r for r in records if r["quality"]["set"] == st and r["quality"]["kind"] == "true"]
        mism = [r for r in records if r["quality"]["set"] == st and r["quality"]["kind"] == "mismatch"]
        inp, kept_path = os.path.join(out, f"{st}.jsonl"), os.path.join(out, f"{st}.kept.jsonl")
        write_if_changed(inp, true)
        score_file(args.main_score, inp, kept_path, args, ["--keep-top", "0.5"])
        scored += read_jsonl(kept_path + ".scored.jsonl")
        with open(kept_path + ".provenance.json", encoding="utf-8") as f:
            rank_by = json.load(f)["filter"]["rank_by"]
        kept[st] = {"lines": {r["alignment"]["line"] for r in read_jsonl(kept_path)}, "rank_by": rank_by}
        if mism:
            minp, mout = os.path.join(out, f"{st}.mismatch.jsonl"), os.path.join(out, f"{st}.mismatch.scored.jsonl")
            write_if_changed(minp, mism)
            score_file(args.main_score, minp, mout, args)
            scored += read_jsonl(mout)
    return scored, kept


def comparisons(true, pairwise):
    """(better, worse) index pairs of the set's true records."""
    if pairwise:
        by = {}
        for i, r in enumerate(true):
            by.setdefault(r["quality"]["group"], {})[r["quality"]["label"]] = i
        return [(g[1], g[0]) for g in by.values() if 0 in g and 1 in g]
    pos = [i for i, r in enumerate(true) if r["quality"]["label"] == 1]
    neg = [i for i, r in enumerate(true) if r["quality"]["label"] == 0]
    return [(p, n) for p in pos for n in neg]


def evaluate(records, kept_lines=None):
    """{set: {score: {metric: value}}} over the scored records; with
    `kept_lines` ({set: input lines main-score --keep-top 0.5 kept}), also
    the label mean of main-score's kept half minus its dropped half."""
    results = {}
    for st in sorted({r["quality"]["set"] for r in records}):
        true = [r for r in records if r["quality"]["set"] == st and r["quality"]["kind"] == "true"]
        mism = [r for r in records if r["quality"]["set"] == st and r["quality"]["kind"] == "mismatch"]
        mism_groups = {r["quality"]["group"] for r in mism}
        labels = [r["quality"]["label"] for r in true]
        lens = [r["alignment"]["response_tokens"] for r in true]
        loglen = [math.log(max(n, 1)) for n in lens]
        comps = comparisons(true, st.startswith("dpo"))
        matched = [(b, w) for b, w in comps if abs(loglen[b] - loglen[w]) <= math.log(1.25)]
        per = {"_n": {"true": len(true), "comparisons": len(comps), "length_matched": len(matched),
                      "mismatch": len(mism)}}
        if kept_lines is not None:
            lines = kept_lines[st]["lines"]
            k = [r["quality"]["label"] for r in true if r["alignment"]["line"] in lines]
            d = [r["quality"]["label"] for r in true if r["alignment"]["line"] not in lines]
            per["_main_score_keep_top_half"] = {
                "rank_by": kept_lines[st]["rank_by"],
                "kept": len(k), "dropped": len(d),
                "kept_label_mean": sum(k) / len(k) if k else float("nan"),
                "dropped_label_mean": sum(d) / len(d) if d else float("nan"),
            }
        columns = {name: [sign * read(r["alignment"]) for r in true] for name, read, sign in SCORES}
        columns["fwd_pmi_lenadj"] = length_adjusted(columns["fwd_pmi"], loglen)
        reads = {name: (read, sign) for name, read, sign in SCORES}
        n_pos, n_neg = labels.count(1), labels.count(0)
        for name, v in columns.items():
            kept, dropped = metrics.keep_top_half(v, labels)
            m = {
                "agree": metrics.agreement([(v[b], v[w]) for b, w in comps]),
                "agree_len_matched": metrics.agreement([(v[b], v[w]) for b, w in matched]),
                "auc": metrics.auc([x for x, l in zip(v, labels) if l == 1], [x for x, l in zip(v, labels) if l == 0]),
                "rho": metrics.spearman(v, labels),
                "rho_given_len": metrics.partial_spearman(v, labels, loglen),
                "rho_len": metrics.spearman(v, lens),
                "keep_top_half": kept - dropped,
            }
            m["agree_ci95"] = agreement_ci(m["agree"], len(comps), st.startswith("dpo"), n_pos, n_neg)
            if mism and name in reads:
                read, sign = reads[name]
                own = [x for x, r in zip(v, true) if r["quality"]["group"] in mism_groups
                       and (r["quality"]["label"] == 1 or not st.startswith("dpo"))]
                m["mismatch_auc"] = metrics.auc(own, [sign * read(r["alignment"]) for r in mism])
            per[name] = m
        results[st] = per
    return results


def fmt(x, w=6):
    return f"{'-':>{w}}" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{w}.3f}"


def print_tables(results):
    for st, per in results.items():
        n = per["_n"]
        print(f"\n{st}: {n['true']} records, {n['comparisons']} comparisons "
              f"({n['length_matched']} length-matched), {n['mismatch']} mismatched")
        k = per.get("_main_score_keep_top_half")
        if k:
            print(f"main-score --keep-top 0.5 (default ranking {k['rank_by']}): kept {k['kept']} with label mean "
                  f"{k['kept_label_mean']:.3f}, dropped {k['dropped']} with {k['dropped_label_mean']:.3f}")
        print(f"{'score':<15} {'agree':>6} {'±95%':>6} {'agr|len':>7} {'AUC':>6} {'rho':>6} {'rho|len':>7} "
              f"{'rho_len':>7} {'keep':>6} {'mmAUC':>6}")
        for name in [n for n, _, _ in SCORES] + DERIVED:
            m = per[name]
            print(f"{name:<15} {fmt(m['agree'])} {fmt(m['agree_ci95'])} {fmt(m['agree_len_matched'], 7)} {fmt(m['auc'])} "
                  f"{fmt(m['rho'])} {fmt(m['rho_given_len'], 7)} {fmt(m['rho_len'], 7)} "
                  f"{fmt(m['keep_top_half'])} {fmt(m.get('mismatch_auc'))}")


# MAIN's own fields, the candidates for the default ranking.
CANDIDATES = ["alignment", "fwd_pmi", "rev_pmi", "fwd_pmi_total", "rev_pmi_total", "semantic",
              "structural", "fwd_cond", "fwd_uncond", "rev_cond", "rev_uncond"]


def default_rule(results):
    """The fields that meet the default's rule on every set (README, "What
    the scores mean"): (a) |rho_len| < 0.5, (b) agreement at least Cherry-
    LLM's IFD's, raw and length-matched, (c) a kept half rated better than
    the dropped one (this field's own --keep-top 0.5); best mean agreement
    first."""
    ok = []
    for name in CANDIDATES:
        per_set = [per[name] for per in results.values()]
        cherry = [per["cherry_ifd"] for per in results.values()]
        if all(abs(m["rho_len"]) < 0.5 and m["agree"] >= c["agree"]
               and m["agree_len_matched"] >= c["agree_len_matched"] and m["keep_top_half"] > 0
               for m, c in zip(per_set, cherry)):
            ok.append((sum(m["agree"] for m in per_set) / len(per_set), name))
    return [name for _, name in sorted(ok, reverse=True)]


def print_verdicts(results):
    """The issue's claims about the default ranking, set by set."""
    print()
    print("fields meeting the default's rule on every set, best mean agreement first: "
          + (", ".join(default_rule(results)) or "none"))
    for st, per in results.items():
        k = per.get("_main_score_keep_top_half")
        if not k:
            continue
        name = k["rank_by"].lstrip("-")
        if name not in per:
            print(f"{st}: the default ranking {k['rank_by']} is not in the table")
            continue
        d, c = per[name], per["cherry_ifd"]
        raw = d["agree"] >= c["agree"]
        matched = d["agree_len_matched"] >= c["agree_len_matched"]
        better = k["kept_label_mean"] > k["dropped_label_mean"]
        word = lambda ok: "holds" if ok else "DOES NOT HOLD"
        print(f"{st}: default {k['rank_by']} agrees {d['agree']:.3f} vs Cherry IFD {c['agree']:.3f} ({word(raw)}); "
              f"length-matched {d['agree_len_matched']:.3f} vs {c['agree_len_matched']:.3f} ({word(matched)}); "
              f"kept half rated {k['kept_label_mean']:.3f} vs dropped {k['dropped_label_mean']:.3f} ({word(better)})")


def check(results, expected_path):
    with open(expected_path) as f:
        expected = json.load(f)
    problems = []
    for st, per in expected["agree"].items():
        n = results.get(st, {}).get("_n", {}).get("comparisons")
        if not n:
            problems.append(f"{st}: not measured")
            continue
        for name, want in per.items():
            got = results[st].get(name, {}).get("agree")
            if got is None:
                problems.append(f"{st} {name}: not measured")
            elif abs(got - want) > 1.0 / n + 1e-9:
                problems.append(f"{st} {name}: agreement {got:.4f}, expected {want:.4f} (one comparison is {1.0 / n:.4f})")
    if problems:
        print("quality: the measured agreement changed; if that is intended, rerun with "
              f"--write-expected {expected_path} and commit the file with the change:", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        sys.exit(1)
    print(f"quality: every agreement matches {expected_path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="the CI version: 24 groups per English set, views cut at 256 tokens")
    ap.add_argument("--sets", default=None, help="comma-separated, of dpo_en, kto_en, dpo_zh (default: dpo_en,kto_en)")
    ap.add_argument("--groups", type=int, default=None, help="first N groups (prompts) of each set")
    ap.add_argument("--mismatch", type=int, default=None, help="mismatched pairs per set (default 60; --small 12)")
    ap.add_argument("--max-tokens", type=int, default=None, help="main-score --max-tokens (default 512; --small 256)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="main-score --model (default: the fixture model)")
    ap.add_argument("--main-score", default=DEFAULT_MAIN_SCORE)
    ap.add_argument("--out", default=None, help="work folder (default target/quality or target/quality-small)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--check", default=None, metavar="EXPECTED")
    ap.add_argument("--write-expected", default=None, metavar="EXPECTED")
    args = ap.parse_args()
    small = args.small
    sets = (args.sets or "dpo_en,kto_en").split(",")
    groups = args.groups if args.groups is not None else (24 if small else None)
    n_mismatch = args.mismatch if args.mismatch is not None else (12 if small else 60)
    if args.max_tokens is None:
        args.max_tokens = 256 if small else 512
    out = args.out or os.path.join(ROOT, "target", "quality-small" if small else "quality")
    os.makedirs(out, exist_ok=True)

    sdist = os.path.join(os.environ.get("MAIN_FIXTURES", os.path.join(ROOT, "fixtures")), ".downloads",
                         f"llamafactory-{LLAMAFACTORY_VERSION}.tar.gz")
    # One command from a fresh clone: what is missing is fetched or built
    # (the fixtures script is idempotent and checks every download).
    if not os.path.exists(sdist):
        print("quality: fetching the labelled data and the model (scripts/fetch-fixtures)", file=sys.stderr)
        subprocess.run([os.path.join(ROOT, "scripts", "fetch-fixtures")], check=True)
    if not os.path.exists(args.main_score):
        if args.main_score != DEFAULT_MAIN_SCORE:
            sys.exit(f"quality: {args.main_score} is missing")
        print("quality: building main-score (cargo build --release)", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "-p", "main-engine", "--bin", "main-score"],
                       cwd=ROOT, check=True)
    records = prepare.load_sets(sdist, LLAMAFACTORY_VERSION, sets, groups, n_mismatch)
    scored, kept = score_sets(records, out, args)
    results = evaluate(scored, kept)
    print_tables(results)
    print_verdicts(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.write_expected:
        agree = {st: {name: round(per[name]["agree"], 6) for name in [n for n, _, _ in SCORES] + DERIVED}
                 for st, per in results.items()}
        with open(args.write_expected, "w") as f:
            json.dump({"note": "written by benches/quality/run.py --write-expected; "
                               "the agreement of each score on each set", "agree": agree}, f, indent=1)
            f.write("\n")
        print(f"quality: wrote {args.write_expected}", file=sys.stderr)
    if args.check:
        check(results, args.check)


if __name__ == "__main__":
    main()
