"""MAIN from Python: mutual alignment scores of instruction/response pairs.

A thin layer over the Rust engine (``main_align._native``): it scores pairs
in both directions with a local GGUF or Hugging Face model and returns the
scores of DESIGN.md section 3 as an Arrow table.

>>> from main_align import Scorer
>>> scorer = Scorer("fixtures/SmolLM2-135M-Instruct.Q4_1.gguf", threads=2)
>>> t = scorer.score(["What is the capital of France?"], ["Paris."])
>>> t.column("alignment")[0].as_py() > 0
True

``score_jsonl`` runs the scoring job of ``main-score score`` (JSONL in,
JSONL out, resumable) and writes the same bytes. ``report`` writes the
self-contained HTML report of ``main-score report`` of scored records (a
file, an Arrow table, a ``datasets.Dataset`` or dicts) and
``report_summary`` returns its data as a dict.

``main_align.ray`` runs a scorer on Ray Data (one model per actor) and
``main_align.hf`` on ``datasets.Dataset.map``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import pyarrow as pa

from . import _native
from ._native import ArgumentError, DeviceError, InputError, MainError, ModelError

__all__ = [
    "Scorer",
    "score_jsonl",
    "report",
    "report_summary",
    "ReportInputError",
    "MainError",
    "ModelError",
    "ArgumentError",
    "InputError",
    "DeviceError",
    "SCORE_FIELDS",
    "score_schema",
]

#: The score columns, in the order main-score writes them (DESIGN.md section 3):
#: the engine's list (``main_engine::score::SCORE_FIELDS``), then the
#: ``truncated`` flag. ``contrastive`` is present only when the scorer has
#: ``negatives > 0``.
SCORE_FIELDS: tuple[str, ...] = (*_native.SCORE_FIELDS, "truncated")

# float64, not float32: the engine computes the means in f64, and these are
# the very values main-score writes (a float32 column would round them).
_TYPES = {
    "response_tokens": pa.int32(),
    "instruction_tokens": pa.int32(),
    "truncated": pa.bool_(),
}


def score_schema(negatives: int = 0, prefix: str = "") -> pa.Schema:
    """The Arrow schema of the score columns of a scorer with ``negatives``."""
    return pa.schema(
        [
            pa.field(prefix + name, _TYPES.get(name, pa.float64()), nullable=False)
            for name in SCORE_FIELDS
            if name != "contrastive" or negatives > 0
        ]
    )


PathLike = Union[str, "os.PathLike[str]"]


def _threads(threads: Optional[int]) -> int:
    """``None``: $OMP_NUM_THREADS when set (Ray sets it per worker from its
    ``num_cpus``), else 0, one per core."""
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        if not env:
            return 0
        try:
            n = int(env)
        except ValueError:
            raise ArgumentError(
                f"invalid argument 'threads': None follows OMP_NUM_THREADS, which is {env!r}, not a whole number"
            ) from None
        if n < 1:
            raise ArgumentError(
                f"invalid argument 'threads': None follows OMP_NUM_THREADS, which is {n}; it must be at least 1"
            )
        return n
    return _whole("threads", threads, 0)


def _whole(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(
            f"invalid argument '{name}': expected an int, got {type(value).__name__}"
        )
    if value < minimum:
        raise ArgumentError(f"invalid argument '{name}': {value} is below {minimum}")
    return value


def _path(name: str, value: Any, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ArgumentError(
            f"invalid argument '{name}': expected a path (str or os.PathLike), got {type(value).__name__}"
        )
    # Absolute, so a pickled scorer loads the same file from another working
    # directory (a Ray worker or a datasets subprocess).
    return os.path.abspath(os.fspath(value))


def _name(name: str, value: Any, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ArgumentError(
            f"invalid argument '{name}': expected a str, got {type(value).__name__}"
        )
    return value


def _texts(value: Any) -> Any:
    """Arrow arrays and pandas Series as lists; other sequences as they are
    (the engine checks each item)."""
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return value.to_pylist()
    to_list = getattr(value, "tolist", None)
    if callable(to_list) and not isinstance(value, (str, bytes)):
        return to_list()
    return value


def _scorer_args(model, reverse_model, threads, precision, device, max_tokens, combine, negatives) -> dict:
    """A scorer's arguments, type-checked (values are the engine's to check)."""
    if threads is not None:
        _whole("threads", threads, 0)
    return dict(
        model=_path("model", model),
        reverse_model=_path("reverse_model", reverse_model, optional=True),
        threads=threads,
        precision=_name("precision", precision, optional=True),
        device=_name("device", device, optional=True),
        max_tokens=_whole("max_tokens", max_tokens, 0),
        combine=_name("combine", combine),
        negatives=_whole("negatives", negatives, 0),
    )


class Scorer:
    """Scores instruction/response pairs with a forward model and, optionally,
    a separately trained reverse model (without one the forward model serves
    both directions).

    Args:
        model: a GGUF file or a Hugging Face folder (``config.json``,
            ``model.safetensors``, ``tokenizer.json``).
        reverse_model: a trained reverse model (``main-train``), or None.
        threads: worker threads; None follows ``OMP_NUM_THREADS`` when set,
            else one per core. Give each of several scorers a share.
        precision: ``"exact"``, ``"fast"``, ``"int8"`` (CPU) or ``"bf16"``
            (GPU); None is the device's default (as ``main-score``).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; None is the CPU.
        max_tokens: longest view in tokens; longer content is cut and the
            pair flagged ``truncated``.
        combine: how ``alignment`` joins the directions: ``"min"``,
            ``"mean"`` or ``"softmin"``.
        negatives: other responses of the same batch per pair for the
            ``contrastive`` score (0: off).

    A scorer pickles by these arguments and loads the model again where it is
    unpickled, so Ray and ``datasets.map(num_proc=...)`` can ship it. One
    scorer serves one thread at a time (a second thread waits); use one
    scorer per thread to score in parallel: the GIL is released while the
    engine works.

    Raises:
        ModelError: the model file is missing or malformed.
        ArgumentError: an argument has the wrong type or value.

    >>> scorer = Scorer("fixtures/SmolLM2-135M-Instruct.Q4_1.gguf", threads=1, precision="exact")
    >>> scorer.precision
    'exact'
    """

    def __init__(
        self,
        model: PathLike,
        reverse_model: Optional[PathLike] = None,
        *,
        threads: Optional[int] = None,
        precision: Optional[str] = None,
        device: Optional[str] = None,
        max_tokens: int = 1024,
        combine: str = "min",
        negatives: int = 0,
    ) -> None:
        self._args = _scorer_args(
            model, reverse_model, threads, precision, device, max_tokens, combine, negatives
        )
        a = self._args
        self._native = _native.NativeScorer(
            a["model"],
            a["reverse_model"],
            _threads(threads),
            a["precision"],
            a["device"] or "cpu",
            a["max_tokens"],
            a["combine"],
            a["negatives"],
        )

    # Pickling: the construction arguments only; the model loads again on
    # the other side. threads=None stays None, so it follows that process's
    # OMP_NUM_THREADS.
    def __reduce__(self):
        return (_rebuild, (self._args,))

    def __repr__(self) -> str:
        a = self._args
        return (
            f"Scorer({a['model']!r}, reverse_model={a['reverse_model']!r}, threads={a['threads']!r}, "
            f"precision={self.precision!r}, device={self.device!r}, max_tokens={a['max_tokens']}, "
            f"combine={a['combine']!r}, negatives={a['negatives']})"
        )

    @property
    def precision(self) -> str:
        """The precision the scorer runs (the device default when none was asked)."""
        return self._native.precision

    @property
    def device(self) -> str:
        """Where the scorer runs: ``"cpu"`` or ``"cuda:N"``."""
        return self._native.device

    @property
    def negatives(self) -> int:
        return self._args["negatives"]

    @property
    def arguments(self) -> dict:
        """The construction arguments (what a pickle holds)."""
        return dict(self._args)

    def score(
        self,
        instructions: Sequence[str],
        responses: Sequence[str],
        inputs: Optional[Sequence[Optional[str]]] = None,
        *,
        output: str = "arrow",
        batch_size: int = 16,
    ) -> Union[pa.Table, list]:
        """Scores pairs ``(instructions[i], responses[i])``.

        Args:
            instructions, responses: equal-length sequences of str (lists,
                tuples, Arrow arrays, pandas Series).
            inputs: Alpaca's ``input``: when given and non-empty, appended to
                the instruction after a blank line (None or "" for none).
            output: ``"arrow"`` (a ``pyarrow.Table``, one column per score)
                or ``"pylist"`` (a list of dicts, one per pair).
            batch_size: pairs per fused engine call, as ``main-score
                --batch`` (16 there too). Scores do not depend on it, except
                ``contrastive``, whose negatives come from the same batch.

        Returns:
            The scores in input order: ``alignment``, ``fwd_pmi``, ``rev_pmi``,
            ``fwd_cond``, ``fwd_uncond``, ``rev_cond``, ``rev_uncond``, ``ifd``,
            ``rifd``, ``semantic``, ``structural``, ``intentional``,
            ``fwd_pmi_total``, ``rev_pmi_total`` (float64,
            nats), ``contrastive`` (with negatives), ``response_tokens``,
            ``instruction_tokens`` (int32) and ``truncated`` (bool).

        Raises:
            InputError: a value is not a str, or the lengths differ.
            ArgumentError: a bad ``output`` or ``batch_size``.

        >>> t = scorer.score(["Name a primary colour."], ["Red."])
        >>> t.column_names[:3]
        ['alignment', 'fwd_pmi', 'rev_pmi']
        """
        if output not in ("arrow", "pylist"):
            raise ArgumentError(
                f"invalid argument 'output': {output!r} is not one of 'arrow', 'pylist'"
            )
        _whole("batch_size", batch_size, 1)
        cols = self._native.score(
            _texts(instructions),
            _texts(responses),
            None if inputs is None else _texts(inputs),
            batch_size,
        )
        if output == "pylist":
            names = list(cols)
            return [dict(zip(names, row)) for row in zip(*cols.values())]
        schema = score_schema(self.negatives)
        return pa.Table.from_arrays(
            [pa.array(cols[f.name], type=f.type) for f in schema], schema=schema
        )

    def score_table(
        self,
        table: pa.Table,
        instruction: str = "instruction",
        response: str = "output",
        input: Optional[str] = None,
        *,
        prefix: str = "",
        batch_size: int = 16,
    ) -> pa.Table:
        """Returns ``table`` with the score columns appended (named
        ``prefix + field``); every column of ``table`` comes back unchanged.

        Args:
            table: a ``pyarrow.Table`` (or anything ``pa.table()`` accepts,
                such as a dict of lists or a pandas DataFrame).
            instruction, response: the columns holding the pair.
            input: a column appended to the instruction the Alpaca way
                (null or "" for none), or None.

        Raises:
            ArgumentError: a named column is missing, or a score column
                would replace one of the table's.

        >>> t = pa.table({"id": [1], "instruction": ["Say hi."], "output": ["Hi!"]})
        >>> scorer.score_table(t).column_names[:4]
        ['id', 'instruction', 'output', 'alignment']
        """
        if not isinstance(table, pa.Table):
            try:
                table = pa.table(table)
            except (TypeError, ValueError, pa.ArrowException) as e:
                raise ArgumentError(
                    f"invalid argument 'table': expected a pyarrow.Table, got {type(table).__name__} ({e})"
                ) from None
        for role, name in (("instruction", instruction), ("response", response), ("input", input)):
            if name is None and role == "input":
                continue
            if not isinstance(name, str):
                raise ArgumentError(
                    f"invalid argument '{role}': a column name (str), got {type(name).__name__}"
                )
            if name not in table.column_names:
                raise ArgumentError(
                    f"invalid argument '{role}': the table has no column {name!r} (columns: {table.column_names})"
                )
        clash = [f.name for f in score_schema(self.negatives, prefix) if f.name in table.column_names]
        if clash:
            raise ArgumentError(
                f"invalid argument 'prefix': score columns {clash} would replace columns of the table; give a prefix"
            )
        scores = self.score(
            table.column(instruction),
            table.column(response),
            None if input is None else table.column(input),
            batch_size=batch_size,
        )
        for name, col in zip(scores.column_names, scores.columns):
            table = table.append_column(pa.field(prefix + name, col.type, nullable=False), col)
        return table


def _rebuild(args: dict) -> Scorer:
    return Scorer(**args)


def _shard(value: Any) -> Optional[str]:
    """``"I/N"`` or ``(I, N)`` as the engine's ``"I/N"``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        i, n = value
        return f"{_whole('shard', i, 0)}/{_whole('shard', n, 1)}"
    raise ArgumentError(
        f"invalid argument 'shard': expected \"I/N\" or a tuple (I, N), got {type(value).__name__}"
    )


def _number(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(
            f"invalid argument '{name}': expected a number, got {type(value).__name__}"
        )
    return float(value)


def score_jsonl(
    input: PathLike,
    output: PathLike,
    model: PathLike,
    reverse_model: Optional[PathLike] = None,
    *,
    threads: Optional[int] = None,
    precision: Optional[str] = None,
    device: Optional[str] = None,
    max_tokens: int = 1024,
    combine: str = "min",
    negatives: int = 0,
    tokens: bool = False,
    batch_size: int = 16,
    keep_top: Optional[float] = None,
    rank_by: Optional[str] = None,
    min_alignment: Optional[float] = None,
    shard: Union[str, tuple, None] = None,
    skip_invalid: bool = False,
    instruction_field: Optional[str] = None,
    response_field: Optional[str] = None,
    input_field: Optional[str] = None,
    progress: Optional[Callable[[dict], Any]] = None,
) -> dict:
    """Scores a JSONL file the way ``main-score score`` does, with the same
    engine code: each record of ``input`` is written to ``output`` unchanged
    plus an ``"alignment"`` object, and the file equals main-score's byte
    for byte for the same options.

    The output is its own checkpoint: run the same call again after an
    interruption (a kill, an exception, ``progress`` returning False) and
    it resumes after the last complete record; ``output +
    ".provenance.json"`` records what made it, and a resume with another
    input, model or score-changing option is refused.

    Args:
        input: JSONL records (Alpaca, prompt/response, ``messages`` or
            ``conversations``, detected per record); ``"-"`` is stdin.
        output: where the scored records go (``"-"``: stdout, not resumable).
        model, reverse_model, threads, precision, device, max_tokens,
            combine, negatives: as for :class:`Scorer`.
        tokens: add the per-token detail of both directions to each record.
        batch_size: records per fused engine call and per write
            (``--batch``); with negatives it must be above ``negatives``.
        keep_top: keep the best fraction in (0, 1] by ``rank_by``; the
            scored records are staged in ``output + ".scored.jsonl"``.
        rank_by: the score ``keep_top`` ranks by (a leading ``-`` keeps the
            lowest); None is main-score's default.
        min_alignment: keep records whose ``alignment`` is at least this.
        shard: ``"I/N"`` or ``(I, N)``: only the records on 0-based lines
            ``L`` with ``L % N == I``.
        skip_invalid: go on past invalid records (each reported to
            ``progress`` as a ``"skipped"`` event) instead of stopping.
        instruction_field, response_field, input_field: named fields
            instead of detecting the format.
        progress: None, or a callable taking one dict per event, with
            ``"event"`` one of ``"dropped_partial_line"``, ``"resuming"``
            (``records``), ``"started"`` (``total``: records to score, None
            for stdin), ``"scored"`` (``done``, ``total``) and
            ``"skipped"`` (``message``, ``file``, ``line``, ``reason``).
            Returning False stops the job after the batch just written; an
            exception stops it too and is raised.

    Returns:
        The report: ``scored`` (the file of every scored record),
        ``records``, ``scored_now``, ``resumed``, ``invalid``, ``kept``
        (with filters), ``stopped`` and ``summary`` (per main score its
        ``p10``, ``p50``, ``p90`` and ``rho_length``, the rank correlation
        with response length, and a ``warning`` when it mostly measures
        length).

    Raises:
        InputError: a record is invalid (the message names the file and line).
        ArgumentError: an argument has the wrong type or value, or the
            output holds another run's records.
        ModelError: a model cannot be loaded.

    >>> import json, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> src = os.path.join(d, "in.jsonl")
    >>> with open(src, "w") as f:
    ...     _ = f.write(json.dumps({"instruction": "Say hi.", "output": "Hi!"}) + "\\n")
    >>> r = score_jsonl(src, os.path.join(d, "out.jsonl"), "fixtures/SmolLM2-135M-Instruct.Q4_1.gguf", threads=1)
    >>> r["records"], r["stopped"]
    (1, False)
    """
    if threads is not None:
        _whole("threads", threads, 0)
    if progress is not None and not callable(progress):
        raise ArgumentError(
            f"invalid argument 'progress': expected a callable or None, got {type(progress).__name__}"
        )
    for name, value in (("tokens", tokens), ("skip_invalid", skip_invalid)):
        if not isinstance(value, bool):
            raise ArgumentError(
                f"invalid argument '{name}': expected a bool, got {type(value).__name__}"
            )
    return _native.score_jsonl(
        _path("input", input) if input != "-" else "-",
        _path("output", output) if output != "-" else "-",
        _path("model", model),
        _path("reverse_model", reverse_model, optional=True),
        _threads(threads),
        _name("precision", precision, optional=True),
        _name("device", device, optional=True) or "cpu",
        _whole("max_tokens", max_tokens, 0),
        _name("combine", combine),
        _whole("negatives", negatives, 0),
        tokens,
        _whole("batch_size", batch_size, 1),
        _number("keep_top", keep_top),
        _name("rank_by", rank_by, optional=True),
        _number("min_alignment", min_alignment),
        _shard(shard),
        skip_invalid,
        _name("instruction_field", instruction_field, optional=True),
        _name("response_field", response_field, optional=True),
        _name("input_field", input_field, optional=True),
        progress,
    )


# ---------------------------------------------------------------------------
# The report of a scored data set (main-score report)
# ---------------------------------------------------------------------------


class ReportInputError(InputError, ValueError):
    """A scored record is unusable (not scored, invalid JSON, cut short, a
    line over ``max_line_bytes``): the message names the source and its
    1-based line. Both an :class:`InputError` and a ``ValueError``."""


#: Records converted to JSON lines per call into the engine.
_REPORT_CHUNK = 4096


def _report_args(
    min: Union[str, Sequence[str], dict, None],
    keep_top: Optional[float],
    rank_by: Optional[str],
    percentiles: Optional[Sequence[float]],
    examples_by: Optional[str],
    dots: Optional[int],
    exact_cap: Optional[int],
    near_sample: Optional[int],
    max_distinct: Optional[int],
    max_line_bytes: Optional[int],
) -> list:
    if min is None:
        rules = []
    elif isinstance(min, str):
        rules = [min]
    elif isinstance(min, dict):
        rules = [f"{k}={v!r}" for k, v in min.items()]
    else:
        rules = [str(m) for m in min]
    whole = lambda name, v: None if v is None else _whole(name, v, 1)  # noqa: E731
    return [
        rules,
        _number("keep_top", keep_top),
        _name("rank_by", rank_by, optional=True),
        None if percentiles is None else [float(p) for p in percentiles],
        _name("examples_by", examples_by, optional=True),
        whole("dots", dots),
        whole("exact_cap", exact_cap),
        whole("near_sample", near_sample),
        whole("max_distinct", max_distinct),
        whole("max_line_bytes", max_line_bytes),
    ]


def _json_line(row: Any) -> str:
    """A record as one JSON line; NaN (which JSON lacks) as null."""
    try:
        return json.dumps(row, allow_nan=False, ensure_ascii=False, default=str)
    except ValueError:
        def clean(x: Any) -> Any:
            if isinstance(x, float) and math.isnan(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x
        return json.dumps(clean(row), ensure_ascii=False, default=str)


def _without_nulls(x: Any) -> Any:
    """A row of a typed table without its null fields: a table's schema is
    the union of its records' keys, so a key one record lacks is null there
    (a pair's ``"conversations"``, a pair's ``"turns"``)."""
    if isinstance(x, dict):
        return {k: _without_nulls(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_without_nulls(v) for v in x]
    return x


def _rows(source: Any) -> tuple[str, Iterable[Any]]:
    """The source's name and its records as dicts, batch by batch."""
    if isinstance(source, pa.Table):
        return "<pyarrow.Table>", (
            _without_nulls(r) for b in source.to_batches(_REPORT_CHUNK) for r in b.to_pylist()
        )
    if type(source).__module__.startswith("datasets") and hasattr(source, "iter"):
        return "<datasets.Dataset>", (
            _without_nulls(dict(zip(batch.keys(), values)))
            for batch in source.iter(batch_size=_REPORT_CHUNK)
            for values in zip(*batch.values())
        )
    if isinstance(source, (str, bytes, dict)):
        raise ArgumentError(f"invalid argument 'source': expected a path, a pyarrow.Table, a datasets.Dataset or records, got {type(source).__name__}")
    try:
        return "<records>", iter(source)
    except TypeError:
        raise ArgumentError(
            f"invalid argument 'source': expected a path, a pyarrow.Table, a datasets.Dataset or records, got {type(source).__name__}"
        ) from None


def _report(source: Any, html: bool, args: list) -> tuple[str, Optional[str]]:
    try:
        if isinstance(source, (str, os.PathLike)):
            return _native.report_path(os.fspath(source), *args, html)
        name, rows = _rows(source)
        builder = _native.ReportBuilder(name, *args)
        chunk: list[str] = []
        first = 1
        for row in rows:
            chunk.append(_json_line(row))
            if len(chunk) == _REPORT_CHUNK:
                builder.add_lines(chunk, first)
                first += len(chunk)
                chunk = []
        if chunk:
            builder.add_lines(chunk, first)
        return builder.finish(html)
    except InputError as e:
        raise ReportInputError(str(e)) from None


def report_summary(
    source: Any,
    *,
    min: Union[str, Sequence[str], dict, None] = None,
    keep_top: Optional[float] = None,
    rank_by: Optional[str] = None,
    percentiles: Optional[Sequence[float]] = None,
    examples_by: Optional[str] = None,
    dots: Optional[int] = None,
    exact_cap: Optional[int] = None,
    near_sample: Optional[int] = None,
    max_distinct: Optional[int] = None,
    max_line_bytes: Optional[int] = None,
) -> dict:
    """The data of ``main-score report`` of scored records, as a dict: the
    same JSON as ``main-score report --json`` (the ``ReportData`` shape of
    engine/src/report/mod.rs: ``records``, ``filter``, ``histograms``,
    ``stats``, ``summary``, ``quadrants``, ``sample``, ``examples``,
    ``duplicates``, ``conversations_detail``, ``provenance``, ``notes``...).

    Args:
        source: a scored JSONL file (path; its ``.provenance.json`` is read
            as main-score does), a ``pyarrow.Table``, a
            ``datasets.Dataset``, or an iterable of dicts: records as
            ``main-score score`` writes them (each with its
            ``"alignment"`` object). Rows are fed to the engine as JSON
            lines, 4,096 at a time, so memory stays bounded.
        min: ``"FIELD=X"`` rules (a string, a list, or ``{field: x}``): mark
            the filter keeping records whose FIELD is at least X.
        keep_top, rank_by: mark the filter keeping the best fraction by
            ``rank_by`` (main-score's default ranking when None).
        percentiles: whose pairs are shown (default 5, 50, 95).
        examples_by: the score those percentiles are of (default: the
            filter's field, else ``alignment``).
        dots, exact_cap, near_sample, max_distinct, max_line_bytes: the
            bounds of ``main-score report`` (``--dots`` ...); None keeps
            its defaults.

    Raises:
        ReportInputError: an unusable record (a ``ValueError`` naming the
            line); ArgumentError: a bad argument.
    """
    args = _report_args(min, keep_top, rank_by, percentiles, examples_by, dots, exact_cap,
                        near_sample, max_distinct, max_line_bytes)
    data, _ = _report(source, False, args)
    return json.loads(data)


def report(
    source: Any,
    path: PathLike,
    *,
    min: Union[str, Sequence[str], dict, None] = None,
    keep_top: Optional[float] = None,
    rank_by: Optional[str] = None,
    percentiles: Optional[Sequence[float]] = None,
    examples_by: Optional[str] = None,
    dots: Optional[int] = None,
    exact_cap: Optional[int] = None,
    near_sample: Optional[int] = None,
    max_distinct: Optional[int] = None,
    max_line_bytes: Optional[int] = None,
) -> dict:
    """Writes the self-contained HTML report of scored records to ``path``:
    for a file, the very bytes ``main-score report FILE -o path`` writes
    with the same options. Arguments as :func:`report_summary`; returns the
    report's data as a dict."""
    target = _path("path", path)
    args = _report_args(min, keep_top, rank_by, percentiles, examples_by, dots, exact_cap,
                        near_sample, max_distinct, max_line_bytes)
    data, page = _report(source, True, args)
    with open(target, "w", encoding="utf-8", newline="") as f:
        f.write(page)
    return json.loads(data)
