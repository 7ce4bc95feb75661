"""The size limits a request must keep, each with the ``kxform serve`` flag that changes it.

One frozen ``Limits`` per process, set by ``kxform serve`` at start (``configure``) and read by the
edge (body, headers, JSON) and the codecs (tensors, images, text) through ``current()``. Every
limit error names the limit, the value seen and the flag, so the message says how to fix it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kxform.errors import DecodeError, HeadersTooLargeError, LimitError

__all__ = ["Limits", "configure", "configured", "current"]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may carry; defaults follow Triton (64 MiB bodies) and Pillow (pixel count)."""

    max_request_bytes: int = 64 * MiB  # body as received, and again after Content-Encoding is undone
    max_instances: int = 1024
    max_image_pixels: int = 89_478_485  # Pillow's MAX_IMAGE_PIXELS
    max_image_aspect_ratio: float = 200.0  # longer side / shorter side, before any resize
    max_tensor_elements: int = 16 * MiB
    max_string_bytes: int = 64 * 1024  # one text instance (kxform.codecs.text); text models are slow per byte
    max_json_depth: int = 64
    max_header_bytes: int = 64 * 1024  # request line + all headers (or gRPC metadata)
    max_headers: int = 100

    def check_request_bytes(self, size: int, what: str = "the request body") -> None:
        if size > self.max_request_bytes:
            raise LimitError(
                f"{what} is {size} bytes, more than the {self.max_request_bytes} allowed; "
                "send a smaller request, or raise --max_request_bytes"
            )

    def check_instances(self, count: int) -> None:
        if count > self.max_instances:
            raise LimitError(
                f"the request has {count} instances; at most {self.max_instances} are accepted "
                "(--max_instances): split it into several requests"
            )

    def check_elements(self, count: int, field: str) -> None:
        if count > self.max_tensor_elements:
            raise LimitError(
                f"{field} has {count} elements, more than the {self.max_tensor_elements} allowed per tensor; "
                "send a smaller tensor, or raise --max_tensor_elements"
            )

    def check_shape(self, shape: Sequence[int], field: str) -> None:
        """The elements of a tensor of ``shape``, and each of its dimensions.

        A dimension past the element limit is refused even when another is 0 (``[0, 2**63]`` holds
        no elements, but numpy cannot make an array of that shape).
        """
        self.check_elements(math.prod(shape), field)
        largest = max(shape, default=0)
        if largest > self.max_tensor_elements:
            raise LimitError(
                f"{field}.shape has a dimension of {largest}, more than the {self.max_tensor_elements} elements "
                "allowed per tensor; send the tensor's actual shape, or raise --max_tensor_elements"
            )

    def check_string(self, size: int, field: str) -> None:
        if size > self.max_string_bytes:
            raise LimitError(
                f"{field} is {size} bytes of text, more than the {self.max_string_bytes} allowed; "
                "send shorter text, or raise --max_string_bytes"
            )

    def check_image(self, width: int, height: int, field: str) -> None:
        """Pixels and aspect ratio of an image whose header was read, before any pixel is decoded."""
        if width * height > self.max_image_pixels:
            raise LimitError(
                f"{field} is {width}x{height} = {width * height} pixels, more than the {self.max_image_pixels} "
                "allowed (--max_image_pixels); send a smaller image"
            )
        short, long = sorted((width, height))
        if short == 0 or long / short > self.max_image_aspect_ratio:
            raise DecodeError(
                f"{field} is {width}x{height}, an aspect ratio beyond {self.max_image_aspect_ratio:g}:1 "
                "(--max_image_aspect_ratio); send an image cropped to its content"
            )

    def check_headers(self, count: int, size: int) -> None:
        if count > self.max_headers:
            raise HeadersTooLargeError(
                f"the request has {count} headers, more than the {self.max_headers} allowed; "
                "send fewer headers, or raise --max_headers"
            )
        if size > self.max_header_bytes:
            raise HeadersTooLargeError(
                f"the request's headers are {size} bytes, more than the {self.max_header_bytes} allowed; "
                "send smaller headers, or raise --max_header_bytes"
            )


_current = Limits()


def current() -> Limits:
    """The limits in force in this process."""
    return _current


def configure(limits: Limits) -> None:
    """Set the process's limits (``kxform serve`` does, once, before serving)."""
    global _current
    _current = limits


@contextlib.contextmanager
def configured(**changes: Any) -> Iterator[Limits]:
    """The current limits with ``changes`` while the block runs (tests)."""
    previous = _current
    configure(replace(previous, **changes))
    try:
        yield _current
    finally:
        configure(previous)
