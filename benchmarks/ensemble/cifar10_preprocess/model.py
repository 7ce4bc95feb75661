"""Triton Python-backend model: PNG/JPEG bytes -> the cifar10 model's normalised FP32 input.

The first step of ``cifar10_ensemble``, written as a Triton user writes one, with PIL and numpy:
torchvision's ``Compose([ToTensor(), Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])``, which is what
the cifar10 plugin's preprocessing reproduces. It runs inside Triton's Python stub;
``benchmarks/repository.py`` places it as ``cifar10_preprocess/1/model.py``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils
from PIL import Image

MEAN = np.array([0.5, 0.5, 0.5], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.5, 0.5, 0.5], dtype=np.float32).reshape(3, 1, 1)


def preprocess(data: bytes) -> npt.NDArray[np.float32]:
    """One encoded image as a normalised 3 x H x W array."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    normalised: npt.NDArray[np.float32] = (pixels.transpose(2, 0, 1) / 255.0 - MEAN) / STD
    return normalised


class TritonPythonModel:
    """Each request's ``IMAGE`` elements ([N, 1] BYTES) become its ``INPUT__0`` ([N, 3, 32, 32] FP32)."""

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._respond(request) for request in requests]

    def _respond(self, request: Any) -> Any:
        images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
        try:
            batch = np.stack([preprocess(image) for image in images])
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            # This request's fault: answer it alone, the others of the batch still get their tensors.
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"IMAGE is not an image: {exc}", pb_utils.TritonError.INVALID_ARG)
            )
        return pb_utils.InferenceResponse([pb_utils.Tensor("INPUT__0", batch)])
