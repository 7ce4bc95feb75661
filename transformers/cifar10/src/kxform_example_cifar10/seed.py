"""Seed 000's torchvision preprocessing, as written there; imported only by ``Cifar10Torchvision``.

``transform`` and ``image_transform`` are the seed's (``image_transformer_v2.py`` of KServe's
Triton TorchScript guide); only the base64 step moved out, to kxform, which finds the bytes under
either instance key. Importing this module imports torch and torchvision.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

try:
    import torch
    import torchvision.transforms as transforms  # type: ignore[import-untyped]  # torchvision has no py.typed
except ImportError as exc:
    raise ImportError(
        f"{exc}; the cifar10-torchvision transformer needs torchvision: "
        "pip install 'kxform-example-cifar10[torchvision]' (or serve the torch-free 'cifar10' transformer)"
    ) from exc

__all__ = ["image_transform", "transform"]

transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])


def image_transform(byte_array: bytes) -> torch.Tensor:
    """The seed's ``image_transform``, from the bytes its ``base64.b64decode`` line produced."""
    image = Image.open(io.BytesIO(byte_array))
    a = np.asarray(image)
    im = Image.fromarray(a)
    res: torch.Tensor = transform(im)
    return res


def batch(tensors: list[torch.Tensor]) -> npt.NDArray[np.float32]:
    """The instances' tensors as one N x 3 x 32 x 32 array for kxform (the seed sent ``res.tolist()``)."""
    array: npt.NDArray[np.float32] = torch.stack(tensors).numpy()
    return array
