"""What a predictor model expects and returns: names, V2 datatypes, shapes, batch size, labels.

Built from Triton's model metadata and model config, which HTTP and gRPC both return as JSON
(gRPC's JSON spells 64-bit integers as strings; both are accepted).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kxform.errors import KxformError, RequestError

__all__ = ["ModelSpec", "TensorSpec", "model_spec_from_triton"]

_ORDINAL = re.compile(r"__(\d+)$")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: its name, V2 datatype and shape without the batch axis (-1 = any)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(e in (-1, s) for e, s in zip(self.shape, shape, strict=True))

    def describe(self) -> str:
        return f"{self.datatype} {list(self.shape)}"


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


def _ordinal(spec: TensorSpec, position: int) -> int:
    match = _ORDINAL.search(spec.name)
    return int(match[1]) if match else position


def _lookup(specs: tuple[TensorSpec, ...], key: str | int, kind: str, model: str) -> TensorSpec:
    for position, spec in enumerate(specs):
        if spec.name == key or (isinstance(key, int) and _ordinal(spec, position) == key):
            return spec
    names = ", ".join(spec.name for spec in specs)
    error = RequestError if kind == "input" else KxformError
    raise error(f"predictor model '{model}' has no {kind} {key!r}; its {kind}s are: {names}")


def _tensor(entry: Mapping[str, Any], batched: bool) -> TensorSpec:
    shape = tuple(int(d) for d in entry.get("shape", ()))
    if batched and shape:
        shape = shape[1:]  # metadata includes the batch axis (-1) when max_batch_size > 0
    return TensorSpec(entry["name"], entry["datatype"], shape)


def model_spec_from_triton(
    metadata: Mapping[str, Any],
    config: Mapping[str, Any],
    labels: Mapping[str, tuple[str, ...]] | None = None,
) -> ModelSpec:
    """Combine ``GET /v2/models/X`` and ``GET /v2/models/X/config`` into a ModelSpec."""
    max_batch_size = int(config.get("max_batch_size", 0))
    batched = max_batch_size > 0
    versions = metadata.get("versions") or [""]
    return ModelSpec(
        name=metadata["name"],
        version=str(versions[-1]),
        inputs=tuple(_tensor(e, batched) for e in metadata.get("inputs", ())),
        outputs=tuple(_tensor(e, batched) for e in metadata.get("outputs", ())),
        max_batch_size=max_batch_size,
        labels=dict(labels or {}),
    )


def labelled_outputs(config: Mapping[str, Any]) -> list[str]:
    """Outputs whose config names a label file (``label_filename``)."""
    return [o["name"] for o in config.get("output", ()) if o.get("label_filename")]
