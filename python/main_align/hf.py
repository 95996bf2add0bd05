"""MAIN on Hugging Face ``datasets``: a function for
``Dataset.map(batched=True)`` that adds the score columns.

>>> from datasets import Dataset
>>> from main_align import Scorer
>>> from main_align.hf import map_scores
>>> ds = Dataset.from_dict({"instruction": ["Say hi."], "output": ["Hi!"]})
>>> ds = ds.map(map_scores(scorer), batched=True, batch_size=64)
>>> "alignment" in ds.column_names
True

With ``num_proc=N`` each process gets a pickled copy of the function and its
scorer, which loads the model again there; give the scorer ``threads=1``
(or cores / N) so the processes share the cores.
"""

from __future__ import annotations

from typing import Optional

from . import ArgumentError, Scorer

__all__ = ["map_scores", "ScoreMap"]


class ScoreMap:
    """A picklable function of a batch (a dict of column -> list) that
    returns the score columns (a dict of column -> list), for
    ``Dataset.map(batched=True)``; ``map`` keeps the other columns."""

    def __init__(
        self,
        scorer: Scorer,
        instruction: str = "instruction",
        response: str = "output",
        input: Optional[str] = None,
        prefix: str = "",
    ) -> None:
        if not isinstance(scorer, Scorer):
            raise ArgumentError(
                f"invalid argument 'scorer': expected a main_align.Scorer, got {type(scorer).__name__}"
            )
        self.scorer = scorer
        self.columns = (instruction, response, input)
        self.prefix = prefix

    def __call__(self, batch: dict) -> dict:
        instruction, response, input = self.columns
        for role, name in (("instruction", instruction), ("response", response), ("input", input)):
            if name is not None and name not in batch:
                raise ArgumentError(
                    f"invalid argument '{role}': the batch has no column {name!r} (columns: {list(batch)})"
                )
        scores = self.scorer.score(
            batch[instruction],
            batch[response],
            None if input is None else batch[input],
        )
        return {self.prefix + name: scores.column(name).to_pylist() for name in scores.column_names}


def map_scores(
    scorer: Scorer,
    instruction: str = "instruction",
    response: str = "output",
    input: Optional[str] = None,
    prefix: str = "",
) -> ScoreMap:
    """The function to give ``Dataset.map(..., batched=True)``: it scores
    the pairs of each batch with ``scorer`` and adds the columns of
    :data:`main_align.SCORE_FIELDS` (named ``prefix + field``)."""
    return ScoreMap(scorer, instruction, response, input, prefix)
