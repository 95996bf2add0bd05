"""Speed of the Python package against main-score on 200 real pairs.

    cache/python/bin/python benches/python_speed.py [--rounds 2] [--pairs 200]

Run it with the environment scripts/test-python makes (main_align, ray),
after `cargo build --release -p main-engine --bin main-score`. It prints:

1. main-score --threads 2 (one process, end to end) against main_align's
   Scorer(threads=2) loading the model and scoring the same pairs in a fresh
   interpreter (the pyarrow table built from the JSONL beforehand);
2. the same main-score against Ray Data on a local cluster (ray.init(num_cpus=2),
   started before the clock, stopped after each round): read_json ->
   score_dataset on 2 actors with one thread each -> write_parquet, actor
   starts and model loads included.

Each measurement is repeated --rounds times, interleaved, and the fastest
of each kept (the least disturbed by other load). It checks that all three
give the same scores and prints the ratios (Python / main-score,
Ray / main-score): speed is read from here, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("MAIN_FIXTURES", ROOT / "fixtures"))
MODEL = FIXTURES / "SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
MAIN_SCORE = Path(os.environ.get("MAIN_SCORE", TARGET / "release" / "main-score"))
FIELDS = (
    "alignment", "fwd_pmi", "rev_pmi", "fwd_cond", "fwd_uncond", "rev_cond", "rev_uncond",
    "ifd", "rifd", "semantic", "structural", "intentional", "fwd_pmi_total", "rev_pmi_total",
    "response_tokens", "instruction_tokens", "truncated",
)


def real_pairs(n: int) -> list[dict]:
    """The first n Alpaca pairs of 100-600 characters (the tests' selection)."""
    out = []
    with open(FIXTURES / "alpaca_en_demo.jsonl", encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            r = json.loads(line)
            if 100 <= len(r["instruction"]) + len(r["input"]) + len(r["output"]) <= 600:
                out.append({"id": line_no, **r})
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} pairs of that size")


def run_main_score(pairs: Path, out: Path) -> tuple[float, dict]:
    out.unlink(missing_ok=True)
    for side in out.parent.glob(out.name + ".*"):
        side.unlink()
    t0 = time.perf_counter()
    subprocess.run(
        [MAIN_SCORE, "score", "--model", MODEL, "--input", pairs, "--output", out, "--threads", "2"],
        check=True, capture_output=True,
    )
    secs = time.perf_counter() - t0
    scores = {}
    for line in open(out, encoding="utf-8"):
        r = json.loads(line)
        scores[r["id"]] = {k: r["alignment"][k] for k in FIELDS}
    return secs, scores


PYTHON_RUN = """
import json, sys, time
import pyarrow as pa
from main_align import Scorer
fields = json.loads(sys.argv[3])
table = pa.Table.from_pylist([json.loads(l) for l in open(sys.argv[2], encoding="utf-8")])
t0 = time.perf_counter()
scored = Scorer(sys.argv[1], threads=2).score_table(table, input="input")
secs = time.perf_counter() - t0
print(json.dumps({"secs": secs, "scores": {r["id"]: {k: r[k] for k in fields} for r in scored.to_pylist()}}))
"""


def run_python(pairs: Path) -> tuple[float, dict]:
    """main_align in a fresh interpreter (no Ray in it), timed from loading
    the model to the scored table, as main-score's run is."""
    r = subprocess.run(
        [sys.executable, "-c", PYTHON_RUN, MODEL, pairs, json.dumps(FIELDS)],
        check=True, capture_output=True, text=True,
    )
    out = json.loads(r.stdout)
    return out["secs"], {int(k): v for k, v in out["scores"].items()}


def run_ray(pairs: Path, out: Path) -> tuple[float, dict]:
    """A local cluster started for this round (not timed), then read ->
    score on 2 one-thread actors -> write, timed, actor starts included."""
    import shutil

    import pyarrow.parquet as pq
    import ray
    import ray.data

    from main_align.ray import score_dataset

    shutil.rmtree(out, ignore_errors=True)
    # As python/examples/curate_ray.py: workers kept for the read and write
    # tasks, instead of a process started and killed per task.
    os.environ.setdefault("RAY_num_workers_soft_limit", "4")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        t0 = time.perf_counter()
        io = dict(num_cpus=0)  # the actors hold both CPUs (see python/examples/curate_ray.py)
        ds = ray.data.read_json(str(pairs), override_num_blocks=25, **io)
        ds = score_dataset(ds, MODEL, input="input", concurrency=2, num_cpus=1, batch_size=8)
        ds.write_parquet(str(out), ray_remote_args=io)
        secs = time.perf_counter() - t0
    finally:
        ray.shutdown()
    rows = pq.read_table(out).to_pylist()
    return secs, {r["id"]: {k: r[k] for k in FIELDS} for r in rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--no-ray", action="store_true")
    a = p.parse_args()

    records = real_pairs(a.pairs)
    tmp = Path(tempfile.mkdtemp(prefix="main-python-bench-"))
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load before: {os.getloadavg()}", flush=True)
    best = {"main-score": 1e9, "python": 1e9, "ray": 1e9}
    ref = None
    for r in range(a.rounds):
        secs, scores = run_main_score(pairs, tmp / "scored.jsonl")
        best["main-score"] = min(best["main-score"], secs)
        ref = ref or scores
        print(f"round {r + 1}: main-score {secs:.2f} s", flush=True)
        secs, scores = run_python(pairs)
        assert scores == ref, "Python scores differ from main-score's"
        best["python"] = min(best["python"], secs)
        print(f"round {r + 1}: python     {secs:.2f} s", flush=True)
        if not a.no_ray:
            secs, scores = run_ray(pairs, tmp / "ray-out")
            assert scores == ref, "Ray scores differ from main-score's"
            best["ray"] = min(best["ray"], secs)
            print(f"round {r + 1}: ray        {secs:.2f} s", flush=True)
    n = len(records)
    print(f"\n{n} pairs, fastest of {a.rounds} (load after: {os.getloadavg()}):")
    for k, v in best.items():
        if v < 1e9:
            print(f"  {k:10s} {v:7.2f} s  {n / v:5.2f} pairs/s  ratio to main-score {v / best['main-score']:.3f}")
    print("scores: identical in all three (bit for bit)")


if __name__ == "__main__":
    sys.exit(main())
