"""The images every implementation is sent: seeded, synthetic, identical for all of them in a run."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from kxform.codecs import ImagePipeline
from kxform.codecs.dtypes import Array

__all__ = ["CIFAR10_PIPELINE", "IMAGENET_PIPELINE", "encoded_images", "tensor_of"]

# The preprocessing of the seeds' cifar10 transformer and of torchvision's ImageNet recipe; used to
# build the tensors sent to Triton directly, so the ceiling runs on what the transformers send.
CIFAR10_PIPELINE = ImagePipeline(mode="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
IMAGENET_PIPELINE = ImagePipeline(
    mode="RGB", resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


def _synthetic_pixels(seed: int, size: int) -> Array:
    """A smooth colour field with some grain: compresses like a photo, unlike pure noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.integers(-12, 13, size=smooth.shape, dtype=np.int16)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def encoded_images(count: int, size: int, image_format: str) -> list[bytes]:
    """``count`` distinct ``size`` x ``size`` RGB images encoded as ``image_format`` (PNG or JPEG)."""
    images = []
    for seed in range(count):
        buffer = io.BytesIO()
        Image.fromarray(_synthetic_pixels(seed, size)).save(buffer, format=image_format, quality=90)
        images.append(buffer.getvalue())
    return images


def tensor_of(images: list[bytes], pipeline: ImagePipeline) -> Array:
    """The N x C x H x W float32 tensor ``pipeline`` makes of ``images``."""
    return pipeline.batch(images)
