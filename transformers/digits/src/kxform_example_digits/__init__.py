"""Images of handwritten digits -> the ``digits`` model (scikit-learn's 8x8 digits) -> label and confidence.

The model learnt from scikit-learn's ``digits``: 8x8 images whose pixels count the inked cells of a
4x4 block of a 32x32 bitmap (0..16, light ink on a dark ground), scaled to [0, 1]. Any PNG/JPEG is
brought there: grayscale, inverted when the ground is light (ink on paper), padded to a square,
box-averaged down to 8x8 (the dataset's own block counting) and rounded to those 17 levels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

import kxform
from kxform.codecs import convert_mode, encode_b64_image, image_bytes, open_image

__all__ = ["LEVELS", "Digits", "digit_pixels", "softmax"]

LEVELS = 16  # the dataset's pixel values run 0..16: inked cells of a 4x4 block
_LIGHT_GROUND = 128  # border mean above this: dark ink on light paper, inverted to the dataset's polarity


class Digits(kxform.Transformer):
    """PNG/JPEG instances (``{"image": {"b64": ...}}``, base64, or the raw body) -> ``{"label", "confidence"}``."""

    predictor_model = "digits"
    inputs = (kxform.TensorSpec("image", "BYTES", ()),)
    outputs = (kxform.TensorSpec("label", "BYTES", ()), kxform.TensorSpec("confidence", "FP32", ()))

    def example_request(self) -> dict[str, Any]:
        """A hand-drawn 1, dark on white at 32x32 as a scanned digit would be (``kxform dev``'s curl line)."""
        strokes = np.zeros((8, 8), dtype=np.uint8)
        strokes[1:7, 4] = strokes[2, 3] = strokes[6, 3:6] = 255
        pixels = 255 - np.kron(strokes, np.ones((4, 4), dtype=np.uint8))
        return {"instances": [{"image": {"b64": encode_b64_image(pixels)}}]}

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        _, height, width = ctx.model.input(0).shape  # [1, 8, 8]: one grayscale channel
        batch = np.empty((len(instances), 1, height, width), dtype=np.float32)
        for index, instance in enumerate(instances):
            field = f"instances[{index}]"
            batch[index, 0] = digit_pixels(image_bytes(instance, field), (width, height), field)
        return batch

    def postprocess(self, outputs: dict[str, npt.NDArray[Any]], ctx: kxform.Context) -> Any:
        probabilities = softmax(outputs["OUTPUT__0"])
        labels = ctx.labels("OUTPUT__0")
        best = probabilities.argmax(axis=1)
        return [
            {"label": labels[int(index)], "confidence": float(row[index])}
            for index, row in zip(best, probabilities, strict=True)
        ]


def digit_pixels(data: bytes, size: tuple[int, int], field: str) -> npt.NDArray[np.float32]:
    """The encoded image as the model's input: ``size`` (width, height) floats in [0, 1], 17 levels."""
    image = convert_mode(open_image(data, field), "L", field)
    if _border_mean(image) > _LIGHT_GROUND:
        image = ImageOps.invert(image)
    image = _square(image)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BOX)
    levels = np.rint(np.asarray(image, dtype=np.float64) * (LEVELS / 255))
    pixels: npt.NDArray[np.float32] = (levels / LEVELS).astype(np.float32)
    return pixels


def _border_mean(image: Image.Image) -> float:
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return float(border.mean())


def _square(image: Image.Image) -> Image.Image:
    """The image centred on a dark square, so that resizing keeps the digit's proportions."""
    if image.width == image.height:
        return image
    side = max(image.size)
    square = Image.new("L", (side, side), 0)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def softmax(logits: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Row-wise softmax, computed in float64 from the largest logit down (no overflow)."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    result: npt.NDArray[np.float64] = exponentials / exponentials.sum(axis=-1, keepdims=True)
    return result
