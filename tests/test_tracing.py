"""Tracing (``kxform.tracing``, ``kxform.request_trace``): when it is on, what a batched call's spans look like,
and that it costs nothing when off. ``tests/test_tracing_triton.py`` checks whole traces through ``kxform serve``
against the real Triton and a real OTLP receiver."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kxform import tracing
from kxform.batching import Batcher
from kxform.metrics import stage, stage_of
from kxform.predictor.base import PredictorSettings
from kxform.request_trace import Tracing
from tests.test_batching import HANG_GUARD_SECONDS, RowSums, rows, settle, spec

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        pytest.param({}, False, id="nothing-set"),
        pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True, id="endpoint"),
        pytest.param({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True, id="traces-endpoint"),
        pytest.param({"OTEL_TRACES_EXPORTER": "otlp"}, True, id="exporter"),
        pytest.param({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False, id="none"),
        pytest.param({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False, id="sdk-disabled"),
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask(environ: dict[str, str], on: bool) -> None:
    assert tracing.enabled_by_environment(environ) is on


def test_tracing_off_imports_no_opentelemetry_sdk_and_leaves_no_tracer() -> None:
    code = (
        "import sys, os\n"
        "for k in list(os.environ):\n"
        "    k.startswith('OTEL_') and os.environ.pop(k)\n"
        "import kxform.server, kxform.tracing as t\n"
        "t.configure(otel=False)\n"
        "assert t.ACTIVE is None\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'kxform.request_trace'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_serve_refuses_an_otlp_protocol_it_cannot_export(monkeypatch: pytest.MonkeyPatch) -> None:
    from kxform.cli import main

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    assert main(["serve", "--transformer=cifar10", "--otel"]) == 2


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, exporting into memory (the SDK's own exporter for tests)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "ACTIVE", Tracing(provider.get_tracer("test"), True, provider))
    yield exporter
    provider.shutdown()


def active() -> Tracing:
    assert tracing.ACTIVE is not None
    return tracing.ACTIVE


def by_name(finished: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name == name]


class RecordingHeaders(RowSums):
    """The in-memory predictor, remembering the trace headers each call would send to Triton."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[Mapping[str, str] | None] = []

    async def infer(
        self, model: str, inputs: Mapping[str, Any], outputs: Sequence[str], request_id: str = ""
    ) -> dict[str, Any]:
        self.headers.append(tracing.CALL_HEADERS.get())
        return await super().infer(model, inputs, outputs, request_id)


async def test_a_batch_gives_each_request_its_predictor_call_and_sends_the_first_ones_context(
    spans: InMemorySpanExporter,
) -> None:
    predictor = RecordingHeaders()
    predictor.settings = PredictorSettings("memory:0")
    batcher = Batcher(predictor, max_delay_us=3600 * 10**6)
    predictor.gate = asyncio.Event()
    first = active().start_request({}, "first", "POST test", {})
    held = asyncio.ensure_future(batcher.infer(spec(), rows(1, 0), ["OUTPUT__0"], "first", first))
    await settle()  # the first call is in flight: the next two wait and are sent together
    traces = [active().start_request({"traceparent": TRACEPARENT}, f"r{i}", "POST test", {}) for i in range(2)]
    waiting = [
        asyncio.ensure_future(batcher.infer(spec(), rows(1, i + 1), ["OUTPUT__0"], f"r{i}", trace))
        for i, trace in enumerate(traces)
    ]
    await settle()
    predictor.gate.set()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await asyncio.gather(held, *waiting)
    for trace in (first, *traces):
        trace.finish(200, None)

    finished = spans.get_finished_spans()
    calls = {span.attributes["kxform.request_id"]: span for span in by_name(finished, "predictor call")}
    waits = {span.attributes["kxform.request_id"]: span for span in by_name(finished, "batch wait")}
    assert sorted(calls) == ["first", "r0", "r1"]
    assert calls["r0"].attributes["kxform.batch.size"] == 2
    assert waits["r1"].attributes["kxform.batch.requests"] == 2
    carrier, other = calls["r0"], calls["r1"]
    assert carrier.context.trace_id == int(CLIENT_TRACE, 16)  # both continue the client's trace
    assert [link.context.span_id for link in other.links] == [carrier.context.span_id]
    sent = predictor.headers[1]
    assert sent is not None
    assert sent["traceparent"] == f"00-{CLIENT_TRACE}-{carrier.context.span_id:016x}-01"


async def test_a_traced_request_without_batching_gets_its_predictor_call(spans: InMemorySpanExporter) -> None:
    predictor = RecordingHeaders()
    batcher = Batcher(predictor, max_delay_us=0)
    trace = active().start_request({"traceparent": TRACEPARENT}, "alone", "POST test", {})
    await batcher.infer(spec(), rows(2, 0), ["OUTPUT__0"], "alone", trace)
    trace.finish(200, None)

    (call,) = by_name(spans.get_finished_spans(), "predictor call")
    assert call.parent is not None
    assert call.parent.span_id == trace.span.get_span_context().span_id  # type: ignore[union-attr]
    assert predictor.headers[0] is not None
    assert predictor.headers[0]["traceparent"].split("-")[1] == CLIENT_TRACE


async def test_an_untraced_call_sends_no_trace_headers() -> None:
    predictor = RecordingHeaders()
    await Batcher(predictor, max_delay_us=0).infer(spec(), rows(1, 0), ["OUTPUT__0"], "plain")
    assert predictor.headers == [None]


def test_a_stage_span_records_the_failure_and_the_stage_it_happened_in(spans: InMemorySpanExporter) -> None:
    trace = active().start_request({}, "bad", "POST test", {})
    with pytest.raises(ValueError, match="broken") as raised, stage("m", "decode", trace):
        raise ValueError("broken")
    trace.finish(400, raised.value)

    (decode,) = by_name(spans.get_finished_spans(), "decode")
    (server,) = by_name(spans.get_finished_spans(), "POST test")
    assert stage_of(raised.value) == "decode"
    assert decode.attributes["error.type"] == "ValueError"
    assert server.attributes["kxform.stage"] == "decode"
    assert server.attributes["kxform.status"] == 400
    assert server.status.is_ok  # a 4xx is the client's error, not the server's
    assert trace.server_timing().startswith("decode;dur=")


def test_stage_spans_nest_under_the_innermost_open_stage(spans: InMemorySpanExporter) -> None:
    trace = active().start_request({}, "nest", "POST test", {})
    with stage("m", "predictor", trace):
        trace.batch_wait(1, 2, 1, 1)
    trace.finish(200, None)

    finished = spans.get_finished_spans()
    (predictor,) = by_name(finished, "predictor")
    (wait,) = by_name(finished, "batch wait")
    assert wait.parent is not None
    assert wait.parent.span_id == predictor.context.span_id
    assert np.isclose((wait.end_time or 0) - (wait.start_time or 0), 1)
