"""Text instances as users send them (a string, ``{"text": ...}``, or UTF-8 bytes from V2), as UTF-8 bytes."""

from __future__ import annotations

from collections.abc import Mapping

from kxform import limits
from kxform.errors import DecodeError
from kxform.offload import INLINE_MAX_TEXT_BYTES, require_worker

__all__ = ["text_bytes"]


def text_bytes(instance: object, field: str) -> bytes:
    """One instance as the UTF-8 bytes of a BYTES element, within ``--max_string_bytes``.

    V1 sends ``str`` (or ``{"text": str}``), V2 sends ``bytes``, which must be valid UTF-8.
    """
    if isinstance(instance, Mapping) and "text" in instance:
        instance, field = instance["text"], f"{field}.text"
    if isinstance(instance, str):
        limits.current().check_string(len(instance), field)  # characters <= bytes: a cheap first bound
        data = _encode(instance, field)
    elif isinstance(instance, bytes):
        data = _checked_utf8(instance, field)
    else:
        raise DecodeError(
            f'{field} is {type(instance).__name__}, not text; send a string or {{"text": "..."}} per instance'
        )
    limits.current().check_string(len(data), field)
    require_worker(len(data), INLINE_MAX_TEXT_BYTES)
    return data


def _encode(text: str, field: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: Python callers can pass one, JSON parsers refuse them
        raise DecodeError(
            f"{field} is not valid Unicode (lone surrogate at character {exc.start}); send valid text"
        ) from exc


def _checked_utf8(data: bytes, field: str) -> bytes:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"{field} is not UTF-8 text (invalid byte at {exc.start}); send the text encoded as UTF-8"
        ) from exc
    return data
