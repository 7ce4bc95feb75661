"""The seeds' CIFAR-10 transformer as a kxform plugin: images -> ``cifar10`` -> logits and class name.

The seeds preprocess with torchvision's ``Compose([ToTensor(), Normalize((0.5,)*3, (0.5,)*3)])``;
here kxform's numpy codec does the same, so the serving process needs no torch. The seeds' own
torchvision code runs unchanged as the ``cifar10-torchvision`` entry point (:class:`Cifar10Torchvision`,
with the seed's code in :mod:`.seed`), which imports torch when it is instantiated, not before: this
module imports in a torch-free image, and serving ``cifar10-torchvision`` there fails at start-up
with the ``pip install`` line that fixes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

import kxform
from kxform.codecs import ImagePipeline, encode_b64_image, image_bytes

__all__ = ["PIPELINE", "Cifar10", "Cifar10Torchvision", "check_image_size", "predictions"]

#: ``transforms.Compose([ToTensor(), Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])``, in numpy and Pillow.
PIPELINE = ImagePipeline(mode="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class Cifar10(kxform.Transformer):
    """32x32 images (``{"image_bytes": {"b64": ...}}``, ``{"image": {"b64": ...}}``, base64, or raw bytes).

    Each instance gets the model's 10 logits, as the seeds return them, and the class name of the top one.
    """

    predictor_model = "cifar10"
    inputs = (kxform.TensorSpec("image", "BYTES", ()),)
    outputs = (kxform.TensorSpec("logits", "FP32", (10,)), kxform.TensorSpec("class", "BYTES", ()))

    def example_request(self) -> dict[str, Any]:
        """A 32x32 colour gradient, sent as the seeds send it (``kxform dev`` prints it as a curl line)."""
        ramp = np.linspace(0, 255, 32, dtype=np.float32)
        pixels = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 255 - ramp[:, None]), axis=-1)
        return {"instances": [{"image_bytes": {"b64": encode_b64_image(pixels.astype(np.uint8))}}]}

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        tensors = []
        for index, instance in enumerate(instances):
            field = f"instances[{index}]"
            tensor = PIPELINE(image_bytes(instance, field), field)
            check_image_size(tensor.shape, ctx, field)
            tensors.append(tensor)
        return np.stack(tensors)

    def postprocess(self, outputs: dict[str, npt.NDArray[Any]], ctx: kxform.Context) -> Any:
        return predictions(outputs["OUTPUT__0"], ctx.labels("OUTPUT__0"))


class Cifar10Torchvision(Cifar10):
    """The ``cifar10`` transformer with the seeds' torchvision preprocessing in place of kxform's codec.

    This is what moving an existing ``kserve.Model`` transformer to kxform looks like when its code is
    kept: kxform finds each instance's image bytes, batches, forwards and shapes the reply. Needs
    ``pip install 'kxform-example-cifar10[torchvision]'``.
    """

    def __init__(self) -> None:
        super().__init__()
        from kxform_example_cifar10 import seed  # torch and torchvision: only when this plugin is served

        self.seed: ModuleType = seed

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        tensors = []
        for index, instance in enumerate(instances):
            field = f"instances[{index}]"
            try:
                tensor = self.seed.image_transform(image_bytes(instance, field))
            except (OSError, ValueError, TypeError, RuntimeError) as exc:
                # PIL's UnidentifiedImageError is an OSError; Normalize raises RuntimeError for a 4-channel image.
                raise kxform.DecodeError(
                    f"{field} cannot be preprocessed by the seeds' torchvision transform "
                    f"({type(exc).__name__}: {exc}); send an RGB PNG/JPEG"
                ) from exc
            check_image_size(tuple(tensor.shape), ctx, field)
            tensors.append(tensor)
        return self.seed.batch(tensors)


def check_image_size(shape: Sequence[int], ctx: kxform.Context, field: str) -> None:
    """The seeds do not resize: an image of another size than the model's input is the client's error."""
    _, height, width = ctx.model.input(0).shape
    if tuple(shape[-2:]) != (height, width):
        raise kxform.DecodeError(
            f"{field} is a {shape[-1]}x{shape[-2]} image; the {ctx.model.name} model takes {width}x{height} "
            f"images: resize it to {width}x{height} before sending"
        )


def predictions(logits: npt.NDArray[Any], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per instance: the logits (as the seeds return ``OUTPUT__0``) and the class name of the largest."""
    return [{"logits": row.tolist(), "class": classes[int(row.argmax())]} for row in logits]
