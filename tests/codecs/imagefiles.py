"""Image files as users upload them, built with Pillow for the codec tests."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image


def encode(image: Image.Image, image_format: str = "PNG", **params: Any) -> bytes:
    """The file bytes of ``image`` in ``image_format``."""
    buffer = io.BytesIO()
    if image_format == "PNG":
        params.setdefault("compress_level", 1)  # fast; the pixels are the same at any level
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
