"""OpenTelemetry's SDK set up from the standard ``OTEL_*`` variables (imported only when tracing is on).

OTEL_TRACES_EXPORTER           otlp (default) | console
OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL   http/protobuf (default) | grpc
OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT   read by the exporter (default localhost:4318 / :4317)
OTEL_TRACES_SAMPLER[_ARG]      read by the TracerProvider (default parentbased_always_on)
OTEL_BSP_*                     read by the BatchSpanProcessor (export delay, queue, batch size)
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES   the resource; service.name is "kxform" unless set
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["EXPORTERS", "PROTOCOLS", "check_environment", "tracer_provider"]

EXPORTERS = ("otlp", "console", "none")
PROTOCOLS = ("http/protobuf", "grpc")


def _exporter_name(env: Mapping[str, str]) -> str:
    return env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"


def _protocol(env: Mapping[str, str]) -> str:
    value = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or PROTOCOLS[0]
    return value.strip().lower()


def check_environment(env: Mapping[str, str] | None = None) -> str | None:
    """What is wrong with the ``OTEL_*`` variables kxform reads itself, or None."""
    env = os.environ if env is None else env
    exporter = _exporter_name(env)
    if exporter not in EXPORTERS:
        return f"OTEL_TRACES_EXPORTER={exporter!r} is not served; use one of {', '.join(EXPORTERS)}"
    protocol = _protocol(env)
    if exporter == "otlp" and protocol not in PROTOCOLS:
        return f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not served; use one of {', '.join(PROTOCOLS)}"
    return None


def _exporter(env: Mapping[str, str]) -> tuple[Any, str]:
    if _exporter_name(env) == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(), "console"
    if _protocol(env) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(), "OTLP over gRPC"
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(), "OTLP over HTTP"


def tracer_provider() -> tuple[Any, str]:
    """An SDK ``TracerProvider`` exporting in batches, and a line saying where to."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {SERVICE_NAME: "kxform"}))
    if _exporter_name(env) == "none":  # spans made and traceparent sent on, nothing exported
        return provider, "no exporter: OTEL_TRACES_EXPORTER=none"
    exporter, where = _exporter(env)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, where
