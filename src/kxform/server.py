"""``kxform serve``: the plugins as ``TransformerModel``s in kserve's ``ModelServer``, REST and gRPC.

kserve is wrapped, not patched: a ``DataPlane`` subclass makes readiness follow the predictor,
an exception handler turns ``KxformError`` into its status, and an ASGI middleware gives every
request an ``x-request-id`` (taken from the client or generated) that is returned and forwarded.
"""

from __future__ import annotations

import gc
import logging
import uuid
from typing import Any

from fastapi import Request, Response
from kserve.errors import ModelNotFound
from kserve.protocol.dataplane import DataPlane
from starlette.requests import ClientDisconnect

from kxform.errors import KxformError
from kxform.model import TransformerModel
from kxform.plugins import load_plugin
from kxform.predictor import create_predictor
from kxform.rest import HEADER_LENGTH, decode_infer_request, encode_infer_response
from kxform.settings import ServeSettings

__all__ = ["PredictorAwareDataPlane", "build_models", "serve"]

logger = logging.getLogger(__name__)


class PredictorAwareDataPlane(DataPlane):  # type: ignore[misc]  # kserve ships no type information
    """Readiness that follows each transformer's own predictor model (kserve's checks the transformer's name).

    kserve asks ``model_ready(name, True)`` before every inference: that answer stays local (an outage
    shows as the 503 of the predictor call itself), so a request costs one predictor call, not two.
    Health endpoints ask without the flag and get the predictor's answer.
    """

    async def ready(self) -> bool:
        models = self.model_registry.get_models().values()
        return all([await model.healthy() for model in models])

    def _local_model(self, name: str) -> Any:
        model = self.model_registry.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        return model

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        if disable_predictor_health_check:
            return bool(self._local_model(model_name).ready)
        return bool(await super().model_ready(model_name, disable_predictor_health_check=True))

    async def get_model(self, name: str) -> Any:
        """kserve's asks the model's health (a predictor round trip) on every inference; this does not."""
        return self._local_model(name)


def build_models(settings: ServeSettings) -> list[TransformerModel]:
    """Load the plugins (errors name the entry point) and wrap each in a TransformerModel."""
    predictor = create_predictor(settings.predictor)  # one client, one connection pool, per process
    names = settings.model_names()
    return [
        TransformerModel(name, load_plugin(plugin), predictor, max_instances=settings.max_instances)
        for name, plugin in zip(names, settings.transformers, strict=True)
    ]


class RequestIdMiddleware:
    """Accept the client's ``x-request-id`` or make one; hand it to the model and return it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope["headers"])
        request_id = next((v for k, v in headers if k == b"x-request-id"), b"")
        if not request_id:
            request_id = uuid.uuid4().hex.encode()
            headers.append((b"x-request-id", request_id))
            scope = {**scope, "headers": headers}

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id)]}
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _kxform_error(request: Any, exc: KxformError) -> Any:
    from fastapi.responses import ORJSONResponse

    if exc.http_status >= 500:
        logger.error("%s %s -> %d: %s", request.method, request.url.path, exc.http_status, exc.message)
    return ORJSONResponse({"error": exc.message}, status_code=exc.http_status)


async def _client_gone(request: Any, exc: ClientDisconnect) -> Any:
    # The client hung up mid-request (a load generator stopping, a proxy timeout): nothing to answer.
    logger.debug("%s %s: client disconnected", request.method, request.url.path)
    return Response(status_code=499)


def _v2_infer_route(dataplane: DataPlane) -> Any:
    async def v2_infer(request: Request, model_name: str) -> Response:
        headers = dict(request.headers)
        infer_request = decode_infer_request(await request.body(), headers.get(HEADER_LENGTH), model_name)
        response, _ = await dataplane.infer(model_name=model_name, request=infer_request, headers=headers)
        body, response_headers = encode_infer_response(response)
        return Response(content=body, headers=response_headers)

    return v2_infer


def _install(app: Any, dataplane: DataPlane) -> None:
    """Error mapping, request ids, and V2 REST infer; routes added here match before kserve's own."""
    app.add_exception_handler(KxformError, _kxform_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_middleware(RequestIdMiddleware)
    app.add_api_route("/v2/models/{model_name}/infer", _v2_infer_route(dataplane), methods=["POST"])


def serve(settings: ServeSettings) -> None:
    """Run the server until SIGINT/SIGTERM (kserve handles the signals and the graceful stop)."""
    import kserve
    from kserve.model_server import app
    from kserve.predictor_config import PredictorConfig

    models = build_models(settings)
    server = kserve.ModelServer(
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        workers=settings.workers,
        enable_grpc=settings.enable_grpc,
        predictor_config=PredictorConfig(
            predictor_host=settings.predictor.host,
            predictor_protocol=settings.predictor.protocol,
            predictor_use_ssl=settings.predictor.use_ssl,
            predictor_request_timeout_seconds=int(settings.predictor.timeout),
            predictor_request_retries=settings.predictor.retries,
            predictor_health_check=False,  # readiness is PredictorAwareDataPlane's
        ),
    )
    server.dataplane = PredictorAwareDataPlane(model_registry=server.registered_models)
    _install(app, server.dataplane)
    _quiet_per_request_logs(settings.log_level)
    _calm_garbage_collector()
    server.start(models)


def _calm_garbage_collector() -> None:
    """Fewer, cheaper collections: start-up objects (kserve, numpy, plugins) are never garbage.

    Each request allocates thousands of short-lived objects; with the default threshold (700) the
    collector runs several times per request and, now and then, walks every start-up object in a
    full collection, which showed as the p99 tail under load.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _quiet_per_request_logs(level: str) -> None:
    """One line per request at DEBUG (kxform's own), errors always: kserve/uvicorn log every request at INFO."""
    if level != "DEBUG":
        for name in ("kserve.trace", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
