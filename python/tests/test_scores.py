"""The Python path gives main-score's scores, bit for bit, on 50 real pairs."""

from __future__ import annotations

import math
import pickle

import pyarrow as pa
import pytest

from conftest import FIELDS, assert_rows_equal, same_bits
from main_align import SCORE_FIELDS, Scorer, score_schema


@pytest.fixture(scope="module")
def scorer(model):
    return Scorer(model, threads=2)


@pytest.fixture(scope="module")
def fifty(records):
    return records[:50]


def test_score_equals_main_score(scorer, fifty, reference):
    t = scorer.score(
        [r["instruction"] for r in fifty],
        [r["output"] for r in fifty],
        [r["input"] for r in fifty],
    )
    assert t.schema == score_schema()
    assert t.column_names == [f for f in SCORE_FIELDS if f != "contrastive"]
    assert list(FIELDS) == t.column_names
    assert_rows_equal(t.to_pylist(), [reference[r["id"]] for r in fifty])


def test_score_table_keeps_columns_and_equals_main_score(scorer, fifty, reference):
    table = pa.Table.from_pylist(fifty)
    out = scorer.score_table(table, instruction="instruction", response="output", input="input")
    # Every input column, the id first among them, comes back unchanged.
    assert out.column_names[: table.num_columns] == table.column_names
    for name in table.column_names:
        assert out.column(name).equals(table.column(name)), name
    assert out.column_names[table.num_columns :] == list(FIELDS)
    rows = out.to_pylist()
    assert [r["id"] for r in rows] == [r["id"] for r in fifty]
    assert_rows_equal(rows, [reference[r["id"]] for r in fifty])


def test_pylist_output_and_batch_size(scorer, fifty, reference):
    few = fifty[:6]
    rows = scorer.score(
        [r["instruction"] for r in few],
        [r["output"] for r in few],
        [r["input"] for r in few],
        output="pylist",
        batch_size=4,
    )
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    assert_rows_equal(rows, [reference[r["id"]] for r in few])


def test_pickle_round_trip(scorer, fifty):
    few = fifty[:3]
    copy = pickle.loads(pickle.dumps(scorer))
    assert copy is not scorer and copy.arguments == scorer.arguments
    assert copy.precision == scorer.precision
    args = ([r["instruction"] for r in few], [r["output"] for r in few], [r["input"] for r in few])
    assert copy.score(*args).equals(scorer.score(*args))


def test_threads_none_follows_omp_num_threads(model, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    s = Scorer(model)
    assert s.arguments["threads"] is None
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    from main_align import ArgumentError

    with pytest.raises(ArgumentError, match="OMP_NUM_THREADS"):
        Scorer(model)


def test_options_change_scores(model, fifty):
    """combine and negatives reach the engine: mean is the mean of the two
    PMIs, and negatives add a contrastive column."""
    few = fifty[:4]
    x, y = [r["instruction"] for r in few], [r["output"] for r in few]
    t = Scorer(model, threads=2, combine="mean", negatives=2).score(x, y, batch_size=4)
    assert "contrastive" in t.column_names
    for r in t.to_pylist():
        assert same_bits(r["alignment"], 0.5 * (r["fwd_pmi"] + r["rev_pmi"]))
        assert math.isfinite(r["contrastive"])
    short = Scorer(model, threads=2, precision="exact", max_tokens=48).score(x, y)
    assert short.column("truncated").to_pylist() == [True] * 4
    assert max(short.column("response_tokens").to_pylist()) < 48
    from main_align import InputError

    with pytest.raises(InputError, match="'max_tokens': 16 cannot hold the chat template"):
        Scorer(model, max_tokens=16).score(x, y)


def test_empty_input(scorer):
    t = scorer.score([], [])
    assert t.num_rows == 0 and t.schema == score_schema()
