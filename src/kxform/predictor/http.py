"""The predictor over Triton's HTTP/REST V2 protocol, binary tensors both ways (aiohttp + ``kxform.v2``).

Requests and replies go through kxform's own V2 codec, the one the server side uses: inputs are
written once into the body after the JSON header, outputs are read as views of the reply's bytes.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from kxform.errors import KxformError, PredictorError, PredictorUnavailableError, RequestError
from kxform.predictor.base import Array, PredictorSettings, RequestedOutputs, call
from kxform.v2 import HEADER_LENGTH, RequestedOutput, V2Tensor, decode_rest_response, encode_rest_request

__all__ = ["HttpPredictor", "PredictorHttpError"]

# The connection pool is shared by every request; Triton keeps connections alive.
_CONNECTION_LIMIT = 256


class PredictorHttpError(Exception):
    """A non-2xx answer of the predictor, with Triton's ``{"error": ...}`` message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class HttpPredictor(RequestedOutputs):
    """A Triton predictor reached over HTTP."""

    def __init__(self, settings: PredictorSettings) -> None:
        self.settings = settings
        scheme = "https" if settings.use_ssl else "http"
        self._base = f"{scheme}://{settings.host}"
        self._session: aiohttp.ClientSession | None = None

    @property
    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the event loop that serves requests (aiohttp binds to it).
        if self._session is None:
            context = ssl.create_default_context() if self.settings.use_ssl else None
            connector = aiohttp.TCPConnector(limit=_CONNECTION_LIMIT, ssl=context if context else False)
            # Accept-Encoding: identity -- asked for gzip, Triton compresses every tensor and we inflate it.
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"Accept-Encoding": "identity"}, auto_decompress=False
            )
        return self._session

    def _translate(self, exc: Exception) -> KxformError:
        where = f"predictor at {self.settings.host}"
        if isinstance(exc, PredictorHttpError):
            if exc.status == 400:
                return RequestError(f"the {where} rejected the request: {exc.message}")
            if exc.status in (404, 503):
                return PredictorUnavailableError(f"the {where} is not serving the model: {exc.message}")
            return PredictorError(f"the {where} failed (HTTP {exc.status}): {exc.message}")
        if isinstance(exc, RequestError):  # its reply did not decode as V2
            return PredictorError(f"the {where} sent a reply that is not V2: {exc.message}")
        if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
            return PredictorUnavailableError(f"the {where} is unreachable: {exc}")
        if isinstance(exc, aiohttp.ClientError):
            return PredictorError(f"the {where} sent an unusable response: {exc}")
        raise exc  # a bug of ours, not the predictor's: let it surface as-is

    async def _send(
        self,
        method: str,
        path: str,
        timeout: float,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[bytes, Mapping[str, str]]:
        async with self._client.request(
            method, self._base + path, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            payload = await response.read()
            if response.status >= 300:
                raise PredictorHttpError(response.status, _error_message(payload))
            return payload, response.headers

    async def _get_json(self, path: str, what: str) -> dict[str, Any]:
        async def operation(timeout: float) -> dict[str, Any]:
            payload, _ = await self._send("GET", path, timeout)
            return dict(orjson.loads(payload))

        return await call(operation, self.settings, self._translate, what)

    async def _ready(self, path: str, what: str) -> bool:
        async def operation(timeout: float) -> bool:
            try:
                await self._send("GET", path, timeout)
            except PredictorHttpError:
                return False
            return True

        return await call(operation, self.settings, self._translate, what)

    async def _infer(
        self, model: str, inputs: Mapping[str, Array], outputs: Sequence[RequestedOutput], request_id: str
    ) -> dict[str, Array]:
        tensors = [V2Tensor.from_array(name, array) for name, array in inputs.items()]
        body, headers = encode_rest_request(tensors, outputs, request_id)
        if request_id:
            headers["x-request-id"] = request_id

        async def operation(timeout: float) -> dict[str, Array]:
            payload, reply_headers = await self._send("POST", f"/v2/models/{model}/infer", timeout, body, headers)
            return decode_rest_response(payload, reply_headers.get(HEADER_LENGTH)).arrays()

        return await call(operation, self.settings, self._translate, f"infer {model}")

    async def model_metadata(self, model: str) -> dict[str, Any]:
        return await self._get_json(f"/v2/models/{model}", f"metadata of {model}")

    async def model_config(self, model: str) -> dict[str, Any]:
        return await self._get_json(f"/v2/models/{model}/config", f"config of {model}")

    async def server_ready(self) -> bool:
        return await self._ready("/v2/health/ready", "server readiness")

    async def model_ready(self, model: str) -> bool:
        return await self._ready(f"/v2/models/{model}/ready", f"readiness of {model}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _error_message(payload: bytes) -> str:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload[:200].decode("utf-8", "replace")
    return str(document.get("error", document)) if isinstance(document, dict) else str(document)
