"""One request's trace: a server span continuing the client's ``traceparent``, a child span per stage, and
the stage timings a ``Server-Timing`` header reports. Imported only when ``kxform.tracing`` is on.

    POST /v1/models/{model}:predict  (SERVER; model, protocol, instances, status, error kind, request id)
      ├─ decode ─ preprocess
      ├─ predictor
      │   ├─ batch wait                 (queued -> sent in a batch; batch size, requests in it)
      │   └─ predictor call  (CLIENT)   its context is the traceparent Triton receives
      ├─ postprocess
      └─ encode

A batch joins several requests into one predictor call; each of them gets its own ``predictor call``
span (same start and end) in its own trace. The first request's span is the one whose context goes to
Triton: it links to the other requests' server spans, and their ``predictor call`` spans link to it,
so from any request one reaches Triton's spans of the shared call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import propagate
from opentelemetry import trace as otel
from opentelemetry.context import Context as OtelContext
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from kxform.errormap import error_kind
from kxform.metrics import stage_of

__all__ = ["PredictorCall", "RequestTrace", "Tracing"]

REQUEST_ID = "kxform.request_id"

Span = otel.Span
_Opened = tuple[Span, OtelContext]


class RequestTrace:
    """Created by a front for a traced request; every stage of the request reports to it."""

    __slots__ = ("_parent", "_tracer", "request_id", "span", "timings")

    def __init__(
        self,
        tracer: otel.Tracer | None,
        request_id: str,
        span: Span | None,
        timings: list[tuple[str, float]] | None,
    ) -> None:
        self._tracer = tracer
        self.request_id = request_id
        self.span = span
        self._parent: OtelContext | None = otel.set_span_in_context(span) if span is not None else None
        self.timings = timings

    @property
    def trace_id(self) -> str:
        """The W3C trace id (32 hex digits), or "" when only Server-Timing is on."""
        if self.span is None:
            return ""
        return format(self.span.get_span_context().trace_id, "032x")

    @property
    def parent(self) -> OtelContext | None:
        """The context of the innermost open stage: the parent of a span started now."""
        return self._parent

    def set_attribute(self, key: str, value: str | int) -> None:
        if self.span is not None:
            self.span.set_attribute(key, value)

    def enter_stage(self, name: str) -> _Opened | None:
        if self._tracer is None:
            return None
        span = self._tracer.start_span(name, self._parent, attributes={REQUEST_ID: self.request_id})
        previous, self._parent = self._parent, otel.set_span_in_context(span)
        assert previous is not None
        return span, previous

    def exit_stage(self, opened: _Opened | None, name: str, seconds: float, error: BaseException | None) -> None:
        if self.timings is not None:
            self.timings.append((name, seconds))
        if opened is not None:
            span, self._parent = opened
            if error is not None:
                _record_error(span, error)
            span.end()

    def batch_wait(self, queued_ns: int, sent_ns: int, rows: int, requests: int) -> None:
        """The time the request waited in the batcher's queue, until its batch of ``rows`` was sent."""
        if self.timings is not None:
            self.timings.append(("batch_wait", (sent_ns - queued_ns) / 1e9))
        if self._tracer is not None:
            attributes: dict[str, str | int] = {REQUEST_ID: self.request_id, "kxform.batch.size": rows}
            attributes["kxform.batch.requests"] = requests
            span = self._tracer.start_span("batch wait", self._parent, attributes=attributes, start_time=queued_ns)
            span.end(end_time=sent_ns)

    def finish(self, status: int, error: BaseException | None) -> None:
        """The request is answered with ``status`` (``error``: what the client got, if it failed)."""
        if self.span is None:
            return
        self.span.set_attribute("kxform.status", status)
        if error is not None:
            _record_error(self.span, error, server=status >= 500)
        self.span.end()

    def server_timing(self) -> str:
        """The ``Server-Timing`` header: each stage's duration in milliseconds."""
        return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in self.timings or ())


class PredictorCall:
    """The spans of one predictor call, one per traced request in it; ``headers`` carry the trace to Triton."""

    __slots__ = ("_spans", "headers")

    def __init__(self, headers: Mapping[str, str], spans: Sequence[Span]) -> None:
        self.headers = headers
        self._spans = spans

    def end(self, error: BaseException | None) -> None:
        for span in self._spans:
            if error is not None:
                _record_error(span, error)
            span.end()


class Tracing:
    """The process's tracing: OpenTelemetry (``tracer``, when on) and/or Server-Timing."""

    def __init__(self, tracer: otel.Tracer | None, server_timing: bool, provider: Any = None, what: str = "") -> None:
        self.tracer = tracer
        self.server_timing = server_timing
        self._provider = provider
        self._what = what

    @classmethod
    def create(cls, *, otel: bool, server_timing: bool) -> Tracing:
        if not otel:
            return cls(None, server_timing)
        from kxform.otel_setup import tracer_provider

        provider, what = tracer_provider()
        from kxform import __version__

        return cls(provider.get_tracer("kxform", __version__), server_timing, provider, what)

    def describe(self) -> str:
        return self._what

    def start_request(
        self, headers: Mapping[str, str], request_id: str, name: str, attributes: Mapping[str, str | int]
    ) -> RequestTrace:
        """A traced request; its server span continues the ``traceparent`` in ``headers`` when there is one."""
        timings: list[tuple[str, float]] | None = [] if self.server_timing else None
        if self.tracer is None:
            return RequestTrace(None, request_id, None, timings)
        parent = propagate.extract(headers)
        span = self.tracer.start_span(
            name, parent, kind=SpanKind.SERVER, attributes={**attributes, REQUEST_ID: request_id}
        )
        return RequestTrace(self.tracer, request_id, span, timings)

    def predictor_call(self, traces: Sequence[RequestTrace], model: str, rows: int, host: str) -> PredictorCall:
        """Spans for one call to the predictor made for ``traces``; see the module docstring for batches."""
        traced = [trace for trace in traces if trace.span is not None]
        if self.tracer is None or not traced:
            return PredictorCall({}, ())
        attributes: dict[str, str | int] = {
            "kxform.predictor.model": model,
            "kxform.batch.size": rows,
            "kxform.batch.requests": len(traces),
            "server.address": host,
        }
        carrier = traced[0]
        others = [Link(trace.span.get_span_context()) for trace in traced[1:] if trace.span is not None]
        first = self.tracer.start_span(
            "predictor call",
            carrier.parent,
            kind=SpanKind.CLIENT,
            attributes={**attributes, REQUEST_ID: carrier.request_id},
            links=others,
        )
        headers: dict[str, str] = {}
        propagate.inject(headers, context=otel.set_span_in_context(first))
        spans = [first]
        for trace in traced[1:]:
            spans.append(
                self.tracer.start_span(
                    "predictor call",
                    trace.parent,
                    kind=SpanKind.CLIENT,
                    attributes={**attributes, REQUEST_ID: trace.request_id},
                    links=[Link(first.get_span_context())],
                )
            )
        return PredictorCall(headers, spans)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def _record_error(span: Span, error: BaseException, *, server: bool = True) -> None:
    span.set_attribute("error.type", error_kind(error))
    span.set_attribute("kxform.stage", stage_of(error))
    if server:  # a 4xx is the client's error: the server span is not marked failed for it
        span.set_status(Status(StatusCode.ERROR, str(getattr(error, "message", error))[:500]))
