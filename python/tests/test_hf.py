"""main_align.hf on Hugging Face datasets: the same scores as Scorer.score."""

from __future__ import annotations

import datasets

from conftest import FIELDS, assert_rows_equal
from main_align import Scorer
from main_align.hf import map_scores


def test_dataset_map_gives_the_scores_of_score(model, records, reference):
    some = records[:12]
    ds = datasets.Dataset.from_list(some)
    scorer = Scorer(model, threads=1)
    # Two processes: each gets a pickled scorer and loads the model itself.
    scored = ds.map(map_scores(scorer, input="input"), batched=True, batch_size=4, num_proc=2)
    assert scored.column_names == list(some[0]) + list(FIELDS)
    rows = scored.to_list()
    assert [r["id"] for r in rows] == [r["id"] for r in some]
    direct = scorer.score(
        [r["instruction"] for r in some], [r["output"] for r in some], [r["input"] for r in some]
    ).to_pylist()
    assert_rows_equal([{k: r[k] for k in FIELDS} for r in rows], direct)
    assert_rows_equal(direct, [reference[r["id"]] for r in some])
