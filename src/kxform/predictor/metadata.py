"""What a predictor model expects and returns: names, V2 datatypes, shapes, batch size, labels.

Built from Triton's model metadata and model config, which HTTP and gRPC both return as JSON
(gRPC's JSON spells 64-bit integers as strings; both are accepted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kxform.spec import ModelSpec, TensorSpec

__all__ = ["labelled_outputs", "model_spec_from_triton"]


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
