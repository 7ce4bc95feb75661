"""Triton Python-backend model: PNG/JPEG bytes -> the resnet50 model's normalised FP32 input.

The first step of ``resnet50_ensemble``, written as a Triton user writes one, with PIL and numpy:
torchvision's ``Compose([Resize(256), CenterCrop(224), ToTensor(), Normalize(IMAGENET_MEAN,
IMAGENET_STD)])``, which is what the imagenet plugin's preprocessing reproduces. It runs inside
Triton's Python stub; ``benchmarks/repository.py`` places it as ``imagenet_preprocess/1/model.py``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils
from PIL import Image

RESIZE = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def resize(image: Image.Image, size: int) -> Image.Image:
    """torchvision's ``Resize(size)``: the shorter side becomes ``size``, the longer one is truncated."""
    width, height = image.size
    target = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    return image if target == image.size else image.resize(target, Image.Resampling.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision's ``CenterCrop(size)`` of an image at least ``size`` on each side (after ``resize``)."""
    left = round((image.width - size) / 2)
    top = round((image.height - size) / 2)
    return image.crop((left, top, left + size, top + size))


def preprocess(data: bytes) -> npt.NDArray[np.float32]:
    """One encoded image as a normalised 3 x 224 x 224 array."""
    image = center_crop(resize(Image.open(io.BytesIO(data)).convert("RGB"), RESIZE), CROP)
    pixels = np.asarray(image, dtype=np.float32)
    normalised: npt.NDArray[np.float32] = (pixels.transpose(2, 0, 1) / 255.0 - MEAN) / STD
    return normalised


class TritonPythonModel:
    """Each request's ``IMAGE`` elements ([N, 1] BYTES) become its ``INPUT__0`` ([N, 3, 224, 224] FP32)."""

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
