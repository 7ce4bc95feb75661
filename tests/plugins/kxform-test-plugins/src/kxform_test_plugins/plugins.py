"""Small plugins in the shape users write them, calling the cifar10 model of the example repository."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import numpy as np
from PIL import Image

import kxform
from kxform.codecs import ImagePipeline

CIFAR10_PIPELINE = ImagePipeline(mode="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class Cifar10Images(kxform.Transformer):
    """The seeds' transformer: base64 images -> ToTensor + Normalize(0.5) -> logits and class name."""

    predictor_model = "cifar10"
    inputs = (kxform.TensorSpec("image", "BYTES", ()),)
    outputs = (kxform.TensorSpec("logits", "FP32", (10,)), kxform.TensorSpec("class", "BYTES", ()))

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        return CIFAR10_PIPELINE.batch(instances)

    def example_request(self) -> dict[str, Any]:
        pixels = np.linspace(0, 255, 32 * 32 * 3).reshape(32, 32, 3).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return {"instances": [{"image_bytes": {"b64": base64.b64encode(buffer.getvalue()).decode()}}]}

    def postprocess(self, outputs: dict[str, Any], ctx: kxform.Context) -> Any:
        logits = outputs["OUTPUT__0"]
        labels = ctx.labels("OUTPUT__0")
        return [{"logits": row.tolist(), "class": labels[int(row.argmax())]} for row in logits]


class NestedListTensor(kxform.Transformer):
    """Instances are already tensors as nested lists; postprocess is kxform's default."""

    predictor_model = "cifar10"

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        return np.asarray(instances, dtype=np.float64)  # float64 on purpose: kxform casts to FP32


class AsyncNestedListTensor(kxform.Transformer):
    """The same with async hooks; returns the input keyed by ordinal."""

    predictor_model = "cifar10"

    async def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        await asyncio.sleep(0)
        return {0: np.asarray(instances, dtype=np.float32)}

    async def postprocess(self, outputs: dict[str, Any], ctx: kxform.Context) -> Any:
        return {"async": True, "rows": outputs["OUTPUT__0"].tolist()}


def not_a_transformer() -> None:
    """An entry point that names a function, not a Transformer subclass."""


class BuggyPostprocess(Cifar10Images):
    """A plugin bug as users write them: postprocess reads an output the model does not have."""

    def postprocess(self, outputs: dict[str, Any], ctx: kxform.Context) -> Any:
        return outputs["output0"].tolist()
