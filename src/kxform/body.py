"""Request bodies within limits: ``Content-Encoding`` undone (gzip, deflate) without inflating a bomb."""

from __future__ import annotations

import zlib
from typing import Final

from kxform import limits
from kxform.errors import RequestError, UnsupportedMediaTypeError

__all__ = ["CONTENT_ENCODINGS", "decode_content_encoding"]

CONTENT_ENCODINGS: Final = ("identity", "gzip", "x-gzip", "deflate")
_WINDOW: Final = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_CHUNK: Final = 1024 * 1024


def decode_content_encoding(body: bytes, encoding: str | None) -> bytes:
    """``body`` with its Content-Encoding undone; the inflated size is bounded by ``--max_request_bytes``."""
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):  # applied in the order listed, so undone from the last
        if coding == "identity":
            continue
        if coding not in _WINDOW:
            raise UnsupportedMediaTypeError(
                f"Content-Encoding {coding!r} is not supported; send the body uncompressed, gzip or deflate"
            )
        body = _inflate(body, coding)
    return body


def _inflate(body: bytes, coding: str) -> bytes:
    inflater = zlib.decompressobj(_WINDOW[coding])
    parts: list[bytes] = []
    size, data = 0, body
    try:
        while True:
            chunk = inflater.decompress(data, _CHUNK)  # at most _CHUNK bytes out per step: bounded memory
            data = inflater.unconsumed_tail
            if not chunk and not data:
                break
            size += len(chunk)
            if size > limits.current().max_request_bytes:
                parts.clear()  # before raising: the traceback keeps this frame, and with it the chunks
                limits.current().check_request_bytes(size, f"the {coding}-decoded request body (at least)")
            parts.append(chunk)
    except zlib.error as exc:
        raise RequestError(
            f"the body is not valid {coding} data ({exc}); send it compressed or drop Content-Encoding"
        ) from exc
    if not inflater.eof:
        raise RequestError(f"the {coding} body is truncated; send the complete compressed body")
    return b"".join(parts)
