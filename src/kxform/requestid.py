"""Request ids: the client's ``x-request-id`` when it is a safe token, a new one otherwise.

The id travels in response headers, gRPC metadata, log lines and the call to Triton, so only
printable ASCII without spaces (and a bounded length) is taken from the client; anything else is
replaced, and the replacement logged, so that no id can break a header or a log line.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from typing import Final

__all__ = ["HEADER", "MAX_LENGTH", "accept_request_id", "new_request_id"]

logger = logging.getLogger(__name__)

HEADER: Final = "x-request-id"
MAX_LENGTH: Final = 128
_SAFE: Final = re.compile(rb"[!-~]{1,%d}" % MAX_LENGTH)


# 32 hex digits, like a uuid4's: 64 random bits drawn once per process, then a counter. Unique across
# the replicas and workers of a service (each process draws its own), and no syscall per request as
# uuid4's os.urandom is. Workers are spawned, never forked, so no two processes share the prefix.
_PREFIX: Final = secrets.token_hex(8)
_COUNTER: Final = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):016x}"


def accept_request_id(value: bytes | str | None) -> str:
    """``value`` if it is a safe token (printable ASCII, no whitespace, at most 128 bytes), else a new id."""
    if not value:
        return new_request_id()
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if _SAFE.fullmatch(raw):
        return raw.decode("ascii")
    replacement = new_request_id()
    logger.info(
        "x-request-id %r is not a printable ASCII token of at most %d bytes; using %s",
        raw[:64],
        MAX_LENGTH,
        replacement,
    )
    return replacement
