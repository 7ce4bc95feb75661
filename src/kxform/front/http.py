"""The HTTP front of ``kxform serve``: a plain ASGI app with kserve's paths, and nothing else exposed.

    ASGI scope -> request id, header limits -> route (404/405) -> body within --max_request_bytes
    -> handler (V1 :predict, V2 infer, health, metadata, metrics) -> Response
    any exception -> kxform.errormap -> {"error": message} with its status

The model repository API (``/v2/repository/...``) is routed only with ``--enable_model_repository_api``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kxform import __version__, limits, tracing
from kxform.body import decode_content_encoding
from kxform.cloudevents import encode_cloudevent_reply
from kxform.codecs.jsonbody import JSON_CONTENT_TYPE, dump_json
from kxform.envelope import decode_v1, decode_v2
from kxform.errormap import as_kxform_error, http_error
from kxform.errors import KxformError, MethodNotAllowedError, NotFoundError
from kxform.front.docs import docs_page
from kxform.logs import bind_request
from kxform.metrics import REQUESTS, child, exposition
from kxform.model import TransformerModel
from kxform.registry import Registry
from kxform.requestid import HEADER, accept_request_id
from kxform.v2 import HEADER_LENGTH, V2Response, decode_rest_request, encode_rest_response

if TYPE_CHECKING:
    from kxform.request_trace import RequestTrace, Tracing

__all__ = ["HttpFront"]

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientGone(Exception):  # noqa: N818  # not an error: the client hung up, nobody to answer
    """The client disconnected before its request body arrived."""


@dataclass
class Request:
    """What a handler sees of one HTTP request; the body is read on demand, within the limit."""

    scope: Scope
    receive: Receive
    request_id: str
    params: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    trace: RequestTrace | None = None  # when tracing is on and the route is traced

    async def body(self) -> bytes:
        limit = limits.current()
        declared = self.headers.get("content-length", "")
        if declared.isdigit():
            limit.check_request_bytes(int(declared))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit.max_request_bytes:
                chunks.clear()  # before raising: the traceback keeps this frame, and with it the chunks
                limit.check_request_bytes(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(status, dump_json(value), [(b"content-type", JSON_CONTENT_TYPE.encode())])

    @classmethod
    def of(cls, body: bytes, headers: Mapping[str, str]) -> Response:
        return cls(200, body, [(k.encode(), v.encode()) for k, v in headers.items()])


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _Route:
    pattern: re.Pattern[str]
    methods: Mapping[str, Handler]
    model_label: bool = True  # whether the path's model name labels the request metrics
    route: str = ""  # the inference routes: their template, which names their span when tracing is on


def _headers(scope: Scope) -> dict[str, str]:
    # Their size and count were bounded while they arrived (kxform.front.protocol). Latin-1 is how
    # HTTP/1.1 carries bytes; values are validated where they are used (request id).
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}


class HttpFront:
    """The ASGI application: routes of kserve's V1 and V2 REST protocols over a ``Registry``."""

    def __init__(self, registry: Registry, *, enable_repository_api: bool = False) -> None:
        self.registry = registry
        self.routes = self._routes(enable_repository_api)

    def _routes(self, repository_api: bool) -> list[_Route]:
        model = r"(?P<model>[^/:]+)"
        version = r"(?:/versions/(?P<version>[^/]+))?"
        routes = [  # the inference routes first: they are most of the traffic (no two patterns overlap)
            _Route(re.compile(rf"/v1/models/{model}:predict"), {"POST": self.v1_predict}, route=V1_PREDICT),
            _Route(re.compile(rf"/v2/models/{model}{version}/infer"), {"POST": self.v2_infer}, route=V2_INFER),
            _Route(re.compile(r"/"), {"GET": self.root}, False),
            _Route(re.compile(r"/v2/health/live"), {"GET": self.live}, False),
            _Route(re.compile(r"/v2/health/ready"), {"GET": self.ready}, False),
            _Route(re.compile(r"/metrics"), {"GET": self.metrics}, False),
            _Route(re.compile(r"/docs"), {"GET": self.docs}, False),
            _Route(re.compile(r"/v1/models"), {"GET": self.v1_models}, False),
            _Route(re.compile(rf"/v1/models/{model}"), {"GET": self.v1_model_status}),
            _Route(re.compile(rf"/v1/models/{model}:explain"), {"POST": self.v1_explain}),
            _Route(re.compile(r"/v2"), {"GET": self.server_metadata}, False),
            _Route(re.compile(r"/v2/models"), {"GET": self.v1_models}, False),
            _Route(re.compile(rf"/v2/models/{model}{version}"), {"GET": self.model_metadata}),
            _Route(re.compile(rf"/v2/models/{model}{version}/ready"), {"GET": self.model_ready}),
        ]
        if repository_api:
            routes += [
                _Route(re.compile(r"/v2/repository/index"), {"POST": self.repository_index}, False),
                _Route(re.compile(rf"/v2/repository/models/{model}/load"), {"POST": self.repository_load}),
                _Route(re.compile(rf"/v2/repository/models/{model}/unload"), {"POST": self.repository_unload}),
            ]
        return routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = accept_request_id(next((v for k, v in scope["headers"] if k == HEADER.encode()), None))
        model, protocol = "", ""
        trace: RequestTrace | None = None
        failure: Exception | None = None
        try:
            handler, params, route = self._match(scope["method"], scope["path"])
            model = params.get("model", "") if route.model_label else ""
            protocol = "v1" if scope["path"].startswith("/v1/") else "v2"
            request = Request(scope, receive, request_id, params, _headers(scope))
            if tracing.ACTIVE is not None and route.route:
                trace = request.trace = _start_trace(tracing.ACTIVE, request, route.route, model, protocol)
            bind_request(request_id, trace, model)  # before the handler: every line it logs names the request
            response = await handler(request)
        except ClientGone:
            logger.debug("%s %s: client disconnected", scope["method"], scope["path"])
            if trace is not None:
                trace.finish(499, None)  # nginx's "client closed request": nobody got an answer
            return
        except Exception as exc:
            failure = exc
            error = as_kxform_error(exc, request_id, f"{scope['method']} {scope['path'][:200]}")
            response = Response(*http_error(error))
        if model in self.registry.names() and scope["method"] == "POST":  # served names only: bounded labels
            child(REQUESTS, model, protocol, str(response.status)).inc()
        if trace is not None:
            trace.set_attribute("http.response.status_code", response.status)
            trace.finish(response.status, failure)
            if trace.timings is not None:
                response.headers.append((b"server-timing", trace.server_timing().encode()))
        await _send(send, response, request_id)

    def _match(self, method: str, path: str) -> tuple[Handler, dict[str, str], _Route]:
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            handler = route.methods.get(method)
            if handler is None:
                allowed = tuple(route.methods)
                raise MethodNotAllowedError(f"{method} is not allowed on {path}; use {', '.join(allowed)}", allowed)
            return handler, {k: v for k, v in found.groupdict().items() if v is not None}, route
        raise NotFoundError(f"no route {path[:200]}; see the V1 and V2 inference protocol endpoints")

    # --- health, metadata, metrics ------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return Response.json({"status": "alive"})

    async def live(self, request: Request) -> Response:
        return Response.json({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = await self.registry.ready()
        return Response.json({"ready": ready}, 200 if ready else 503)

    async def metrics(self, request: Request) -> Response:
        body, content_type = exposition()
        return Response(200, body, [(b"content-type", content_type.encode())])

    async def docs(self, request: Request) -> Response:
        served = [name for name in self.registry.names() if self.registry.is_loaded(name)]
        models = [await metadata_of(self.registry.get(name)) for name in served]
        host = f"http://{request.headers.get('host', 'localhost')}"
        return Response(200, docs_page(models, host), [(b"content-type", b"text/html; charset=utf-8")])

    async def v1_models(self, request: Request) -> Response:
        return Response.json({"models": [name for name in self.registry.names() if self.registry.is_loaded(name)]})

    async def v1_model_status(self, request: Request) -> Response:
        name = request.params["model"]
        ready = await self.registry.model_ready(name)
        return Response.json({"name": name, "ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return Response.json({"name": "kxform", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def _model(self, request: Request) -> TransformerModel:
        model = self.registry.get(request.params["model"])
        await check_version(model, request.params.get("version"))
        return model

    async def model_metadata(self, request: Request) -> Response:
        return Response.json(await metadata_of(await self._model(request)))

    async def model_ready(self, request: Request) -> Response:
        model = await self._model(request)
        ready = await model.healthy()
        return Response.json({"name": model.name, "ready": ready}, 200 if ready else 503)

    # --- inference ----------------------------------------------------------------------------------

    async def v1_predict(self, request: Request) -> Response:
        model = self.registry.get(request.params["model"])
        body = await request.body()
        decode = functools.partial(decode_v1, body, request.headers)
        envelope, result = await model.run(decode, len(body), request.headers, request.request_id, request.trace)
        reply = model.encode(result, envelope, request.trace)
        assert not isinstance(reply, V2Response)
        if envelope.event is not None:
            return Response.of(*encode_cloudevent_reply(envelope.event, model.name, reply))
        return Response.of(*model.dump_v1(reply))

    async def v1_explain(self, request: Request) -> Response:
        self.registry.get(request.params["model"])
        raise NotFoundError(f"transformer '{request.params['model']}' has no explainer; call :predict")

    async def v2_infer(self, request: Request) -> Response:
        model = await self._model(request)
        body = await request.body()
        headers = request.headers

        def decode() -> Any:
            raw = decode_content_encoding(body, headers.get("content-encoding"))
            return decode_v2(decode_rest_request(raw, headers.get(HEADER_LENGTH), model.name), model.declared_inputs)

        envelope, result = await model.run(decode, len(body), headers, request.request_id, request.trace)
        response = model.encode(result, envelope, request.trace)
        assert isinstance(response, V2Response)
        assert envelope.request is not None
        return Response.of(*encode_rest_response(response, envelope.request))

    # --- model repository (only with --enable_model_repository_api) -------------------------------------

    async def repository_index(self, request: Request) -> Response:
        return Response.json(self.registry.index())

    async def repository_load(self, request: Request) -> Response:
        self.registry.load(request.params["model"])
        return Response.json({"name": request.params["model"], "load": True})

    async def repository_unload(self, request: Request) -> Response:
        self.registry.unload(request.params["model"])
        return Response.json({"name": request.params["model"], "unload": True})


async def check_version(model: TransformerModel, version: str | None) -> None:
    """A version in the path must be the predictor model's (a transformer serves one version)."""
    if not version:
        return
    spec = await model.model_spec()
    if version != spec.version:
        raise NotFoundError(
            f"model '{model.name}' has no version '{version[:40]}'; it serves version {spec.version or '(none)'}"
        )


async def metadata_of(model: TransformerModel) -> dict[str, Any]:
    """``GET /v2/models/{name}``: what clients send and get (the plugin's declared tensors)."""
    try:
        versions = [(await model.model_spec()).version]
    except KxformError:
        versions = []  # the predictor is down: the transformer's own tensors are still known
    return {
        "name": model.name,
        "versions": [v for v in versions if v],
        "platform": "kxform",
        "inputs": model.get_input_types(),
        "outputs": model.get_output_types(),
    }


V1_PREDICT = "/v1/models/{model}:predict"
V2_INFER = "/v2/models/{model}[/versions/{version}]/infer"


def _start_trace(active: Tracing, request: Request, route: str, model: str, protocol: str) -> RequestTrace:
    method = request.scope["method"]
    attributes = {"kxform.model": model, "kxform.protocol": protocol, "http.request.method": method}
    attributes["http.route"] = route
    return active.start_request(request.headers, request.request_id, f"{method} {route}", attributes)


async def _send(send: Send, response: Response, request_id: str) -> None:
    headers = [
        *response.headers,
        (b"content-length", str(len(response.body)).encode()),
        (HEADER.encode(), request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
