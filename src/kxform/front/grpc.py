"""The gRPC front of ``kxform serve``: ``inference.GRPCInferenceService`` on grpc.aio, serving methods only.

Messages arrive as bytes and are parsed here, so a body that is not the method's protobuf message is
INVALID_ARGUMENT naming the fix, not gRPC's INTERNAL. Every call gets an ``x-request-id`` (the
client's if it is a safe token) in its initial metadata. The repository methods are registered only
with ``--enable_model_repository_api``; unknown methods are gRPC's own UNIMPLEMENTED.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from kxform import __version__, limits, tracing
from kxform.envelope import decode_v2
from kxform.errormap import as_kxform_error, grpc_error
from kxform.errors import KxformError, RequestError
from kxform.front.http import check_version, metadata_of
from kxform.logs import bind_request
from kxform.metrics import REQUESTS, child
from kxform.offload import WorkerPool
from kxform.registry import Registry
from kxform.requestid import HEADER, accept_request_id
from kxform.v2 import V2Response, decode_grpc_request, encode_grpc_response, grpc_protos

if TYPE_CHECKING:
    from kxform.request_trace import RequestTrace

__all__ = ["SERVICE", "GrpcFront", "server_options"]

logger = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
INLINE_MAX_MESSAGE_BYTES = 64 * 1024  # larger messages are parsed on the worker pool

Method = Callable[[Any, str, dict[str, str]], Awaitable[Any]]


def server_options() -> list[tuple[str, int]]:
    """Message and metadata bounds from the limits (gRPC refuses larger ones itself, RESOURCE_EXHAUSTED)."""
    limit = limits.current()
    return [
        ("grpc.max_receive_message_length", limit.max_request_bytes),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_metadata_size", limit.max_header_bytes),
    ]


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    pairs = [(key, value) for key, value in context.invocation_metadata() or () if isinstance(value, str)]
    limits.current().check_headers(len(pairs), sum(len(k) + len(v) for k, v in pairs))
    return dict(pairs)


class GrpcFront:
    """The servicer: one coroutine per RPC, each wrapped by ``_call`` (request id, error mapping)."""

    def __init__(self, registry: Registry, pool: WorkerPool, *, enable_repository_api: bool = False) -> None:
        self.registry = registry
        self.pool = pool
        self.protos = grpc_protos()
        methods: dict[str, tuple[Method, Any]] = {
            "ServerLive": (self.server_live, self.protos.ServerLiveRequest),
            "ServerReady": (self.server_ready, self.protos.ServerReadyRequest),
            "ServerMetadata": (self.server_metadata, self.protos.ServerMetadataRequest),
            "ModelReady": (self.model_ready, self.protos.ModelReadyRequest),
            "ModelMetadata": (self.model_metadata, self.protos.ModelMetadataRequest),
            "ModelInfer": (self.model_infer, None),
        }
        if enable_repository_api:
            methods["RepositoryModelLoad"] = (self.repository_load, self.protos.RepositoryModelLoadRequest)
            methods["RepositoryModelUnload"] = (self.repository_unload, self.protos.RepositoryModelUnloadRequest)
        self.methods = methods

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    self._call(name, method, message_type),
                    request_deserializer=None,  # bytes: parsed in _call, so garbage is INVALID_ARGUMENT
                    response_serializer=lambda message: message.SerializeToString(),
                )
                for name, (method, message_type) in self.methods.items()
            },
        )

    def _call(self, name: str, method: Method, message_type: Any) -> Callable[[bytes, Any], Awaitable[Any]]:
        traced = name == "ModelInfer"

        async def rpc(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            sent = dict(context.invocation_metadata() or ()).get(HEADER)
            request_id = accept_request_id(sent if isinstance(sent, str) else None)
            bind_request(request_id)
            await context.send_initial_metadata(((HEADER, request_id),))
            trace: RequestTrace | None = None
            try:
                message = raw if message_type is None else _parse(message_type, raw, name)
                metadata = _metadata(context)
                if traced and tracing.ACTIVE is not None:
                    trace = _start_trace(tracing.ACTIVE, metadata, request_id)
                    reply = await self.model_infer(message, request_id, metadata, trace)
                    trace.finish(200, None)
                    return reply
                return await method(message, request_id, metadata)
            except Exception as exc:
                error = as_kxform_error(exc, request_id, f"gRPC {name}")
                code, details = grpc_error(error)
                if trace is not None:
                    trace.set_attribute("rpc.grpc.status_code", code.value[0])
                    trace.finish(error.http_status, exc)
                await context.abort(code, details)

        return rpc

    async def server_live(self, message: Any, request_id: str, headers: dict[str, str]) -> Any:
        return self.protos.ServerLiveResponse(live=True)

    async def server_ready(self, message: Any, request_id: str, headers: dict[str, str]) -> Any:
        return self.protos.ServerReadyResponse(ready=await self.registry.ready())

    async def server_metadata(self, message: Any, request_id: str, headers: dict[str, str]) -> Any:
        return self.protos.ServerMetadataResponse(name="kxform", version=__version__, extensions=[])

    async def model_ready(self, message: Any, request_id: str, headers: dict[str, str]) -> Any:
        model = self.registry.get(message.name)
        await check_version(model, message.version)
        return self.protos.ModelReadyResponse(ready=await model.healthy())

    async def model_metadata(self, message: Any, request_id: str, headers: dict[str, str]) -> Any:
        model = self.registry.get(message.name)
        await check_version(model, message.version)
        return self.protos.ModelMetadataResponse(**await metadata_of(model))

    async def model_infer(
        self, raw: bytes, request_id: str, headers: dict[str, str], trace: RequestTrace | None = None
    ) -> Any:
        large = len(raw) > INLINE_MAX_MESSAGE_BYTES
        request = await self.pool.run(decode_grpc_request, raw) if large else decode_grpc_request(raw)
        bind_request(request_id, trace, request.model_name)
        if trace is not None:
            trace.set_attribute("kxform.model", request.model_name)
        model = self.registry.get(request.model_name)
        try:
            await check_version(model, request.model_version)
            size = sum(tensor.data.nbytes for tensor in request.inputs)
            decode = functools.partial(decode_v2, request, model.declared_inputs)
            envelope, result = await model.run(decode, size, headers | {HEADER: request_id}, request_id, trace)
            response = model.encode(result, envelope, trace)
            assert isinstance(response, V2Response)
            message = encode_grpc_response(response, request)
        except KxformError as exc:
            child(REQUESTS, model.name, "grpc", str(exc.http_status)).inc()
            raise
        child(REQUESTS, model.name, "grpc", "200").inc()
        return message

    async def repository_load(self, message: Any, request_id: str, headers: dict[str, str]) -> Any:
        self.registry.load(message.model_name)
        return self.protos.RepositoryModelLoadResponse(model_name=message.model_name, isLoaded=True)

    async def repository_unload(self, message: Any, request_id: str, headers: dict[str, str]) -> Any:
        self.registry.unload(message.model_name)
        return self.protos.RepositoryModelUnloadResponse(model_name=message.model_name, isUnloaded=True)


def _start_trace(active: Any, metadata: dict[str, str], request_id: str) -> RequestTrace:
    attributes = {
        "kxform.protocol": "grpc",
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": "ModelInfer",
    }
    trace: RequestTrace = active.start_request(metadata, request_id, f"{SERVICE}/ModelInfer", attributes)
    return trace


def _parse(message_type: Any, raw: bytes, method: str) -> Any:
    from google.protobuf.message import DecodeError

    try:
        return message_type.FromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise RequestError(f"the {method} body is not a {message_type.__name__} message ({exc}); send one") from exc
