"""The tracing switch of a process: off unless configured; OpenTelemetry's SDK is imported only when it is on.

    configure(otel=--otel, server_timing=...) once per serving process
      on when --otel, or OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, or
      OTEL_TRACES_EXPORTER names an exporter (not "none"); off when OTEL_SDK_DISABLED=true
      -> ACTIVE: a kxform.request_trace.Tracing (tracer provider, batch span processor, OTLP exporter)
    fronts: ACTIVE is None -> no trace at all (the request path pays one None check per hook)
            else ACTIVE.start_request(...) -> RequestTrace, passed down the request's path
    predictor clients: call_headers() -> the ``traceparent`` of the call being made (a context variable
      the batcher sets around a traced call), as HTTP headers or gRPC metadata

Exporter, endpoint, protocol (``http/protobuf`` or ``grpc``), sampler and batching follow the standard
``OTEL_*`` variables, read by the SDK and its exporters themselves.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kxform.request_trace import Tracing

__all__ = ["ACTIVE", "CALL_HEADERS", "configure", "enabled_by_environment", "shutdown"]

logger = logging.getLogger(__name__)

ACTIVE: Tracing | None = None
"""The process's tracing; None (the default) when neither OpenTelemetry nor Server-Timing is on."""

CALL_HEADERS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "kxform_call_headers", default=None
)
"""The trace context headers (``traceparent``, ``tracestate``) of the predictor call in progress."""

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def enabled_by_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OpenTelemetry variables ask for traces."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(env.get(name, "").strip() for name in _ENDPOINTS)


def configure(*, otel: bool, server_timing: bool = False) -> None:
    """Turn tracing on for this process when asked (``--otel`` or the environment), and/or Server-Timing."""
    global ACTIVE
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        otel = False
    otel = otel or enabled_by_environment()
    if not (otel or server_timing):
        ACTIVE = None
        return
    from kxform.request_trace import Tracing

    ACTIVE = Tracing.create(otel=otel, server_timing=server_timing)
    if otel:
        logger.info("tracing: OpenTelemetry on (%s)", ACTIVE.describe())


def shutdown() -> None:
    """Export what is left and stop (at the end of ``kxform serve``)."""
    global ACTIVE
    if ACTIVE is not None:
        ACTIVE.shutdown()
        ACTIVE = None
