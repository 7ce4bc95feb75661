"""Text classification: strings -> a BYTES tensor -> a TorchScript ``List[str]`` model -> label and score.

The ``text`` model takes its strings as they are (TorchScript models with string I/O take
``List[str]``, seed 002): there is no tokenizer here. Triton's config declares the input
``TYPE_STRING`` with dims ``[1]``, so a request of N texts is one ``[N, 1]`` BYTES tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

import kxform
from kxform.codecs.text import text_bytes

__all__ = ["TextClassifier", "encode_text", "softmax"]


class TextClassifier(kxform.Transformer):
    """Instances are strings (or ``{"text": ...}``); each gets ``{"label": "POSITIVE", "score": 0.95}``."""

    predictor_model = "text"
    inputs = (kxform.TensorSpec("text", "BYTES", ()),)
    outputs = (kxform.TensorSpec("label", "BYTES", ()), kxform.TensorSpec("score", "FP32", ()))

    def example_request(self) -> dict[str, Any]:
        """Two sentences as plain string instances (``kxform dev`` prints them as a curl line)."""
        return {"instances": ["What a wonderful, helpful example!", "This is awful and broken."]}

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        texts = np.empty((len(instances), 1), dtype=np.object_)
        for index, instance in enumerate(instances):
            texts[index, 0] = encode_text(instance, f"instances[{index}]")
        return texts

    def postprocess(self, outputs: dict[str, npt.NDArray[Any]], ctx: kxform.Context) -> Any:
        probabilities = softmax(outputs["OUTPUT__0"])
        labels = ctx.labels("OUTPUT__0")
        best = probabilities.argmax(axis=1)
        return [
            {"label": labels[int(index)], "score": float(row[index])}
            for index, row in zip(best, probabilities, strict=True)
        ]


def encode_text(instance: object, field: str) -> bytes:
    """One instance as the UTF-8 bytes of a BYTES element (kxform's text codec: limits and errors)."""
    return text_bytes(instance, field)


def softmax(logits: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Row-wise softmax, computed in float64 from the largest logit down (no overflow)."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    result: npt.NDArray[np.float64] = exponentials / exponentials.sum(axis=-1, keepdims=True)
    return result
