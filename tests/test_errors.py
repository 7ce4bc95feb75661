"""Error mapping: transport errors to the PredictorError family, KxformError to HTTP and gRPC statuses."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
from tritonclient.utils import InferenceServerException

from kxform.errors import (
    DecodeError,
    KxformError,
    ModelNotFoundError,
    PluginError,
    PredictorError,
    PredictorTimeoutError,
    PredictorUnavailableError,
    RequestError,
)
from kxform.predictor.base import PredictorSettings, call
from kxform.predictor.grpc import GrpcPredictor
from kxform.predictor.http import HttpPredictor

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
        pytest.param(InferenceServerException("bad shape", status="400"), RequestError, id="400"),
        pytest.param(InferenceServerException("unknown model", status="404"), PredictorUnavailableError, id="404"),
        pytest.param(InferenceServerException("overloaded", status="503"), PredictorUnavailableError, id="503"),
        pytest.param(InferenceServerException("boom", status="500"), PredictorError, id="500"),
        pytest.param(aiohttp.ClientConnectionError("refused"), PredictorUnavailableError, id="connect"),
        pytest.param(aiohttp.ClientPayloadError("truncated"), PredictorError, id="bad-payload"),
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

    async def flaky() -> str:
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

    async def failing() -> None:
        attempts.append(1)
        raise ConnectionError("x")

    with pytest.raises(type(translated)):
        asyncio.run(call(failing, SETTINGS, lambda e: translated, "infer"))
    assert len(attempts) == expected_attempts


def test_call_turns_a_slow_predictor_into_a_504() -> None:
    async def slow() -> None:
        await asyncio.sleep(10)

    settings = PredictorSettings("predictor:8000", timeout=0.05)
    with pytest.raises(PredictorTimeoutError, match=r"within 0\.05s"):
        asyncio.run(call(slow, settings, lambda e: PredictorError(str(e)), "infer"))
