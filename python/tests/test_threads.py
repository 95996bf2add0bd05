"""The GIL is released while the engine works."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from main_align import Scorer


def pairs(records, n):
    few = records[50 : 50 + n]
    return [r["instruction"] for r in few], [r["output"] for r in few], [r["input"] for r in few]


def test_python_runs_while_the_engine_scores(model, records):
    """A Python loop in the main thread keeps running during a score call in
    another thread: with the GIL held it would stand still for seconds."""
    s = Scorer(model, threads=1)
    args = pairs(records, 4)
    t = threading.Thread(target=s.score, args=args)
    spins = 0
    t.start()
    while t.is_alive():
        spins += 1
    t.join()
    assert spins > 10_000, spins


def test_two_threads_score_in_parallel(model, records):
    """Two threads with a scorer each (one engine thread each) take less than
    1.6x the time of one thread doing the same work alone (2 cores). The best
    of three tries, so one burst of outside load does not decide."""
    a, b = Scorer(model, threads=1), Scorer(model, threads=1)
    args = pairs(records, 6)
    a.score(*args), b.score(*args)  # warm: page in the weights, size the scratch

    def alone():
        t0 = time.perf_counter()
        a.score(*args)
        return time.perf_counter() - t0

    def together():
        ts = [threading.Thread(target=s.score, args=args) for s in (a, b)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return time.perf_counter() - t0

    ratios = []
    for _ in range(3):
        one, two = alone(), together()
        ratios.append(two / one)
        print(f"two scorers on two threads: {two:.2f} s; one alone: {one:.2f} s; ratio {two / one:.2f}")
        if ratios[-1] < 1.6:
            break
    if min(ratios) >= 1.6 and machine_scaling() > 1.3:
        # A machine shared with other work cannot show anyone's scaling:
        # asserted only where two busy processes run side by side.
        pytest.skip(f"two busy processes take {machine_scaling():.2f}x one here; scorer ratios {ratios}")
    assert min(ratios) < 1.6, f"two threads / one thread = {ratios}"


def machine_scaling() -> float:
    """Wall time of two CPU-bound processes side by side over one alone."""
    busy = [sys.executable, "-c", "sum(i * i for i in range(6_000_000))"]

    def run(n):
        t0 = time.perf_counter()
        ps = [subprocess.Popen(busy) for _ in range(n)]
        for p in ps:
            p.wait()
        return time.perf_counter() - t0

    return run(2) / run(1)


def test_one_scorer_shared_by_two_threads(model, records):
    """Two threads on the same scorer take turns (it serves one at a time)
    and both get the right scores."""
    s = Scorer(model, threads=2)
    args = pairs(records, 3)
    want = s.score(*args)
    got = [None, None]

    def run(i):
        got[i] = s.score(*args)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got[0].equals(want) and got[1].equals(want)
