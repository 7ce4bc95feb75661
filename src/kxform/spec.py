"""What a model takes and returns: ``TensorSpec`` (name, V2 datatype, shape) and ``ModelSpec``.

Plugins declare their own V2 face with ``TensorSpec``s; kxform builds the predictor model's ``ModelSpec`` from
Triton's metadata (``kxform.predictor.metadata``). A datatype that is not a V2 datatype fails where the spec is
made, so a plugin declaring ``TensorSpec("x", "FP33")`` fails when it is loaded, not on a request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from kxform.codecs.dtypes import V2_DATATYPES
from kxform.errors import KxformError, RequestError

__all__ = ["ModelSpec", "TensorSpec"]

_ORDINAL = re.compile(r"__(\d+)$")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: its name, V2 datatype and shape without the batch axis (-1 = any)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.datatype not in V2_DATATYPES:
            raise KxformError(
                f"tensor '{self.name}': datatype {self.datatype!r} is not a V2 datatype; "
                f"use one of {', '.join(V2_DATATYPES)}"
            )
        if not all(isinstance(d, int) and d >= -1 for d in self.shape):
            raise KxformError(f"tensor '{self.name}': shape {list(self.shape)} must hold sizes >= 0 or -1 (any)")

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(e in (-1, s) for e, s in zip(self.shape, shape, strict=True))

    def describe(self) -> str:
        return f"{self.datatype} {list(self.shape)}"

    def ordinal(self, position: int) -> int:
        """The ordinal of a ``NAME__i`` tensor (``INPUT__2`` → 2), else its position in the model's list."""
        match = _ORDINAL.search(self.name)
        return int(match[1]) if match else position


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A predictor model as Triton describes it."""

    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int  # 0: the model takes no batch axis
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    def summary(self) -> str:
        """One log line's worth: tensors, batch size and how many labels (not the labels themselves)."""

        def tensors(specs: tuple[TensorSpec, ...]) -> str:
            return ", ".join(f"{spec.name} {spec.describe()}" for spec in specs)

        labels = ", ".join(f"{len(values)} labels for {name}" for name, values in self.labels.items())
        return (
            f"version {self.version or '(none)'}, inputs {tensors(self.inputs)}, outputs {tensors(self.outputs)}, "
            f"max_batch_size {self.max_batch_size}" + (f", {labels}" if labels else "")
        )

    def input(self, key: str | int) -> TensorSpec:
        return _lookup(self.inputs, key, "input", self.name)

    def output(self, key: str | int) -> TensorSpec:
        return _lookup(self.outputs, key, "output", self.name)


def _lookup(specs: tuple[TensorSpec, ...], key: str | int, kind: str, model: str) -> TensorSpec:
    for position, spec in enumerate(specs):
        if spec.name == key or (isinstance(key, int) and spec.ordinal(position) == key):
            return spec
    names = ", ".join(spec.name for spec in specs)
    error = RequestError if kind == "input" else KxformError
    raise error(f"predictor model '{model}' has no {kind} {key!r}; its {kind}s are: {names}")
