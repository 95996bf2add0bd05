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
