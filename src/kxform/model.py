"""The ``kserve.Model`` that serves one plugin: a request's path from instances to the reply.

    decode envelope -> preprocess (plugin) -> assemble inputs (name, cast, check)
    -> split by max_batch_size -> predictor calls (concurrent) -> join, shape outputs
    -> postprocess (plugin) -> encode envelope

The predictor model's spec is read at start-up; after an outage it is read again before the next
request, so a predictor that comes back with a new version is described correctly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kserve
from kserve.protocol.infer_type import InferRequest

from kxform.envelope import Envelope, decode_v1, decode_v2, encode_v1, encode_v2
from kxform.errors import (
    KxformError,
    PredictorError,
    PredictorTimeoutError,
    PredictorUnavailableError,
    RequestError,
)
from kxform.metrics import PREDICTOR_ERRORS, REQUESTS, stage
from kxform.plugins import LoadedPlugin
from kxform.predictor import PredictorClient, load_model_spec
from kxform.predictor.metadata import ModelSpec, TensorSpec
from kxform.tensors import Array, assemble_inputs, batch_size, join_batches, shape_outputs, split_batches
from kxform.transformer import Context

__all__ = ["TransformerModel"]

logger = logging.getLogger(__name__)
_ERROR_KINDS = {PredictorUnavailableError: "unavailable", PredictorTimeoutError: "timeout"}


class TransformerModel(kserve.Model):  # type: ignore[misc]  # kserve ships no type information
    """Serves ``plugin`` under ``name``, forwarding to ``plugin.predictor_model`` on ``predictor``."""

    def __init__(
        self, name: str, plugin: LoadedPlugin, predictor: PredictorClient, *, max_instances: int = 1024
    ) -> None:
        super().__init__(name)
        self.plugin = plugin
        self.predictor = predictor
        self.max_instances = max_instances
        self._spec: ModelSpec | None = None
        self._spec_lock = asyncio.Lock()
        self._closing: asyncio.Task[None] | None = None
        self.ready = True  # this process can serve; whether the predictor can is `healthy()`

    async def model_spec(self) -> ModelSpec:
        """The predictor model's spec, read once and again after an outage."""
        if self._spec is None:
            async with self._spec_lock:
                if self._spec is None:
                    spec = await load_model_spec(self.predictor, self.plugin.predictor_model)
                    self.plugin.transformer.setup(spec)
                    self._spec = spec
                    logger.info("predictor model %s: %s", spec.name, spec)
        return self._spec

    def _forget_spec(self) -> None:
        self._spec = None

    def stop(self) -> None:
        """kserve unloads models on SIGTERM: close the predictor's connections on the serving loop."""
        self.ready = False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (never served): nothing was opened
        self._closing = loop.create_task(self.predictor.close())

    async def healthy(self) -> bool:
        """Ready when the predictor model is ready and described; an outage makes the spec stale."""
        try:
            ready = await self.predictor.model_ready(self.plugin.predictor_model)
            if ready:
                await self.model_spec()
        except KxformError as exc:
            logger.debug("predictor not ready for %s: %s", self.name, exc.message)
            ready = False
        if not ready:
            self._forget_spec()
        return ready

    def decode(self, body: Any, headers: Mapping[str, str]) -> Envelope:
        if isinstance(body, InferRequest):
            envelope = decode_v2(body, self.plugin.transformer.inputs)
        else:
            envelope = decode_v1(body, headers)
        if len(envelope.instances) > self.max_instances:
            raise RequestError(
                f"the request has {len(envelope.instances)} instances; at most {self.max_instances} are accepted "
                "(--max_instances): split it into several requests"
            )
        return envelope

    def encode(self, result: Any, envelope: Envelope) -> Any:
        if envelope.request is not None:
            return encode_v2(result, envelope.request, self.name, self.plugin.transformer.outputs)
        return encode_v1(result)

    async def __call__(
        self, body: Any, headers: Mapping[str, str] | None = None, verb: Any = None
    ) -> tuple[Any, dict[str, str]]:
        """kserve's entry point for V1, V2 REST and V2 gRPC requests alike."""
        from_grpc = isinstance(body, InferRequest) and body.from_grpc
        protocol = "grpc" if from_grpc else "v2" if isinstance(body, InferRequest) else "v1"
        try:
            reply = await self._handle(body, headers or {})
        except KxformError as exc:
            REQUESTS.labels(self.name, protocol, str(exc.http_status)).inc()
            logger.log(logging.ERROR if exc.http_status >= 500 else logging.INFO, "%s: %s", self.name, exc.message)
            if from_grpc:
                raise _grpc_error(exc) from exc
            raise
        REQUESTS.labels(self.name, protocol, "200").inc()
        return reply, {}

    async def _handle(self, body: Any, headers: Mapping[str, str]) -> Any:
        with stage(self.name, "decode"):
            envelope = self.decode(body, headers)
        request_id = headers.get("x-request-id") or (envelope.request.id if envelope.request else "") or ""
        ctx = Context(await self.model_spec(), envelope.protocol, request_id, headers=headers)
        with stage(self.name, "preprocess"):
            inputs = assemble_inputs(await self._preprocess(envelope.instances, ctx), ctx.model)
        with stage(self.name, "predictor"):
            outputs = await self.infer(ctx.model, inputs, ctx.request_id)
        with stage(self.name, "postprocess"):
            result = await self.plugin.postprocess(outputs, ctx)
        with stage(self.name, "encode"):
            reply = self.encode(result, envelope)
        logger.debug("%s request %s: %d instances", self.name, request_id, len(envelope.instances))
        return reply

    async def _preprocess(self, instances: list[Any], ctx: Context) -> Any:
        try:
            return await self.plugin.preprocess(instances, ctx)
        except KxformError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            # preprocess works on what the client sent: a value it cannot handle is the client's 400
            raise RequestError(
                f"transformer '{self.name}' could not preprocess the instances: {type(exc).__name__}: {exc}"
            ) from exc

    def get_input_types(self) -> list[dict[str, Any]]:
        """What clients send to this transformer (``GET /v2/models/{name}``), not what Triton takes."""
        return [_tensor_metadata(spec) for spec in self.plugin.transformer.inputs]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [_tensor_metadata(spec) for spec in self.plugin.transformer.outputs]

    async def infer(self, spec: ModelSpec, inputs: dict[str, Array], request_id: str) -> dict[str, Array]:
        """Call the predictor, split by ``max_batch_size`` into concurrent calls; outputs in request order."""
        names = [output.name for output in spec.outputs]
        chunks = split_batches(inputs, spec.max_batch_size)
        try:
            parts = await asyncio.gather(
                *(self.predictor.infer(spec.name, chunk, names, request_id) for chunk in chunks)
            )
        except PredictorError as exc:
            PREDICTOR_ERRORS.labels(self.name, _ERROR_KINDS.get(type(exc), "bad_response")).inc()
            if isinstance(exc, PredictorUnavailableError):
                self._forget_spec()
            raise
        except RequestError:
            PREDICTOR_ERRORS.labels(self.name, "rejected").inc()
            raise
        batch = batch_size(inputs) if spec.batched else 1
        return shape_outputs(join_batches(parts), spec, batch)


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": [-1, *spec.shape]}


def _grpc_error(exc: KxformError) -> Exception:
    """kserve's gRPC interceptor turns a GrpcException into its status code and details."""
    import grpc
    from grpc_interceptor.exceptions import GrpcException

    return GrpcException(status_code=grpc.StatusCode[exc.grpc_code], details=exc.message)
