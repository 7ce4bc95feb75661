"""The predictor over Triton's HTTP/REST V2 protocol, with binary tensors both ways (tritonclient.http.aio)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from kxform.codecs.dtypes import v2_datatype
from kxform.errors import KxformError, PredictorError, PredictorUnavailableError, RequestError
from kxform.predictor.base import Array, PredictorSettings, call

__all__ = ["HttpPredictor"]

# The connection pool is shared by every request; Triton keeps connections alive.
_CONNECTION_LIMIT = 256


class HttpPredictor:
    """A Triton predictor reached over HTTP."""

    def __init__(self, settings: PredictorSettings) -> None:
        self.settings = settings
        self._session: triton_http.InferenceServerClient | None = None

    @property
    def _client(self) -> triton_http.InferenceServerClient:
        # Created on first use, inside the event loop that serves requests (aiohttp binds to it).
        if self._session is None:
            self._session = triton_http.InferenceServerClient(
                self.settings.host,
                conn_limit=_CONNECTION_LIMIT,
                conn_timeout=self.settings.timeout,
                ssl=self.settings.use_ssl,
                ssl_context=ssl.create_default_context() if self.settings.use_ssl else None,
            )
        return self._session

    def _translate(self, exc: Exception) -> KxformError:
        where = f"predictor at {self.settings.host}"
        if isinstance(exc, InferenceServerException):
            status, message = exc.status() or "", exc.message()
            if status == "400":
                return RequestError(f"the {where} rejected the request: {message}")
            if status in ("404", "503"):
                return PredictorUnavailableError(f"the {where} is not serving the model: {message}")
            return PredictorError(f"the {where} failed (HTTP {status}): {message}")
        if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
            return PredictorUnavailableError(f"the {where} is unreachable: {exc}")
        if isinstance(exc, aiohttp.ClientError):
            return PredictorError(f"the {where} sent an unusable response: {exc}")
        raise exc  # a bug of ours, not the predictor's: let it surface as-is

    async def _call(self, operation: Any, what: str) -> Any:
        return await call(operation, self.settings, self._translate, what)

    @staticmethod
    def _inputs(inputs: Mapping[str, Array]) -> list[triton_http.InferInput]:
        tensors = []
        for name, array in inputs.items():
            tensor = triton_http.InferInput(name, list(array.shape), v2_datatype(array.dtype))
            tensor.set_data_from_numpy(array, binary_data=True)
            tensors.append(tensor)
        return tensors

    async def infer(
        self, model: str, inputs: Mapping[str, Array], outputs: Sequence[str], request_id: str = ""
    ) -> dict[str, Array]:
        requested = [triton_http.InferRequestedOutput(name, binary_data=True) for name in outputs]
        # aiohttp asks for gzip by default; Triton then compresses every tensor and tritonclient inflates it.
        headers = {"Accept-Encoding": "identity"}
        if request_id:
            headers["x-request-id"] = request_id

        async def operation() -> Any:
            return await self._client.infer(
                model, self._inputs(inputs), outputs=requested, request_id=request_id, headers=headers
            )

        result = await self._call(operation, f"infer {model}")
        return {name: result.as_numpy(name) for name in outputs}

    async def classify(self, model: str, inputs: Mapping[str, Array], output: str, count: int) -> list[str]:
        requested = [triton_http.InferRequestedOutput(output, binary_data=True, class_count=count)]

        async def operation() -> Any:
            return await self._client.infer(model, self._inputs(inputs), outputs=requested)

        result = await self._call(operation, f"classify {model}")
        return [v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy(output).reshape(-1)]

    async def model_metadata(self, model: str) -> dict[str, Any]:
        return dict(await self._call(lambda: self._client.get_model_metadata(model), f"metadata of {model}"))

    async def model_config(self, model: str) -> dict[str, Any]:
        return dict(await self._call(lambda: self._client.get_model_config(model), f"config of {model}"))

    async def server_ready(self) -> bool:
        return bool(await self._call(self._client.is_server_ready, "server readiness"))

    async def model_ready(self, model: str) -> bool:
        return bool(await self._call(lambda: self._client.is_model_ready(model), f"readiness of {model}"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
