"""Shared fixtures: the fixture model, real Alpaca pairs with ids, and
main-score's scores of them (the reference every Python path must equal)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("MAIN_FIXTURES", ROOT / "fixtures"))
MODEL = FIXTURES / "SmolLM2-135M-Instruct.Q4_1.gguf"
ALPACA = FIXTURES / "alpaca_en_demo.jsonl"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
MAIN_SCORE = Path(os.environ.get("MAIN_SCORE", TARGET / "release" / "main-score"))

#: The §3 fields main-score writes without --negatives.
FIELDS = (
    "alignment", "fwd_pmi", "rev_pmi", "fwd_cond", "fwd_uncond", "rev_cond", "rev_uncond",
    "ifd", "rifd", "semantic", "structural", "intentional", "fwd_pmi_total", "rev_pmi_total",
    "response_tokens", "instruction_tokens", "truncated",
)


def need(path: Path, how: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: {how}")
    return path


@pytest.fixture(scope="session")
def model() -> str:
    return str(need(MODEL, "run scripts/fetch-fixtures"))


@pytest.fixture(scope="session")
def records() -> list[dict]:
    """96 real Alpaca pairs, short enough for CI (100-600 characters, as
    tests/data/scorer_views_f64.json chooses them), each with an ``id``: its
    0-based line in the data set. Every path must equal main-score on each
    of them bit for bit; the Ray job takes all 96 (8 blocks, batches of 16,
    2 actors), and each pair costs the reference and that job about a
    second on a 2-core AVX2 machine, so more pairs would add CI minutes and
    no path."""
    out = []
    with open(need(ALPACA, "run scripts/fetch-fixtures"), encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            r = json.loads(line)
            if 100 <= len(r["instruction"]) + len(r.get("input", "")) + len(r["output"]) <= 600:
                out.append({"id": line_no, **r})
            if len(out) == 96:
                break
    assert len(out) == 96
    assert any(r["input"] for r in out) and any(not r["input"] for r in out)
    return out


@pytest.fixture(scope="session")
def pairs_file(records, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def reference(records, pairs_file, model, tmp_path_factory) -> dict:
    """id -> the §3 fields of the "alignment" object main-score writes, parsed
    by Python's json (exact: serde_json writes shortest round-trip floats)."""
    binary = need(MAIN_SCORE, "build it: cargo build --release -p main-engine --bin main-score")
    out = tmp_path_factory.mktemp("main-score") / "scored.jsonl"
    subprocess.run(
        [binary, "score", "--model", model, "--input", pairs_file, "--output", out, "--threads", "2"],
        check=True,
        capture_output=True,
    )
    scored = {}
    with open(out, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            # The §3 fields; main-score adds bookkeeping of its own ("line").
            missing = set(FIELDS) - set(r["alignment"])
            assert not missing, f"main-score wrote no {missing}"
            scored[r["id"]] = {k: r["alignment"][k] for k in FIELDS}
    assert len(scored) == len(records)
    return scored


def same_bits(a, b) -> bool:
    """Equal as the same float64 (or int/bool) value, bit for bit."""
    if isinstance(a, float) or isinstance(b, float):
        return float(a).hex() == float(b).hex()
    return a == b and type(a) is type(b)


def assert_rows_equal(rows: list[dict], expected: list[dict]) -> None:
    assert len(rows) == len(expected)
    for i, (row, want) in enumerate(zip(rows, expected)):
        assert set(want) == set(FIELDS), want.keys()
        for k in FIELDS:
            assert same_bits(row[k], want[k]), f"row {i} field {k}: {row[k]!r} != main-score's {want[k]!r}"
