"""JSON documents from clients: parsed with orjson, errors that say where and what to send, depth bounded."""

from __future__ import annotations

from typing import Any

import orjson

from kxform import limits
from kxform.errors import RequestError

__all__ = ["JSON_CONTENT_TYPE", "dump_json", "load_json"]

JSON_CONTENT_TYPE = "application/json"


def load_json(data: bytes | bytearray | memoryview | str, what: str, fix: str) -> Any:
    """The value of ``data``, or a RequestError naming ``what`` was sent, where it broke, and ``fix``.

    orjson refuses NaN, lone surrogates and numbers that overflow a double; nesting deeper than
    ``--max_json_depth`` is refused here, before anything walks it recursively.
    """
    if not data:
        raise RequestError(f"{what} is empty; {fix}")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = str(exc).replace(": line", " at line", 1)
        raise RequestError(f"{what} is not valid JSON ({reason}); {fix}") from exc
    _check_depth(value, limits.current().max_json_depth, what)
    return value


def _check_depth(value: Any, limit: int, what: str) -> None:
    # Iterative, and only containers are pushed: a long flat list of numbers costs one type check each.
    stack: list[tuple[Any, int]] = [(value, 1)] if type(value) in (list, dict) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise RequestError(
                f"{what} nests deeper than {limit} levels of arrays and objects (--max_json_depth); "
                "send a flatter document (V2 tensors may be flat lists with a shape)"
            )
        children = node.values() if type(node) is dict else node
        stack.extend((child, depth + 1) for child in children if type(child) in (list, dict))


def dump_json(value: Any) -> bytes:
    """``value`` as JSON bytes; numpy arrays and scalars are written as lists and numbers."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
