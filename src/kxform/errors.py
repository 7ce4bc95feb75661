"""The errors kxform raises, each carrying the HTTP status and gRPC code it maps to.

    KxformError                          500 INTERNAL            root; never raised bare
    ├── PluginError                      500 INTERNAL            a plugin cannot be found, imported, validated
    ├── PluginBugError                    500 INTERNAL            a plugin's hook raised (a bug in the plugin)
    ├── InternalError                    500 INTERNAL            a bug of kxform's; details only in the log
    ├── RequestError                     400 INVALID_ARGUMENT    the request is wrong; names the field
    │   ├── DecodeError                  400 INVALID_ARGUMENT    an instance or tensor cannot be decoded
    │   ├── LimitError                   413 RESOURCE_EXHAUSTED  a size limit (names the limit and its flag)
    │   │   └── HeadersTooLargeError     431 RESOURCE_EXHAUSTED  header bytes or count over the limit
    │   └── UnsupportedMediaTypeError    415 INVALID_ARGUMENT    a Content-Type/-Encoding not served
    ├── NotFoundError                    404 NOT_FOUND           no such route, model or version
    │   └── ModelNotFoundError           404 NOT_FOUND           no transformer is served under that name
    ├── MethodNotAllowedError            405 UNIMPLEMENTED       the route exists, the method does not
    ├── OverloadedError                  503 UNAVAILABLE         the worker pool's queue is full (Retry-After)
    ├── PredictorError                   502 UNAVAILABLE         the predictor's answer is unusable
    │   ├── PredictorUnavailableError    503 UNAVAILABLE         unreachable, refusing, or not ready
    │   ├── PredictorSharedMemoryError   502 UNAVAILABLE         Triton cannot use kxform's shared memory region
    │   └── PredictorTimeoutError        504 DEADLINE_EXCEEDED   no answer within the request timeout
    └── TritonServerError                500 INTERNAL            ``kxform triton`` could not start
        └── ModelLoadError               500 INTERNAL            a model of the repository failed to load

Lower-level errors (binascii, PIL, orjson, protobuf, httptools, OSError, grpc) are translated where they are
caught, with ``raise Mapped(message) from exc``. ``kxform.errormap`` is the one place that turns a
``KxformError`` (or anything else that escaped) into an HTTP response or a gRPC status.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "HeadersTooLargeError",
    "InternalError",
    "KxformError",
    "LimitError",
    "MethodNotAllowedError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NotFoundError",
    "OverloadedError",
    "PluginBugError",
    "PluginError",
    "PredictorError",
    "PredictorSharedMemoryError",
    "PredictorTimeoutError",
    "PredictorUnavailableError",
    "RequestError",
    "TritonServerError",
    "UnsupportedMediaTypeError",
]


class KxformError(Exception):
    """Root of every error kxform raises on purpose."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"  # name of a grpc.StatusCode member; grpc stays out of this import path

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PluginError(KxformError):
    """A plugin cannot be discovered, imported or validated; raised at start-up, never per request."""


class PluginBugError(KxformError):
    """A plugin's hook raised something that is not about the request: a bug in the plugin (HTTP 500)."""


class InternalError(KxformError):
    """Something escaped a request that nothing translated: a bug; the client sees no internals."""


class RequestError(KxformError):
    """The request is malformed; the message names the field and how to fix it."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class DecodeError(RequestError):
    """One instance or tensor of the request cannot be decoded."""


class LimitError(RequestError):
    """The request exceeds a size limit; the message names the limit and the flag that changes it."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class HeadersTooLargeError(LimitError):
    """The request's headers (or gRPC metadata) exceed the size or count limit."""

    http_status = 431


class UnsupportedMediaTypeError(RequestError):
    """The body's Content-Type or Content-Encoding is not one kxform serves."""

    http_status = 415


class NotFoundError(KxformError):
    """No route, model or model version by that name."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class ModelNotFoundError(NotFoundError):
    """The request names a model this server does not serve."""


class MethodNotAllowedError(KxformError):
    """The path exists but not for this HTTP method."""

    http_status = 405
    grpc_code = "UNIMPLEMENTED"

    def __init__(self, message: str, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allowed = allowed


class OverloadedError(KxformError):
    """The worker pool's queue is full; the client should retry after ``retry_after`` seconds."""

    http_status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PredictorError(KxformError):
    """The predictor answered, but not with something usable (HTTP 502)."""

    http_status = 502
    grpc_code = "UNAVAILABLE"


class PredictorUnavailableError(PredictorError):
    """The predictor cannot be reached, refuses connections, or says it is not ready (HTTP 503)."""

    http_status = 503


class PredictorSharedMemoryError(PredictorError):
    """Triton refused a shared memory region of kxform's, or does not know it (``--predictor_shm``, HTTP 502).

    ``kxform.predictor.shm`` registers the region again (Triton restarted) and, failing that, sends the
    call over the wire; the error reaches a client only with ``--predictor_shm system``.
    """


class PredictorTimeoutError(PredictorError):
    """The predictor did not answer within the request timeout (HTTP 504)."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class TritonServerError(KxformError):
    """The local Triton server could not be started or stopped."""


class ModelLoadError(TritonServerError):
    """Triton could not load a model of the repository; the message names the model and the reason."""

    def __init__(self, failures: dict[str, str]) -> None:
        lines = [f"model '{name}' failed to load: {reason}" for name, reason in sorted(failures.items())]
        super().__init__("; ".join(lines))
        self.failures = dict(failures)
