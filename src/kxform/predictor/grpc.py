"""The predictor over the V2 gRPC protocol (``inference.GRPCInferenceService``), tensors as raw contents.

Built on grpc.aio and kserve's own V2 protos rather than ``tritonclient.grpc``: both define
``inference.*`` messages in protobuf's default pool, and one process cannot load the two (kserve's
server needs its own). Triton's ``ModelConfig`` RPC is not in kserve's proto; it is called with
Triton's ``model_config.proto`` loaded on its own (no symbol clash) and the one-field response
envelope unwrapped by hand; the system shared memory RPCs, also Triton's own, have messages of a few
string and integer fields, written and read with ``kxform.predictor.protowire``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from kxform import tracing
from kxform.errors import (
    KxformError,
    PredictorError,
    PredictorTimeoutError,
    PredictorUnavailableError,
    RequestError,
)
from kxform.model_config import model_config_pb2
from kxform.predictor.base import (
    Array,
    Placement,
    PredictorSettings,
    RequestedOutputs,
    about_shared_memory,
    call,
)
from kxform.predictor.protowire import fields, string_field, uint_field
from kxform.v2 import RequestedOutput, V2Tensor, decode_grpc_response, encode_grpc_request

__all__ = ["GrpcPredictor", "channel_options"]

# Large images and batches exceed gRPC's 4 MiB default message size.
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    # gRPC's default reconnect backoff grows to 120 s: after a predictor restart the channel would stay
    # in TRANSIENT_FAILURE for seconds. Retry connecting every 100 ms..1 s instead (readiness within ~1 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),  # kxform's own policy (predictor.base.call) decides what is retried
]
_SERVICE = "/inference.GRPCInferenceService"
_MODEL_CONFIG_METHOD = f"{_SERVICE}/ModelConfig"


# A target with a resolver scheme (dns:///predictor-headless.ns.svc.cluster.local:9000, ipv4:a:p,b:p) names
# every predictor pod: balance calls over all of them. A bare host:port keeps gRPC's pick_first, which is
# what a ClusterIP Service (one address) or localhost (127.0.0.1 and ::1, one of them listening) wants.
_BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")


def channel_options(target: str) -> list[tuple[str, Any]]:
    """The channel arguments for TARGET: round-robin over the resolved addresses when it has a scheme."""
    if target.startswith(_BALANCED_SCHEMES):
        return [*_CHANNEL_OPTIONS, ("grpc.lb_policy_name", "round_robin")]
    return list(_CHANNEL_OPTIONS)


def _decode_status_response(data: bytes) -> list[str]:
    # SystemSharedMemoryStatusResponse { map<string, RegionStatus> regions = 1; }: each entry a message
    # whose field 1 is the key, the region's name.
    names = []
    for number, entry in fields(data):
        if number == 1 and isinstance(entry, bytes):
            names += [key.decode() for field, key in fields(entry) if field == 1 and isinstance(key, bytes)]
    return names


def _encode_config_request(model: str) -> bytes:
    # ModelConfigRequest { string name = 1; }
    return string_field(1, model)


def _encode_register_request(request: tuple[str, str, int]) -> bytes:
    # SystemSharedMemoryRegisterRequest { string name = 1; string key = 2; uint64 offset = 3; uint64 byte_size = 4; }
    region, key, byte_size = request
    return string_field(1, region) + string_field(2, key) + uint_field(4, byte_size)  # offset 0: the default


def _decode_config_response(data: bytes) -> dict[str, Any]:
    # ModelConfigResponse { ModelConfig config = 1; }
    config = model_config_pb2().ModelConfig()
    for number, value in fields(data):
        if number == 1 and isinstance(value, bytes):
            config.ParseFromString(value)
    return dict(MessageToDict(config, preserving_proto_field_name=True))


class GrpcPredictor(RequestedOutputs):
    """A V2 predictor (Triton) reached over gRPC; the channel is opened in the serving event loop."""

    def __init__(self, settings: PredictorSettings) -> None:
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._stub: GRPCInferenceServiceStub | None = None

    @property
    def stub(self) -> GRPCInferenceServiceStub:
        if self._stub is None:
            target = self.settings.host
            if self.settings.use_ssl:
                credentials = grpc.ssl_channel_credentials()
                self._channel = grpc.aio.secure_channel(target, credentials, options=channel_options(target))
            else:
                self._channel = grpc.aio.insecure_channel(target, options=channel_options(target))
            self._stub = GRPCInferenceServiceStub(self._channel)
        return self._stub

    def _translate(self, exc: Exception) -> KxformError:
        if not isinstance(exc, grpc.aio.AioRpcError):
            raise exc  # a bug of ours, not the predictor's
        where, code, message = f"predictor at {self.settings.host}", exc.code(), exc.details() or ""
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return RequestError(f"the {where} rejected the request: {message}")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
            return PredictorUnavailableError(f"the {where} is unavailable: {message}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return PredictorTimeoutError(
                f"the {where} did not answer within {self.settings.timeout:g}s "
                f"(--predictor_request_timeout_seconds): {message}"
            )
        return PredictorError(f"the {where} failed ({code.name}): {message}")

    async def _call(self, operation: Any, what: str) -> Any:
        return await call(operation, self.settings, self._translate, what)

    async def _infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        outputs: Sequence[RequestedOutput],
        request_id: str,
        placement: Placement | None,
    ) -> dict[str, Array]:
        tensors = [V2Tensor.from_array(name, array) for name, array in inputs.items()]
        placed, views = (placement.inputs, placement.views) if placement is not None else ({}, {})
        request = encode_grpc_request(model, tensors, outputs, request_id, placed)
        metadata: tuple[tuple[str, str], ...] | None = (("x-request-id", request_id),) if request_id else None
        if tracing.ACTIVE is not None:  # the traceparent of this call (kxform.batching sets it)
            metadata = (*(metadata or ()), *(tracing.CALL_HEADERS.get() or {}).items()) or None

        async def operation(timeout: float) -> pb.ModelInferResponse:
            return await self.stub.ModelInfer(request, metadata=metadata, timeout=timeout)

        translate = self._translate if placement is None else about_shared_memory(self._translate)
        response = await call(operation, self.settings, translate, f"infer {model}")
        try:
            return decode_grpc_response(response, views).arrays()
        except RequestError as exc:
            raise PredictorError(f"the predictor's response for '{model}' is not usable: {exc.message}") from exc

    async def model_metadata(self, model: str) -> dict[str, Any]:
        async def operation(timeout: float) -> Any:
            return await self.stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=timeout)

        reply = await self._call(operation, f"metadata of {model}")
        return dict(MessageToDict(reply, preserving_proto_field_name=True))

    async def model_config(self, model: str) -> dict[str, Any]:
        assert self.stub is not None  # opens the channel
        assert self._channel is not None
        config_call = self._channel.unary_unary(
            _MODEL_CONFIG_METHOD,
            request_serializer=_encode_config_request,
            response_deserializer=_decode_config_response,
        )

        async def operation(timeout: float) -> Any:
            return await config_call(model, timeout=timeout)

        return dict(await self._call(operation, f"config of {model}"))

    async def server_ready(self) -> bool:
        async def operation(timeout: float) -> Any:
            return await self.stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout)

        return bool((await self._call(operation, "server readiness")).ready)

    async def model_ready(self, model: str) -> bool:
        async def operation(timeout: float) -> Any:
            return await self.stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=timeout)

        return bool((await self._call(operation, f"readiness of {model}")).ready)

    async def server_extensions(self) -> frozenset[str]:
        async def operation(timeout: float) -> Any:
            return await self.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=timeout)

        return frozenset((await self._call(operation, "server metadata")).extensions)

    async def _shared_memory_call(self, method: str, request: Any, serializer: Any, what: str) -> bytes:
        assert self.stub is not None  # opens the channel
        assert self._channel is not None
        rpc = self._channel.unary_unary(
            f"{_SERVICE}/{method}", request_serializer=serializer, response_deserializer=lambda data: data
        )

        async def operation(timeout: float) -> Any:
            return await rpc(request, timeout=timeout)

        return bytes(await call(operation, self.settings, about_shared_memory(self._translate), what))

    async def shared_memory_regions(self) -> list[str]:
        # SystemSharedMemoryStatusRequest { string name = 1; }: empty, every region
        reply = await self._shared_memory_call("SystemSharedMemoryStatus", b"", bytes, "shared memory status")
        try:
            return _decode_status_response(reply)
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            raise PredictorError(f"the predictor's shared memory status is not readable: {exc}") from exc

    async def register_shared_memory(self, region: str, key: str, byte_size: int) -> None:
        await self._shared_memory_call(
            "SystemSharedMemoryRegister",
            (region, key, byte_size),
            _encode_register_request,
            f"register shared memory region {region}",
        )

    async def unregister_shared_memory(self, region: str) -> None:
        # SystemSharedMemoryUnregisterRequest { string name = 1; }
        await self._shared_memory_call(
            "SystemSharedMemoryUnregister",
            region,
            lambda name: string_field(1, name),
            f"unregister shared memory region {region}",
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None
