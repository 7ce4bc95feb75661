"""Log lines (``kxform.logs``): the request's ids on every line it logs, and the failed-request JSON line."""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import logging
from collections.abc import Iterator

import pytest

from kxform.errormap import as_kxform_error
from kxform.errors import DecodeError
from kxform.logs import TextFormatter, bind_request, configure_logging
from kxform.metrics import stage


class Traced:
    request_id = "req-1"
    trace_id = "0af7651916cd43dd8448eb211c80319c"


@contextlib.contextmanager
def captured(log_format: str) -> Iterator[io.StringIO]:
    """kxform's handler setup (``configure_logging``) on a stream of our own."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [logging.StreamHandler(stream)]
    configure_logging("INFO", log_format)
    try:
        yield stream
    finally:
        root.handlers = saved


@pytest.fixture(params=["json", "text"])
def lines(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    with captured(request.param) as stream:
        yield stream


def in_request(function: object) -> None:
    """Run ``function`` in a context of its own, as each request's task has."""
    contextvars.copy_context().run(function)  # type: ignore[arg-type]


def test_a_line_logged_while_serving_a_request_carries_its_ids(lines: io.StringIO) -> None:
    def serve() -> None:
        bind_request("req-1", Traced(), "cifar10")
        logging.getLogger("kxform.predictor.base").info("infer cifar10: retry 1/2")

    in_request(serve)
    line = lines.getvalue().strip()
    if line.startswith("{"):
        document = json.loads(line)
        assert (document["request_id"], document["trace_id"], document["model"]) == (
            "req-1",
            Traced.trace_id,
            "cifar10",
        )
    else:
        assert line.endswith(f"infer cifar10: retry 1/2 [request req-1 trace {Traced.trace_id}]")


def test_a_line_outside_any_request_has_no_ids(lines: io.StringIO) -> None:
    logging.getLogger("kxform.server").info("kxform serve: stopped")
    assert "req-" not in lines.getvalue()
    assert "request_id" not in lines.getvalue()


def test_a_failed_request_is_one_json_line_with_status_kind_and_stage() -> None:
    def fail() -> None:
        bind_request("req-9", Traced(), "cifar10")
        with pytest.raises(DecodeError) as raised, stage("cifar10", "decode"):
            raise DecodeError("instances[0].image_bytes.b64 is not valid base64")
        as_kxform_error(raised.value, "req-9", "POST /v1/models/cifar10:predict")

    with captured("json") as stream:
        in_request(fail)
    (line,) = stream.getvalue().splitlines()
    document = json.loads(line)
    assert document["level"] == "INFO"
    assert {key: document[key] for key in ("request_id", "trace_id", "model", "status", "error_kind", "stage")} == {
        "request_id": "req-9",
        "trace_id": Traced.trace_id,
        "model": "cifar10",
        "status": 400,
        "error_kind": "DecodeError",
        "stage": "decode",
    }
    assert "not valid base64" in document["message"]


def test_the_text_line_does_not_repeat_an_id_its_message_has() -> None:
    record = logging.LogRecord("kxform.requests", logging.INFO, "", 0, "POST / request %s -> 400", ("req-3",), None)
    record.request_id, record.trace_id = "req-3", ""
    assert TextFormatter().format(record).endswith("POST / request req-3 -> 400")


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="--log_format 'yaml'"):
        configure_logging("INFO", "yaml")
