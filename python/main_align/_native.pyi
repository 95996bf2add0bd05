"""Type stubs of the Rust extension module (python/src/lib.rs)."""

from typing import Any, Optional

class MainError(Exception): ...
class ModelError(MainError): ...
class ArgumentError(MainError): ...
class InputError(MainError): ...
class DeviceError(MainError): ...

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
