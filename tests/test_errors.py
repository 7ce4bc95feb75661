"""Error mapping: transport errors to the PredictorError family, KxformError to HTTP and gRPC statuses."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from kxform.errormap import as_kxform_error, grpc_error, http_error
from kxform.errors import (
    DecodeError,
    HeadersTooLargeError,
    InternalError,
    KxformError,
    LimitError,
    MethodNotAllowedError,
    ModelNotFoundError,
    NotFoundError,
    OverloadedError,
    PluginBugError,
    PluginError,
    PredictorError,
    PredictorTimeoutError,
    PredictorUnavailableError,
    RequestError,
    UnsupportedMediaTypeError,
)
from kxform.predictor.base import PredictorSettings, call
from kxform.predictor.grpc import GrpcPredictor
from kxform.predictor.http import HttpPredictor, PredictorHttpError, PredictorProtocolError

SETTINGS = PredictorSettings("predictor:8000", retries=2, backoff=0.001, timeout=5)


@pytest.mark.parametrize(
    ("error", "status", "grpc_code"),
    [
        (RequestError, 400, "INVALID_ARGUMENT"),
        (DecodeError, 400, "INVALID_ARGUMENT"),
        (ModelNotFoundError, 404, "NOT_FOUND"),
        (PredictorError, 502, "UNAVAILABLE"),
        (PredictorUnavailableError, 503, "UNAVAILABLE"),
        (PredictorTimeoutError, 504, "DEADLINE_EXCEEDED"),
        (PluginError, 500, "INTERNAL"),
        (PluginBugError, 500, "INTERNAL"),
        (InternalError, 500, "INTERNAL"),
        (LimitError, 413, "RESOURCE_EXHAUSTED"),
        (HeadersTooLargeError, 431, "RESOURCE_EXHAUSTED"),
        (UnsupportedMediaTypeError, 415, "INVALID_ARGUMENT"),
        (NotFoundError, 404, "NOT_FOUND"),
        (MethodNotAllowedError, 405, "UNIMPLEMENTED"),
        (OverloadedError, 503, "UNAVAILABLE"),
    ],
)
def test_each_error_carries_its_http_status_and_a_real_grpc_code(
    error: type[KxformError], status: int, grpc_code: str
) -> None:
    assert error.http_status == status
    assert grpc.StatusCode[error.grpc_code].name == grpc_code


@pytest.mark.parametrize(
    ("exc", "mapped"),
    [
        pytest.param(PredictorHttpError(400, "bad shape"), RequestError, id="400"),
        pytest.param(PredictorHttpError(404, "unknown model"), PredictorUnavailableError, id="404"),
        pytest.param(PredictorHttpError(503, "overloaded"), PredictorUnavailableError, id="503"),
        pytest.param(PredictorHttpError(500, "boom"), PredictorError, id="500"),
        pytest.param(RequestError("outputs[0].shape ..."), PredictorError, id="reply-not-v2"),
        pytest.param(ConnectionRefusedError(111, "refused"), PredictorUnavailableError, id="connect"),
        pytest.param(ConnectionResetError("closed mid-reply"), PredictorUnavailableError, id="reset"),
        pytest.param(PredictorProtocolError("malformed HTTP reply"), PredictorError, id="bad-reply"),
    ],
)
def test_http_predictor_translates_transport_errors(exc: Exception, mapped: type[KxformError]) -> None:
    translated = HttpPredictor(SETTINGS)._translate(exc)

    assert type(translated) is mapped
    assert "predictor:8000" in translated.message


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(
    ("code", "mapped"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, RequestError),
        (grpc.StatusCode.UNAVAILABLE, PredictorUnavailableError),
        (grpc.StatusCode.NOT_FOUND, PredictorUnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, PredictorTimeoutError),
        (grpc.StatusCode.INTERNAL, PredictorError),
    ],
)
def test_grpc_predictor_translates_status_codes(code: grpc.StatusCode, mapped: type[KxformError]) -> None:
    translated = GrpcPredictor(SETTINGS)._translate(rpc_error(code, "details from Triton"))

    assert type(translated) is mapped
    assert "details from Triton" in translated.message


def test_call_retries_unavailable_then_succeeds() -> None:
    attempts: list[int] = []

    async def flaky(timeout: float) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("refused")
        return "ok"

    result = asyncio.run(call(flaky, SETTINGS, lambda e: PredictorUnavailableError(str(e)), "infer"))

    assert (result, len(attempts)) == ("ok", 3)


@pytest.mark.parametrize(
    ("translated", "expected_attempts"),
    [
        pytest.param(PredictorUnavailableError("down"), 3, id="unavailable-retried"),
        pytest.param(RequestError("bad"), 1, id="client-error-not-retried"),
    ],
)
def test_call_gives_up_after_bounded_attempts(translated: KxformError, expected_attempts: int) -> None:
    attempts: list[int] = []

    async def failing(timeout: float) -> None:
        attempts.append(1)
        raise ConnectionError("x")

    with pytest.raises(type(translated)):
        asyncio.run(call(failing, SETTINGS, lambda e: translated, "infer"))
    assert len(attempts) == expected_attempts


def test_call_turns_a_slow_predictor_into_a_504() -> None:
    async def slow(timeout: float) -> None:
        await asyncio.sleep(10)

    settings = PredictorSettings("predictor:8000", timeout=0.05)
    with pytest.raises(PredictorTimeoutError, match=r"within 0\.05s"):
        asyncio.run(call(slow, settings, lambda e: PredictorError(str(e)), "infer"))


def test_call_tells_each_attempt_the_time_left_so_the_timeout_bounds_retries_too() -> None:
    budgets: list[float] = []

    async def refused(timeout: float) -> None:
        budgets.append(timeout)
        raise ConnectionError("refused")

    settings = PredictorSettings("predictor:8000", timeout=1.0, retries=3, backoff=0.05)
    with pytest.raises(PredictorUnavailableError):
        asyncio.run(call(refused, settings, lambda e: PredictorUnavailableError(str(e)), "infer"))

    assert len(budgets) == 4
    assert budgets == sorted(budgets, reverse=True)  # each retry gets what is left of the one deadline
    assert budgets[0] <= 1.0


def test_errormap_hides_internals_of_an_unexpected_exception(caplog: pytest.LogCaptureFixture) -> None:
    error = as_kxform_error(KeyError("secret internal key"), "req-7", "POST /v1/models/m:predict")
    status, body, _ = http_error(error)

    assert status == 500
    assert b"secret" not in body
    assert b"req-7" in body
    assert "secret internal key" in caplog.text  # the traceback is in the log, once


def test_errormap_sets_retry_after_and_allow() -> None:
    _, _, overloaded = http_error(OverloadedError("busy", retry_after=2))
    _, _, not_allowed = http_error(MethodNotAllowedError("no", ("GET",)))

    assert (b"retry-after", b"2") in overloaded
    assert (b"allow", b"GET") in not_allowed


@pytest.mark.parametrize("error", [RequestError("bad"), PredictorTimeoutError("slow"), LimitError("big")])
def test_errormap_grpc_status_is_the_errors_own_code(error: KxformError) -> None:
    code, details = grpc_error(error)

    assert code == grpc.StatusCode[error.grpc_code]
    assert details == error.message


SERVER_SIDE_ONLY = {"KxformError", "PluginError", "TritonServerError", "ModelLoadError"}  # never reach a client


def test_docs_errors_lists_every_error_a_client_can_get_with_its_status_and_code() -> None:
    import re
    from pathlib import Path

    import kxform.errors

    rows = [line for line in (Path(__file__).parents[1] / "docs" / "errors.md").read_text().splitlines() if "`" in line]
    for name in sorted(set(kxform.errors.__all__) - SERVER_SIDE_ONLY):
        error = getattr(kxform.errors, name)
        row = next((r for r in rows if re.search(rf"`{name}`", r) and r.startswith("| ")), None)
        assert row is not None, f"docs/errors.md has no row for {name}"
        assert row.startswith(f"| {error.http_status} | `{error.grpc_code}` |"), row


def test_errormap_drops_tracebacks_so_a_failed_requests_frames_and_body_are_freed() -> None:
    def inflate() -> None:
        chunks = [b"\0" * 1024] * 4  # what a half-inflated body holds when its limit error is raised
        raise LimitError(f"{len(chunks)} chunks is too many")

    try:
        try:
            inflate()
        except LimitError as exc:
            raise PluginBugError("wrapped") from exc
    except PluginBugError as exc:
        error = as_kxform_error(exc, "req-1", "POST /x")

    assert error.__traceback__ is None
    assert error.__cause__ is not None
    assert error.__cause__.__traceback__ is None
