"""The errors kxform raises, each carrying the HTTP status and gRPC code it maps to.

    KxformError                         500 INTERNAL           root; never raised bare
    ├── PluginError                     500 INTERNAL           a plugin cannot be found, imported, validated
    ├── RequestError                    400 INVALID_ARGUMENT   the request is wrong; names the field
    │   └── DecodeError                 400 INVALID_ARGUMENT   an instance or tensor cannot be decoded
    ├── ModelNotFoundError              404 NOT_FOUND          no transformer is served under that name
    ├── PredictorError                  502 UNAVAILABLE        the predictor's answer is unusable
    │   ├── PredictorUnavailableError   503 UNAVAILABLE        unreachable, refusing, or not ready
    │   └── PredictorTimeoutError       504 DEADLINE_EXCEEDED  no answer within the request timeout
    └── TritonServerError               500 INTERNAL           ``kxform triton`` could not start
        └── ModelLoadError              500 INTERNAL           a model of the repository failed to load

Lower-level errors (binascii, PIL, tritonclient, aiohttp, grpc) are translated where they are
caught, with ``raise Mapped(message) from exc``; one handler in the server turns any of these
into a response.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "KxformError",
    "ModelLoadError",
    "ModelNotFoundError",
    "PluginError",
    "PredictorError",
    "PredictorTimeoutError",
    "PredictorUnavailableError",
    "RequestError",
    "TritonServerError",
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


class RequestError(KxformError):
    """The request is malformed; the message names the field and how to fix it."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class DecodeError(RequestError):
    """One instance or tensor of the request cannot be decoded."""


class ModelNotFoundError(KxformError):
    """The request names a model this server does not serve."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class PredictorError(KxformError):
    """The predictor answered, but not with something usable (HTTP 502)."""

    http_status = 502
    grpc_code = "UNAVAILABLE"


class PredictorUnavailableError(PredictorError):
    """The predictor cannot be reached, refuses connections, or says it is not ready (HTTP 503)."""

    http_status = 503


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
