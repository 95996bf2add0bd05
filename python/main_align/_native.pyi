"""Type stubs of the Rust extension module (python/src/lib.rs)."""

from typing import Any, Callable, Optional

class MainError(Exception): ...
class ModelError(MainError): ...
class ArgumentError(MainError): ...
class InputError(MainError): ...
class DeviceError(MainError): ...

SCORE_FIELDS: list[str]

class NativeScorer:
    def __new__(
        cls,
        model: str,
        reverse_model: Optional[str],
        threads: int,
        precision: Optional[str],
        device: str,
        max_tokens: int,
        combine: str,
        negatives: int,
    ) -> NativeScorer: ...
    @property
    def precision(self) -> str: ...
    @property
    def device(self) -> str: ...
    def score(
        self,
        instructions: Any,
        responses: Any,
        inputs: Optional[Any],
        batch_size: int,
    ) -> dict[str, list[Any]]: ...

def score_jsonl(
    input: str,
    output: str,
    model: str,
    reverse_model: Optional[str],
    threads: int,
    precision: Optional[str],
    device: str,
    max_tokens: int,
    combine: str,
    negatives: int,
    tokens: bool,
    batch_size: int,
    keep_top: Optional[float],
    rank_by: Optional[str],
    min_alignment: Optional[float],
    shard: Optional[str],
    skip_invalid: bool,
    instruction_field: Optional[str],
    response_field: Optional[str],
    input_field: Optional[str],
    progress: Optional[Callable[[dict[str, Any]], Any]],
) -> dict[str, Any]: ...

def report_path(
    path: str,
    min: list[str],
    keep_top: Optional[float],
    rank_by: Optional[str],
    percentiles: Optional[list[float]],
    examples_by: Optional[str],
    dots: Optional[int],
    exact_cap: Optional[int],
    near_sample: Optional[int],
    max_distinct: Optional[int],
    max_line_bytes: Optional[int],
    html: bool,
) -> tuple[str, Optional[str]]:
    """The report of a scored JSONL file: its JSON and, with html, its page."""

class ReportBuilder:
    """The report of records given as JSON lines, added in chunks."""

    def __init__(
        self,
        source: str,
        min: list[str],
        keep_top: Optional[float],
        rank_by: Optional[str],
        percentiles: Optional[list[float]],
        examples_by: Optional[str],
        dots: Optional[int],
        exact_cap: Optional[int],
        near_sample: Optional[int],
        max_distinct: Optional[int],
        max_line_bytes: Optional[int],
    ) -> None: ...
    def add_lines(self, lines: list[str], first_line: int) -> None: ...
    def finish(self, html: bool) -> tuple[str, Optional[str]]: ...
