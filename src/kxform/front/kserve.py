"""``kxform serve --server kserve``: the same ``TransformerModel``s served by kserve's own ``ModelServer``.

    serve_process
      -> limits configured -> Shared.create, shared.model per plugin (as kxform.server builds them)
      -> kserve's FastAPI ``app``: x-request-id middleware, KxformError -> kxform.errormap, a client that
         hung up is no error
      -> kserve.ModelServer (its uvicorn REST server, its gRPC servicer) with ``KxformDataPlane``:
         readiness follows the predictor (``TransformerModel.healthy``); on gRPC a KxformError becomes the
         status kxform.errormap names (through grpc_interceptor's GrpcException, which kserve's
         interceptor passes on); request counts as kxform's front keeps them
      -> TransformerModel.__call__ gets dicts/bytes (V1) or kserve's InferRequest (V2 REST, gRPC);
         kxform.v2.from_infer_request / to_infer_response convert
      -> SIGTERM/SIGINT: kserve stops its servers; once they have drained, the batcher, predictor client
         and worker pool close; exit 0

What kserve's stack does differently from kxform's fronts (the README lists it): it binds 0.0.0.0 and
[::] whatever ``--bind_address`` says, has no header limits (431) and always serves the model repository
API; its REST decoder turns binary BYTES tensors into UTF-8 text (so binary images fail), and gRPC
replies carry no x-request-id (kserve's servicer gives a model no access to the call's metadata).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import kserve
from grpc_interceptor.exceptions import GrpcException
from kserve.model_server import app
from kserve.protocol.dataplane import DataPlane
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from kxform import limits
from kxform.errormap import as_kxform_error, grpc_error, http_error
from kxform.errors import KxformError
from kxform.metrics import REQUESTS, child
from kxform.model import TransformerModel
from kxform.requestid import HEADER, accept_request_id
from kxform.server import GRACE_SECONDS, Shared
from kxform.settings import ServeSettings

__all__ = ["KxformDataPlane", "serve_process"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def serve_process(settings: ServeSettings) -> None:
    """One process: the plugins as TransformerModels behind kserve's ModelServer, until SIGTERM/SIGINT."""
    limits.configure(settings.limits)
    shared = Shared.create(settings)
    plugins = zip(settings.model_names(), settings.transformers, strict=True)
    models = [shared.model(name, plugin) for name, plugin in plugins]
    _configure_app()
    logger.info(
        "kxform serve --server kserve: %s on HTTP :%d%s, predictor %s (%s)",
        ", ".join(model.name for model in models),
        settings.http_port,
        f" and gRPC :{settings.grpc_port}" if settings.enable_grpc else "",
        settings.predictor.host,
        settings.predictor.protocol,
    )
    _ModelServer(shared).start(models)
    logger.info("kxform serve: stopped")


def _configure_app() -> None:
    """kserve's documented hooks on its FastAPI app; kserve adds its routes and handlers when it starts."""
    app.add_middleware(RequestIdMiddleware)
    app.add_exception_handler(KxformError, _kxform_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)


class RequestIdMiddleware:
    """Every request gets an ``x-request-id`` (the client's if it is a safe token), seen by the model and
    returned in the response, as kxform's front does."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = HEADER.encode()
        request_id = accept_request_id(next((v for k, v in scope["headers"] if k == header), None)).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != header]
        scope = {**scope, "headers": [*headers, (header, request_id)]}

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (header, request_id)]}
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _kxform_error(request: Request, exc: Exception) -> Response:
    where = f"{request.method} {request.url.path[:200]}"
    status, body, headers = http_error(as_kxform_error(exc, request.headers.get(HEADER, ""), where))
    return Response(body, status, {key.decode(): value.decode() for key, value in headers})


async def _client_gone(request: Request, exc: Exception) -> Response:
    # Not an error: nobody is left to answer (kserve's catch-all would log a traceback).
    logger.debug("%s %s: client disconnected", request.method, request.url.path[:200])
    return Response(status_code=499)


class KxformDataPlane(DataPlane):  # type: ignore[misc]  # kserve ships no type information
    """kserve's DataPlane over TransformerModels: readiness follows the predictor, errors kxform's mapper."""

    def _models(self) -> list[TransformerModel]:
        return list(self.model_registry.get_models().values())

    async def ready(self) -> bool:
        """Every transformer's predictor model ready (``/v2/health/ready``, gRPC ServerReady)."""
        return all(await asyncio.gather(*(model.healthy() for model in self._models())))

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        """``/v2/models/NAME/ready`` and ``/v1/models/NAME`` ask the predictor; an inference request only
        whether this process serves the model (a predictor outage is then its 503, named by kxform)."""
        model = self.get_model_from_registry(model_name)
        return bool(model.ready) if disable_predictor_health_check else bool(await model.healthy())

    async def get_model(self, name: str) -> TransformerModel:
        # kserve's asks the model's health (here: the predictor) on every request, and loads it if unready.
        model: TransformerModel = self.get_model_from_registry(name)
        return model

    async def infer(
        self, model_name: str, request: Any, headers: dict[str, str] | None = None
    ) -> tuple[Any, dict[str, str]]:
        grpc = isinstance(request, kserve.InferRequest) and request.from_grpc
        protocol = "grpc" if grpc else "v2" if isinstance(request, kserve.InferRequest) else "v1"
        served = model_name in self.model_registry.get_models()  # served names only: bounded labels
        try:
            reply: tuple[Any, dict[str, str]] = await super().infer(model_name, request, headers)
        except KxformError as exc:
            if served:
                child(REQUESTS, model_name, protocol, str(exc.http_status)).inc()
            if not grpc:
                raise  # kserve's app hands it to _kxform_error
            request_id = accept_request_id((headers or {}).get(HEADER))
            code, details = grpc_error(as_kxform_error(exc, request_id, f"gRPC ModelInfer {model_name}"))
            raise GrpcException(details, code) from None
        if served:
            child(REQUESTS, model_name, protocol, "200").inc()
        return reply


class _ModelServer(kserve.ModelServer):  # type: ignore[misc]  # kserve ships no type information
    """kserve's ModelServer with ``KxformDataPlane``, closing what the transformers share once it stopped."""

    def __init__(self, shared: Shared) -> None:
        settings = shared.settings
        super().__init__(
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
            workers=1,
            enable_grpc=settings.enable_grpc,
            grace_period=int(GRACE_SECONDS),
            predictor_config=kserve.PredictorConfig(
                predictor_host=settings.predictor.host,
                predictor_protocol=settings.predictor.protocol,
                predictor_use_ssl=settings.predictor.use_ssl,
                predictor_request_timeout_seconds=settings.predictor.timeout,
                predictor_request_retries=settings.predictor.retries,
            ),
        )
        self.dataplane = KxformDataPlane(model_registry=self.registered_models)
        self.shared = shared
        self.closing: asyncio.Task[None] | None = None

    def stop(self, sig: int) -> None:
        """kserve's stop (its servers drain), and a task that closes the shared parts after them."""
        super().stop(sig)
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(_close_after_servers(self.shared))


async def _close_after_servers(shared: Shared) -> None:
    # kserve's start() returns from asyncio.run once its REST and gRPC servers have stopped; asyncio.run then
    # cancels the tasks left, this one among them, and waits for them: the close runs after the drain, on
    # the loop the predictor client's connections belong to.
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await shared.close()
