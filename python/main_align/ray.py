"""MAIN on Ray Data: score a data set across the cores and machines of a Ray
cluster, one model per actor.

>>> import ray
>>> from main_align.ray import score_dataset
>>> ds = ray.data.read_json("pairs.jsonl")                       # doctest: +SKIP
>>> scored = score_dataset(ds, "SmolLM2-135M-Instruct.Q4_1.gguf",  # doctest: +SKIP
...                        concurrency=2, num_cpus=1)
>>> scored.filter(expr="alignment > 0.2").write_parquet("kept/")  # doctest: +SKIP

Resuming a killed job: Ray Data's own checkpointing, keyed on an id column
that is unique per row, skips rows already written when the same pipeline
runs again (see :func:`checkpoint_config` and ``examples/python/curate.py``).
"""

from __future__ import annotations

from typing import Optional, Union

import pyarrow as pa

from . import ArgumentError, PathLike, Scorer, _scorer_args

__all__ = ["score_dataset", "checkpoint_config", "ScoreBatches"]


class ScoreBatches:
    """The callable class that ``map_batches`` runs on each actor: it loads
    the model once, when the actor starts, and scores every batch it is sent
    with :meth:`main_align.Scorer.score_table`."""

    def __init__(
        self,
        scorer_args: dict,
        instruction: str,
        response: str,
        input: Optional[str],
        prefix: str,
        engine_batch: int,
    ) -> None:
        # threads=None in scorer_args follows OMP_NUM_THREADS, which Ray sets
        # to the actor's num_cpus.
        self.scorer = Scorer(**scorer_args)
        self.columns = (instruction, response, input)
        self.prefix = prefix
        self.engine_batch = engine_batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        instruction, response, input = self.columns
        return self.scorer.score_table(
            batch,
            instruction,
            response,
            input,
            prefix=self.prefix,
            batch_size=self.engine_batch,
        )


def score_dataset(
    ds,
    model: PathLike,
    *,
    reverse_model: Optional[PathLike] = None,
    instruction: str = "instruction",
    response: str = "output",
    input: Optional[str] = None,
    concurrency: Union[int, tuple] = 1,
    tasks_per_actor: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int = 64,
    threads: Optional[int] = None,
    precision: Optional[str] = None,
    device: Optional[str] = None,
    max_tokens: int = 1024,
    combine: str = "min",
    prefix: str = "",
):
    """Adds the score columns of DESIGN.md section 3 to a Ray ``Dataset``.

    Runs ``ds.map_batches`` with :class:`ScoreBatches`, a callable class, on
    ``concurrency`` actors (an int, or Ray's ``(min, max)`` autoscaling
    pair), each with ``num_cpus`` CPUs and ``num_gpus`` GPUs and its own copy
    of the model (loaded once per actor; the file must be readable at the
    same path on every node). Every input column is kept; rows keep their
    values, not necessarily their order across blocks.

    Args:
        ds: a ``ray.data.Dataset`` with string columns ``instruction`` and
            ``response`` (and ``input``, Alpaca's, when named).
        model, reverse_model, precision, device, max_tokens, combine: as
            :class:`main_align.Scorer`.
        threads: engine threads per actor; None follows ``OMP_NUM_THREADS``,
            which Ray sets to the actor's ``num_cpus``.
        batch_size: rows per ``map_batches`` call. The engine scores them
            16 at a time, as ``main-score``; the scores do not depend on
            either.
        tasks_per_actor: blocks queued on each actor at a time (Ray's
            ``max_tasks_in_flight_per_actor``). 1, the default, keeps the
            actors evenly busy to the end of the job; more only helps where
            fetching a block takes as long as scoring it.
        prefix: put before each score column's name.

    Returns:
        The lazy ``ray.data.Dataset`` with the score columns appended.

    The contrastive score (``negatives``) is not offered here: its negatives
    come from the same batch, and Ray's batches are not fixed.
    """
    for name, value in (("instruction", instruction), ("response", response), ("prefix", prefix)):
        if not isinstance(value, str):
            raise ArgumentError(
                f"invalid argument '{name}': expected a str, got {type(value).__name__}"
            )
    if input is not None and not isinstance(input, str):
        raise ArgumentError(
            f"invalid argument 'input': expected a column name or None, got {type(input).__name__}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"invalid argument 'batch_size': {batch_size!r} is not an int >= 1")
    # Type-checked here, in the driver; the model loads on the actors only
    # (the driver need not have it).
    args = _scorer_args(model, reverse_model, threads, precision, device, max_tokens, combine, 0)
    if isinstance(concurrency, bool) or not (
        (isinstance(concurrency, int) and concurrency >= 1)
        or (
            isinstance(concurrency, tuple)
            and len(concurrency) == 2
            and all(isinstance(c, int) and not isinstance(c, bool) for c in concurrency)
            and 1 <= concurrency[0] <= concurrency[1]
        )
    ):
        raise ArgumentError(
            f"invalid argument 'concurrency': {concurrency!r} is not an int >= 1 "
            "or a (min, max) pair of them"
        )
    if isinstance(tasks_per_actor, bool) or not isinstance(tasks_per_actor, int) or tasks_per_actor < 1:
        raise ArgumentError(
            f"invalid argument 'tasks_per_actor': {tasks_per_actor!r} is not an int >= 1"
        )
    from ray.data import ActorPoolStrategy

    if isinstance(concurrency, int):
        sizes = dict(size=concurrency)
    else:
        sizes = dict(min_size=concurrency[0], max_size=concurrency[1])
    # One block queued per actor by default: a block takes seconds to score,
    # so prefetching gains nothing, while blocks queued behind a busy actor
    # leave the others idle at the end of the job (measured: 2 actors on
    # 200 pairs finished ~10% later with Ray's default of 4).
    compute = ActorPoolStrategy(**sizes, max_tasks_in_flight_per_actor=tasks_per_actor)
    return ds.map_batches(
        ScoreBatches,
        fn_constructor_kwargs=dict(
            scorer_args=args,
            instruction=instruction,
            response=response,
            input=input,
            prefix=prefix,
            engine_batch=16,
        ),
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=compute,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


def checkpoint_config(id_column: str, path: str, **kwargs):
    """Turns on Ray Data's checkpointing for the current ``DataContext``:
    a pipeline that ends in a file write (``write_parquet``) records the ids
    of the rows it has written under ``path``, and when the same pipeline runs
    again after a crash, the rows whose id is recorded are skipped at the read
    and files of unfinished writes are removed. So a killed and restarted job
    ends with every id exactly once. ``path`` must be reachable from every
    node (a shared file system or object storage). Other keyword arguments go
    to ``ray.data.checkpoint.CheckpointConfig``.
    """
    import ray.data
    from ray.data.checkpoint import CheckpointConfig

    config = CheckpointConfig(id_column=id_column, checkpoint_path=path, **kwargs)
    ray.data.DataContext.get_current().checkpoint_config = config
    return config
