"""Talking to the predictor (Triton): one client per process over HTTP or gRPC, and its model's spec."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np

from kxform.codecs.dtypes import numpy_dtype
from kxform.predictor.base import PredictorClient, PredictorSettings, zeros_for
from kxform.predictor.metadata import labelled_outputs, model_spec_from_triton
from kxform.spec import ModelSpec, TensorSpec

__all__ = [
    "ModelSpec",
    "PredictorClient",
    "PredictorSettings",
    "TensorSpec",
    "create_predictor",
    "load_model_spec",
]


def create_predictor(settings: PredictorSettings) -> PredictorClient:
    """The client for ``settings.protocol``: ``v2`` (HTTP, binary tensors) or ``grpc-v2``."""
    if settings.protocol == "grpc-v2":
        from kxform.predictor.grpc import GrpcPredictor

        return GrpcPredictor(settings)
    from kxform.predictor.http import HttpPredictor

    return HttpPredictor(settings)


def _probe_input(spec: ModelSpec, tensor: TensorSpec) -> np.ndarray[Any, Any]:
    """A harmless input for the label probe: zeros, or empty strings for a BYTES (string) input."""
    shape = (1, *tensor.shape) if spec.batched else tensor.shape
    if tensor.datatype == "BYTES":
        return np.full([max(1, d) for d in shape], b"", dtype=np.object_)
    return zeros_for(shape, numpy_dtype(tensor.datatype))


async def _labels(client: PredictorClient, spec: ModelSpec, output: str) -> tuple[str, ...]:
    # Label files live beside the model in the predictor's storage, out of the transformer's reach;
    # Triton's classification extension returns them ("score:index:label") for every class at once.
    count = math.prod(d for d in spec.output(output).shape if d > 0)
    probe = {tensor.name: _probe_input(spec, tensor) for tensor in spec.inputs}
    entries = await client.classify(spec.name, probe, output, count)
    by_index = {int(index): label for _, index, label in (entry.split(":", 2) for entry in entries)}
    return tuple(by_index.get(i, str(i)) for i in range(count))


async def load_model_spec(client: PredictorClient, model: str) -> ModelSpec:
    """Read the model's metadata and config from the predictor, and the class labels it declares."""
    metadata, config = await asyncio.gather(client.model_metadata(model), client.model_config(model))
    spec = model_spec_from_triton(metadata, config)
    labels = {name: await _labels(client, spec, name) for name in labelled_outputs(config)}
    return model_spec_from_triton(metadata, config, labels)
