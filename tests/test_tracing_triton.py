"""Whole traces: a client's request through ``kxform serve`` and the real Triton, both exporting to a real OTLP
receiver (``tests/otlp.py``); Triton runs in its OpenTelemetry trace mode, so its own spans show which
``traceparent`` it received. Also the logs that join up: the failed-request JSON line, ids on every line."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kxform.testing import ServerProcess, start_serve, start_triton
from tests.otlp import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

STAGES = {"decode", "preprocess", "predictor", "batch wait", "predictor call", "postprocess", "encode"}
SERVER_SPAN = "POST /v1/models/{model}:predict"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiving:
        yield receiving


@pytest.fixture(scope="module")
def traced_triton(
    receiver: OtlpReceiver, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Triton exporting its own traces of every request (rate 1) to the receiver, within 100 ms."""
    settings = [
        "mode=opentelemetry",
        "rate=1",
        "level=TIMESTAMPS",
        f"opentelemetry,url={receiver.endpoint}/v1/traces",
        "opentelemetry,bsp_schedule_delay=100",
        "opentelemetry,resource=service.name=triton",
    ]
    extra = [f"--triton-arg=--trace-config={setting}" for setting in settings]
    server = start_triton(model_repository, tmp_path_factory.mktemp("traced-triton"), extra=extra)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["v2", "grpc-v2"])
def traced_serve(
    request: pytest.FixtureRequest,
    receiver: OtlpReceiver,
    traced_triton: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """``kxform serve`` with tracing turned on by the standard variable, logging JSON at DEBUG."""
    port = traced_triton.ports["grpc" if request.param == "grpc-v2" else "http"]
    server = start_serve(
        ["cifar10"],
        f"127.0.0.1:{port}",
        tmp_path_factory.mktemp("traced-serve"),
        extra=[f"--predictor_protocol={request.param}", "--log_format=json", "--log_level=DEBUG"],
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )
    yield server
    server.stop()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, body, {"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def client_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def example_body() -> bytes:
    from kxform.plugins import load_plugin

    return json.dumps(load_plugin("cifar10").transformer.example_request()).encode()


def kxform_spans(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.name: span for span in spans if span.service == "kxform"}


def test_a_v1_request_is_one_trace_from_the_client_through_kxform_into_triton(
    traced_serve: ServerProcess, receiver: OtlpReceiver
) -> None:
    trace_id, client_span, traceparent = client_traceparent()
    status, headers, _ = post(
        f"{traced_serve.http_url}/v1/models/cifar10:predict", example_body(), {"traceparent": traceparent}
    )
    assert status == 200

    def complete() -> bool:
        spans = receiver.of_trace(trace_id)
        return STAGES | {SERVER_SPAN} <= set(kxform_spans(spans)) and any(s.service == "triton" for s in spans)

    assert receiver.wait_for(complete), (
        [(s.service, s.name) for s in receiver.of_trace(trace_id)],
        {(s.service, s.trace_id) for s in receiver.spans if s.service != "kxform"},
        trace_id,
    )
    spans = receiver.of_trace(trace_id)
    ours = kxform_spans(spans)
    server = ours[SERVER_SPAN]
    assert server.parent_span_id == client_span  # it continues the client's trace
    assert server.attributes["kxform.model"] == "cifar10"
    assert server.attributes["kxform.protocol"] == "v1"
    assert server.attributes["kxform.instances"] == 1
    assert server.attributes["kxform.status"] == 200
    request_id = headers["x-request-id"]
    assert {span.attributes["kxform.request_id"] for span in ours.values()} == {request_id}
    for name in ("decode", "preprocess", "predictor", "postprocess", "encode"):
        assert ours[name].parent_span_id == server.span_id, name
    for name in ("batch wait", "predictor call"):
        assert ours[name].parent_span_id == ours["predictor"].span_id, name
    assert ours["predictor call"].attributes["kxform.batch.size"] == 1
    # Triton's own root span is the child of the call that carried the traceparent
    triton_roots = [s for s in spans if s.service == "triton" and s.parent_span_id == ours["predictor call"].span_id]
    assert triton_roots, [(s.name, s.parent_span_id) for s in spans if s.service == "triton"]


def test_a_failed_request_is_one_json_line_with_its_ids_and_a_failed_span(
    traced_serve: ServerProcess, receiver: OtlpReceiver
) -> None:
    trace_id, _, traceparent = client_traceparent()
    body = json.dumps({"instances": [{"image_bytes": {"b64": "not base64!"}}]}).encode()
    status, headers, _ = post(f"{traced_serve.http_url}/v1/models/cifar10:predict", body, {"traceparent": traceparent})
    assert status == 400
    request_id = headers["x-request-id"]

    lines = [json.loads(line) for line in traced_serve.log().splitlines() if line.startswith("{")]
    failed = [line for line in lines if line.get("request_id") == request_id and "status" in line]
    assert len(failed) == 1, failed
    assert failed[0]["trace_id"] == trace_id
    assert failed[0]["model"] == "cifar10"
    assert failed[0]["status"] == 400
    assert failed[0]["error_kind"] == "DecodeError"
    assert failed[0]["stage"] == "preprocess"  # the image is decoded inside the plugin's preprocess
    assert receiver.wait_for(lambda: SERVER_SPAN in kxform_spans(receiver.of_trace(trace_id)))
    server = kxform_spans(receiver.of_trace(trace_id))[SERVER_SPAN]
    assert server.attributes["error.type"] == "DecodeError"
    assert server.attributes["kxform.stage"] == "preprocess"


def test_every_line_logged_for_a_request_carries_its_request_and_trace_id(traced_serve: ServerProcess) -> None:
    trace_id, _, traceparent = client_traceparent()
    status, headers, _ = post(
        f"{traced_serve.http_url}/v1/models/cifar10:predict", example_body(), {"traceparent": traceparent}
    )
    assert status == 200

    lines = [json.loads(line) for line in traced_serve.log().splitlines() if line.startswith("{")]
    mentioning = [line for line in lines if headers["x-request-id"] in line["message"]]
    assert mentioning  # at DEBUG, model.run logs each request
    assert all(line.get("request_id") == headers["x-request-id"] for line in mentioning)
    assert all(line.get("trace_id") == trace_id for line in mentioning)
