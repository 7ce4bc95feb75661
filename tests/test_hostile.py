"""Hostile requests against real ``kxform serve`` processes in front of the real Triton, both predictor protocols.

Each case must get its 4xx naming the field (or the limit and its flag), and afterwards the
process is alive and a valid request is answered 200: bad input never takes the service down.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kxform.testing import ServerProcess, start_serve
from tests.hostile import (
    JSON,
    GrpcCase,
    HttpCase,
    Reply,
    grpc_cases,
    http_cases,
    jpeg_with_unrewritable_exif,
    png,
    send_grpc,
    send_http,
    v1,
    v1_image,
    v2_json,
)

pytestmark = pytest.mark.integration

BIG_TEXT = 200_000
PLUGINS = ["cifar10", "text", "test-buggy-postprocess"]
# Small limits where a case would otherwise have to send hundreds of megabytes.
LIMITS = ["--max_request_bytes=2000000", "--max_string_bytes=100000"]
HTTP_CASES = http_cases(BIG_TEXT)
GRPC_CASES = grpc_cases()


@pytest.fixture(scope="module", params=["v2", "grpc-v2"], ids=["http-predictor", "grpc-predictor"])
def serve(
    request: pytest.FixtureRequest, triton: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    port = triton.ports["grpc" if request.param == "grpc-v2" else "http"]
    server = start_serve(
        PLUGINS,
        f"127.0.0.1:{port}",
        tmp_path_factory.mktemp("hostile"),
        extra=[f"--predictor_protocol={request.param}", *LIMITS],
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def channel(serve: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(serve.grpc_url, options=[("grpc.max_send_message_length", 2**30)]) as opened:
        yield opened


def valid(serve: ServerProcess) -> Reply:
    return send_http(serve.ports["http"], "POST", "/v1/models/cifar10:predict", v1_image(png(seed=3)), JSON)


def assert_still_serving(serve: ServerProcess) -> None:
    assert serve.process is not None
    assert serve.process.poll() is None, serve.log()[-3000:]
    assert valid(serve).status == 200


def test_there_are_over_a_hundred_cases() -> None:
    assert len(HTTP_CASES) + len(GRPC_CASES) >= 100
    assert len({case.id for case in (*HTTP_CASES, *GRPC_CASES)}) == len(HTTP_CASES) + len(GRPC_CASES)


@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda case: case.id)
def test_hostile_http_request_gets_its_status_naming_the_fix(serve: ServerProcess, case: HttpCase) -> None:
    reply = send_http(serve.ports["http"], case.method, case.path, case.body, case.headers)

    assert reply.status == case.status, reply.body[:500]
    assert case.fragment in reply.body, reply.body[:500]
    assert "Traceback" not in reply.body
    assert_still_serving(serve)


@pytest.mark.parametrize("case", GRPC_CASES, ids=lambda case: case.id)
def test_hostile_grpc_request_gets_its_code_naming_the_fix(
    serve: ServerProcess, channel: grpc.Channel, case: GrpcCase
) -> None:
    reply = send_grpc(channel, case.message, case.metadata)

    assert reply.status == case.code, reply.body[:500]
    assert case.fragment in reply.body, reply.body[:500]
    assert_still_serving(serve)


@pytest.mark.parametrize(
    ("case_id", "path", "body", "headers"),
    [
        pytest.param("gzip", "/v1/models/cifar10:predict", None, [("Content-Encoding", "gzip")], id="gzip"),
        pytest.param(
            "octet",
            "/v1/models/cifar10:predict",
            png(),
            [("Content-Type", "application/octet-stream")],
            id="raw-png-octet-stream",
        ),
        pytest.param("none", "/v1/models/cifar10:predict", png(), [], id="raw-png-no-content-type"),
        pytest.param("exif", "/v1/models/cifar10:predict", None, JSON, id="jpeg-with-unrewritable-exif"),
        pytest.param("b64", "/v2/models/cifar10/infer", None, JSON, id="v2-json-base64-image"),
        pytest.param("version", "/v2/models/cifar10/versions/1/infer", None, JSON, id="v2-known-version"),
        pytest.param("ce", "/v1/models/cifar10:predict", None, None, id="binary-cloudevent"),
        pytest.param("ces", "/v1/models/cifar10:predict", None, None, id="structured-cloudevent"),
    ],
)
def test_what_users_send_is_served(
    serve: ServerProcess, case_id: str, path: str, body: bytes | None, headers: list[tuple[str, str]] | None
) -> None:
    import gzip
    import json

    from tests.hostile import BINARY_EVENT, b64, image_input

    if case_id == "gzip":
        body = gzip.compress(v1_image(png()))
    elif case_id == "exif":
        body = v1_image(jpeg_with_unrewritable_exif())
    elif case_id in ("b64", "version"):
        body = v2_json(image_input())
    elif case_id == "ce":
        body, headers = v1_image(png()), [*BINARY_EVENT, *JSON]
    elif case_id == "ces":
        event = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {"instances": [b64(png())]}}
        body, headers = json.dumps(event).encode(), [("Content-Type", "application/cloudevents+json")]
    assert body is not None
    assert headers is not None

    reply = send_http(serve.ports["http"], "POST", path, body, headers)

    assert reply.status == 200, reply.body[:500]
    if case_id == "ce":
        assert reply.headers.get("ce-type") == "io.kserve.inference.response"
        assert "predictions" in json.loads(reply.body)
    if case_id == "ces":
        assert json.loads(reply.body)["type"] == "io.kserve.inference.response"


def test_plugin_bug_is_logged_with_the_request_id_and_its_traceback(serve: ServerProcess) -> None:
    reply = send_http(
        serve.ports["http"],
        "POST",
        "/v1/models/test-buggy-postprocess:predict",
        v1_image(png()),
        [*JSON, ("x-request-id", "bug-report-1")],
    )

    assert reply.status == 500
    assert "output0" not in reply.body  # the client learns which plugin failed, not its internals
    log = serve.log()
    assert "bug-report-1" in log
    assert "KeyError: 'output0'" in log


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param("client-id-42", True, id="safe"),
        pytest.param("tab\there", False, id="tab"),
        pytest.param("caf\xe9", False, id="latin-1"),
        pytest.param("x" * 500, False, id="too-long"),
        pytest.param(None, False, id="none-sent"),
    ],
)
def test_request_id_is_returned_and_only_a_safe_one_kept(serve: ServerProcess, sent: str | None, kept: bool) -> None:
    headers = [*JSON] + ([("x-request-id", sent)] if sent is not None else [])

    reply = send_http(serve.ports["http"], "POST", "/v1/models/text:predict", v1(["good"]), headers)

    assert reply.status == 200, reply.body
    returned = reply.headers["x-request-id"]
    assert (returned == sent) is kept
    assert returned.isascii()
    assert returned.isprintable()
    assert 0 < len(returned) <= 128


def test_grpc_returns_a_request_id_in_initial_metadata(serve: ServerProcess, channel: grpc.Channel) -> None:
    message = next(case for case in GRPC_CASES if case.id == "grpc-request-id-unsafe").message

    sent = send_grpc(channel, message, (("x-request-id", "grpc-id-7"),))
    replaced = send_grpc(channel, message, (("x-request-id", "has space"),))
    generated = send_grpc(channel, message)

    assert sent.headers["x-request-id"] == "grpc-id-7"
    assert replaced.headers["x-request-id"] not in ("", "has space")
    assert generated.headers["x-request-id"]


def test_repository_api_is_off_by_default_over_grpc(channel: grpc.Channel) -> None:
    unload = channel.unary_unary(
        "/inference.GRPCInferenceService/RepositoryModelUnload", request_serializer=None, response_deserializer=None
    )

    with pytest.raises(grpc.RpcError) as caught:
        unload(b"\n\x07cifar10", timeout=30)

    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_repository_api_when_enabled_unloads_and_loads(triton: ServerProcess, tmp_path: Path) -> None:
    server = start_serve(
        ["cifar10"], f"127.0.0.1:{triton.ports['http']}", tmp_path, extra=["--enable_model_repository_api"]
    )
    port = server.ports["http"]
    predict = ("POST", "/v1/models/cifar10:predict", v1_image(png()), JSON)
    try:
        assert send_http(port, "POST", "/v2/repository/models/cifar10/unload", b"", ()).status == 200
        assert send_http(port, *predict).status == 404
        assert send_http(port, "GET", "/v2/health/ready", b"", ()).status == 503

        assert send_http(port, "POST", "/v2/repository/models/cifar10/load", b"", ()).status == 200
        assert send_http(port, *predict).status == 200
        assert send_http(port, "GET", "/v2/health/ready", b"", ()).status == 200
    finally:
        server.stop()
