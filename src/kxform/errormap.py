"""The one error mapper: any failure of a request → a ``KxformError`` → an HTTP response or a gRPC status.

``as_kxform_error`` is called by every handler (V1, V2 REST, gRPC) on whatever escaped; it logs
once, with the request id: a 4xx at INFO, a 5xx at ERROR, and an untranslated exception (a bug)
with its traceback, while the client gets ``InternalError``'s message and no internals.
``http_error`` and ``grpc_error`` turn the result into what goes on the wire.
"""

from __future__ import annotations

import logging
from typing import Any

from kxform.codecs.jsonbody import JSON_CONTENT_TYPE, dump_json
from kxform.errors import InternalError, KxformError, MethodNotAllowedError, OverloadedError, PluginBugError
from kxform.logs import bound_model
from kxform.metrics import stage_of

__all__ = ["as_kxform_error", "error_kind", "grpc_error", "http_error"]

logger = logging.getLogger("kxform.requests")

Headers = list[tuple[bytes, bytes]]


def error_kind(exc: BaseException) -> str:
    """What went wrong, as a label of logs and spans: the class of what the request raised."""
    return type(exc).__name__


def as_kxform_error(exc: BaseException, request_id: str, where: str, model: str = "") -> KxformError:
    """``exc`` as the ``KxformError`` the client gets, logged once; ``where`` names the route, ``model`` the
    transformer (when known). The line carries the request's fields (``kxform.logs``): with
    ``--log_format json`` it is the one structured line of the failed request."""
    stage = stage_of(exc)
    if isinstance(exc, KxformError):
        error: KxformError = exc
        level = logging.ERROR if exc.http_status >= 500 else logging.INFO
        trace = exc.__cause__ if isinstance(exc, PluginBugError) else None  # the plugin's traceback, for its author
        message, args = "%s request %s -> %d: %s", (where, request_id, exc.http_status, exc.message)
    else:
        error = InternalError(
            f"internal error while serving the request (request id {request_id}); the server log has the details"
        )
        level, trace = logging.ERROR, exc
        message, args = "%s request %s -> %d: unexpected %s", (where, request_id, 500, type(exc).__name__)
    fields = {
        "request_id": request_id,
        "model": model or bound_model(),
        "status": error.http_status,
        "error_kind": error_kind(exc),
        "stage": stage,
    }
    logger.log(level, message, *args, exc_info=trace, extra=fields)
    _forget_frames(exc)
    return error


def _forget_frames(exc: BaseException | None) -> None:
    """Drop the tracebacks of ``exc`` and its causes once logged.

    A traceback holds every frame it passed through, with their locals: the request's body, the
    half-inflated chunks of a gzip bomb. The handler that keeps the error would form a reference
    cycle with them that only a (rare, see ``server._calm_garbage_collector``) full collection frees.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


def http_error(exc: KxformError) -> tuple[int, bytes, Headers]:
    """Status, body (``{"error": message}``, as kserve and Triton answer) and headers for ``exc``."""
    headers: Headers = [(b"content-type", JSON_CONTENT_TYPE.encode())]
    if isinstance(exc, OverloadedError):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    if isinstance(exc, MethodNotAllowedError) and exc.allowed:
        headers.append((b"allow", ", ".join(exc.allowed).encode()))
    return exc.http_status, dump_json({"error": exc.message}), headers


def grpc_error(exc: KxformError) -> tuple[Any, str]:
    """The ``grpc.StatusCode`` and details for ``exc``."""
    import grpc

    return grpc.StatusCode[exc.grpc_code], exc.message
