"""Photos -> the standard ImageNet preprocessing -> ``resnet50`` -> the top-5 classes with probabilities.

The preprocessing is torchvision's ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()`` and
``Normalize(IMAGENET_MEAN, IMAGENET_STD)``, done by kxform's numpy codec; the reply is the one
TorchServe's image classifier gives: ``[{"class": ..., "probability": ...}, ...]`` per instance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

import kxform
from kxform.codecs import ImagePipeline, encode_b64_image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PIPELINE", "TOP", "ImageNet", "softmax"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOP = 5

#: ``Compose([Resize(256), CenterCrop(224), ToTensor(), Normalize(IMAGENET_MEAN, IMAGENET_STD)])``
PIPELINE = ImagePipeline(mode="RGB", resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)


class ImageNet(kxform.Transformer):
    """JPEG/PNG/... of any size and colour mode (EXIF orientation applied) -> top-5 ImageNet classes.

    V1 replies list ``{"class", "probability"}`` pairs per instance; V2 replies carry the tensors
    ``class`` (BYTES [N, 5]) and ``probability`` (FP32 [N, 5]), most likely first.
    """

    predictor_model = "resnet50"
    inputs = (kxform.TensorSpec("image", "BYTES", ()),)
    outputs = (kxform.TensorSpec("class", "BYTES", (TOP,)), kxform.TensorSpec("probability", "FP32", (TOP,)))

    def example_request(self) -> dict[str, Any]:
        """A 320x240 colour gradient as a JPEG (``kxform dev`` prints it as a curl line)."""
        rows, columns = np.mgrid[0:240, 0:320]
        pixels = np.stack([columns * 255 // 319, rows * 255 // 239, (rows + columns) * 255 // 558], axis=-1)
        return {"instances": [{"image_bytes": {"b64": encode_b64_image(pixels.astype(np.uint8), "JPEG")}}]}

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        return PIPELINE.batch(instances)

    def postprocess(self, outputs: dict[str, npt.NDArray[Any]], ctx: kxform.Context) -> Any:
        probabilities = softmax(outputs["OUTPUT__0"])
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :TOP]  # ties: the lower class index first
        classes = np.asarray(ctx.labels("OUTPUT__0"), dtype=np.object_)[top]
        scores = np.take_along_axis(probabilities, top, axis=1)
        if ctx.protocol == "v2":
            return {"class": np.vectorize(str.encode, otypes=[np.object_])(classes), "probability": scores}
        return [
            [{"class": name, "probability": float(score)} for name, score in zip(names, row, strict=True)]
            for names, row in zip(classes, scores, strict=True)
        ]


def softmax(logits: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Row-wise softmax, computed in float64 from the largest logit down (no overflow)."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    result: npt.NDArray[np.float64] = exponentials / exponentials.sum(axis=-1, keepdims=True)
    return result
