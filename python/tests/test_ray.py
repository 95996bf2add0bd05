"""A real local Ray cluster (ray.init(num_cpus=2), Ray from PyPI) running
python/examples/curate_ray.py: score_dataset on 2 actors writes Parquet equal
to main-score's scores, and a job killed midway and run again ends with
every id exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import FIELDS, ROOT, assert_rows_equal

EXAMPLE = ROOT / "python" / "examples" / "curate_ray.py"


def job(model, pairs: Path, out: Path, *extra) -> list:
    return [
        sys.executable, EXAMPLE, "--model", model, "--input", pairs, "--output", out,
        "--actors", "2", "--num-cpus", "2", *extra,
    ]


def read_rows(out: Path) -> list[dict]:
    files = sorted(out.glob("*.parquet"))
    assert files, f"no Parquet in {out}"
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def check_against_main_score(rows, records, reference):
    ids = Counter(r["id"] for r in rows)
    assert sorted(ids) == sorted(r["id"] for r in records)
    assert set(ids.values()) == {1}, [i for i, n in ids.items() if n > 1]
    by_id = {r["id"]: r for r in records}
    for row in rows:
        for k, v in by_id[row["id"]].items():  # input columns unchanged
            assert row[k] == v, (row["id"], k)
    rows = sorted(rows, key=lambda r: r["id"])
    assert_rows_equal([{k: r[k] for k in FIELDS} for r in rows], [reference[r["id"]] for r in rows])


def test_score_dataset_on_two_actors_equals_main_score(model, records, pairs_file, reference, tmp_path):
    out = tmp_path / "scored"
    r = subprocess.run(
        job(model, pairs_file, out, "--blocks", "8", "--batch-size", "16"),
        capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    check_against_main_score(read_rows(out), records, reference)


def readable_ids(out: Path) -> list:
    ids = []
    for f in out.glob("*.parquet"):
        try:
            ids += pq.read_table(f, columns=["id"]).column("id").to_pylist()
        except Exception:  # a file being written when the job was killed
            pass
    return ids


def test_killed_job_resumes_with_every_id_once(model, records, reference, tmp_path):
    some = records[:64]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in some), encoding="utf-8")
    out, ckpt = tmp_path / "scored", tmp_path / "checkpoint"
    cmd = job(model, pairs, out, "--blocks", "8", "--batch-size", "8", "--checkpoint", ckpt)

    # First run: SIGKILL the driver once some rows are written, not all.
    driver = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 600
    while not readable_ids(out):
        assert driver.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "no rows written in 10 minutes"
        time.sleep(0.2)
    # A file's rows count once its checkpoint is committed, just after the
    # file is written: give that a moment, so some rows are surely kept.
    time.sleep(2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert driver.returncode == -signal.SIGKILL
    stop_leftovers(driver.pid)
    before = readable_ids(out)
    assert 0 < len(set(before)) < len(some), f"not midway: {len(before)} of {len(some)} rows written"
    first_files = {f.name for f in out.glob("*.parquet")}

    # Second run, the same command: it skips what the first one wrote.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    check_against_main_score(read_rows(out), some, reference)
    # Resumed, not redone: files the first run finished are still there.
    kept = first_files & {f.name for f in out.glob("*.parquet")}
    assert kept, "the second run rewrote everything"


def stop_leftovers(group: int) -> None:
    """Ray's own processes share the killed driver's fate; anything of the
    driver's process group still alive after 30 s is stopped, so the next
    cluster starts on free cores."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_score_dataset_checks_arguments_in_the_driver(model):
    from main_align import ArgumentError
    from main_align.ray import score_dataset

    for kwargs in (
        dict(instruction=3),
        dict(batch_size=0),
        dict(threads="1"),
        dict(concurrency=0),
        dict(concurrency=(2, 1)),
        dict(concurrency="2"),
        dict(tasks_per_actor=0),
        dict(tasks_per_actor=True),
    ):
        with pytest.raises(ArgumentError, match=f"'{next(iter(kwargs))}'"):
            score_dataset(object(), model, **kwargs)
    with pytest.raises(ArgumentError, match="'model'"):
        score_dataset(object(), 5)
