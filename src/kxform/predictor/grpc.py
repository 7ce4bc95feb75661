"""The predictor over the V2 gRPC protocol (``inference.GRPCInferenceService``), tensors as raw contents.

Built on grpc.aio and kserve's own V2 protos rather than ``tritonclient.grpc``: both define
``inference.*`` messages in protobuf's default pool, and one process cannot load the two (kserve's
server needs its own). Triton's ``ModelConfig`` RPC is not in kserve's proto; it is called with
Triton's ``model_config.proto`` loaded on its own (no symbol clash) and the one-field response
envelope unwrapped by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from kxform.codecs.dtypes import v2_datatype
from kxform.codecs.tensor import from_raw_bytes, to_raw_bytes
from kxform.errors import (
    KxformError,
    PredictorError,
    PredictorTimeoutError,
    PredictorUnavailableError,
    RequestError,
)
from kxform.model_config import model_config_pb2
from kxform.predictor.base import Array, PredictorSettings, call

__all__ = ["GrpcPredictor"]

# Large images and batches exceed gRPC's 4 MiB default message size.
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
]
_MODEL_CONFIG_METHOD = "/inference.GRPCInferenceService/ModelConfig"


def _encode_config_request(model: str) -> bytes:
    # ModelConfigRequest { string name = 1; } -- field 1, length-delimited
    name = model.encode()
    return b"\x0a" + _varint(len(name)) + name


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _decode_config_response(data: bytes) -> dict[str, Any]:
    # ModelConfigResponse { ModelConfig config = 1; }: skip the tag and the length varint.
    config = model_config_pb2().ModelConfig()
    if data:
        position = 1
        while data[position] & 0x80:
            position += 1
        config.ParseFromString(data[position + 1 :])
    return dict(MessageToDict(config, preserving_proto_field_name=True))


class GrpcPredictor:
    """A V2 predictor (Triton) reached over gRPC; the channel is opened in the serving event loop."""

    def __init__(self, settings: PredictorSettings) -> None:
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._stub: GRPCInferenceServiceStub | None = None

    @property
    def stub(self) -> GRPCInferenceServiceStub:
        if self._stub is None:
            if self.settings.use_ssl:
                credentials = grpc.ssl_channel_credentials()
                self._channel = grpc.aio.secure_channel(self.settings.host, credentials, options=_CHANNEL_OPTIONS)
            else:
                self._channel = grpc.aio.insecure_channel(self.settings.host, options=_CHANNEL_OPTIONS)
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
            return PredictorTimeoutError(f"the {where} did not answer in time: {message}")
        return PredictorError(f"the {where} failed ({code.name}): {message}")

    async def _call(self, operation: Any, what: str) -> Any:
        return await call(operation, self.settings, self._translate, what)

    def _request(
        self,
        model: str,
        inputs: Mapping[str, Array],
        outputs: Sequence[pb.ModelInferRequest.InferRequestedOutputTensor],
    ) -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name=model, outputs=outputs)
        for name, array in inputs.items():
            request.inputs.add(name=name, datatype=v2_datatype(array.dtype), shape=array.shape)
            request.raw_input_contents.append(to_raw_bytes(array, f"input '{name}'"))
        return request

    async def _infer(self, request: pb.ModelInferRequest, request_id: str = "") -> pb.ModelInferResponse:
        request.id = request_id
        metadata = (("x-request-id", request_id),) if request_id else None

        async def operation() -> pb.ModelInferResponse:
            return await self.stub.ModelInfer(request, metadata=metadata, timeout=self.settings.timeout)

        return await self._call(operation, f"infer {request.model_name}")

    @staticmethod
    def _outputs(response: pb.ModelInferResponse) -> dict[str, Array]:
        if len(response.raw_output_contents) != len(response.outputs):
            raise PredictorError(f"the predictor's response for '{response.model_name}' carries no raw output contents")
        return {
            tensor.name: from_raw_bytes(raw, tensor.datatype, list(tensor.shape), f"output '{tensor.name}'")
            for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }

    async def infer(
        self, model: str, inputs: Mapping[str, Array], outputs: Sequence[str], request_id: str = ""
    ) -> dict[str, Array]:
        requested = [pb.ModelInferRequest.InferRequestedOutputTensor(name=name) for name in outputs]
        response = await self._infer(self._request(model, inputs, requested), request_id)
        return self._outputs(response)

    async def classify(self, model: str, inputs: Mapping[str, Array], output: str, count: int) -> list[str]:
        requested = pb.ModelInferRequest.InferRequestedOutputTensor(name=output)
        requested.parameters["classification"].int64_param = count
        values = self._outputs(await self._infer(self._request(model, inputs, [requested])))[output]
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]

    async def model_metadata(self, model: str) -> dict[str, Any]:
        async def operation() -> Any:
            return await self.stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=self.settings.timeout)

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

        async def operation() -> Any:
            return await config_call(model, timeout=self.settings.timeout)

        return dict(await self._call(operation, f"config of {model}"))

    async def server_ready(self) -> bool:
        async def operation() -> Any:
            return await self.stub.ServerReady(pb.ServerReadyRequest(), timeout=self.settings.timeout)

        return bool((await self._call(operation, "server readiness")).ready)

    async def model_ready(self, model: str) -> bool:
        async def operation() -> Any:
            return await self.stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=self.settings.timeout)

        return bool((await self._call(operation, f"readiness of {model}")).ready)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None
