"""The ``kserve.Model`` that serves one plugin: a request's path from its body to the reply.

    decode envelope -> preprocess (plugin) -> assemble inputs (name, cast, check)   [inline or worker pool]
    -> split by max_batch_size -> batcher (joins concurrent requests) -> predictor calls -> join, shape outputs
    -> postprocess (plugin) -> encode (V1 dict or V2Response)

Decode and a sync ``preprocess`` run as one step: inline on the event loop for small bodies, on the
worker pool (``kxform.offload``) for large ones, or when a codec finds large work inside a small body.

Whose fault an exception is — decided here, once:
- ``KxformError`` keeps its own status (a plugin may raise ``kxform.RequestError`` for bad input).
- In ``preprocess`` (which reads what the client sent), ``ValueError``, ``TypeError``, ``KeyError`` and
  ``IndexError`` are the input's fault: 400 naming the transformer and the exception.
- Anything else from a hook, and anything at all from ``postprocess``, ``setup`` or in turning
  postprocess's result into a reply, is a bug of the plugin: ``PluginBugError`` (500) naming it.

The predictor model's spec is read at start-up; after an outage it is read again before the next
request, so a predictor that comes back with a new version is described correctly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import kserve

from kxform.batching import Batcher
from kxform.codecs.jsonbody import JSON_CONTENT_TYPE, dump_json
from kxform.envelope import Envelope, decode_v1, decode_v2, encode_v1, encode_v2, instances_of
from kxform.errors import (
    KxformError,
    PluginBugError,
    PredictorError,
    PredictorTimeoutError,
    PredictorUnavailableError,
    RequestError,
)
from kxform.metrics import PREDICTOR_ERRORS, child, stage
from kxform.offload import NeedsWorker, WorkerPool, inline_attempt
from kxform.plugins import LoadedPlugin
from kxform.predictor import PredictorClient, load_model_spec
from kxform.requestid import HEADER, accept_request_id
from kxform.spec import ModelSpec, TensorSpec
from kxform.tensors import Array, assemble_inputs, batch_size, join_batches, shape_outputs, split_batches
from kxform.transformer import Context
from kxform.v2 import V2Request, V2Response, from_infer_request, to_infer_response

if TYPE_CHECKING:
    from kxform.request_trace import RequestTrace

__all__ = ["INPUT_FAULTS", "TransformerModel"]

logger = logging.getLogger(__name__)
_ERROR_KINDS = {PredictorUnavailableError: "unavailable", PredictorTimeoutError: "timeout"}

INPUT_FAULTS: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, IndexError)
"""Exceptions of ``preprocess`` that count as the input's fault (400); see the module docstring."""

Decode = Callable[[], Envelope]
Prepared = tuple[Envelope, Context, dict[str, Array]]


class TransformerModel(kserve.Model):  # type: ignore[misc]  # kserve ships no type information
    """Serves ``plugin`` under ``name``, forwarding to ``plugin.predictor_model`` on ``predictor``."""

    def __init__(
        self,
        name: str,
        plugin: LoadedPlugin,
        predictor: PredictorClient,
        *,
        pool: WorkerPool | None = None,
        inline_max_bytes: int = 64 * 1024,
        batcher: Batcher | None = None,
    ) -> None:
        super().__init__(name)
        self.plugin = plugin
        self.predictor = predictor
        self.batcher = batcher or Batcher(predictor, max_delay_us=0)  # none given: each request alone
        self.pool = pool or WorkerPool(threads=2, queue=16)
        self.inline_max_bytes = inline_max_bytes
        self._spec: ModelSpec | None = None
        self._spec_lock = asyncio.Lock()
        self.ready = True  # this process can serve; whether the predictor can is `healthy()`

    async def model_spec(self) -> ModelSpec:
        """The predictor model's spec, read once and again after an outage."""
        if self._spec is None:
            async with self._spec_lock:
                if self._spec is None:
                    spec = await load_model_spec(self.predictor, self.plugin.predictor_model)
                    self._setup(spec)
                    self._spec = spec
                    logger.info("predictor model %s: %s", spec.name, spec.summary())
        return self._spec

    def _setup(self, spec: ModelSpec) -> None:
        try:
            self.plugin.transformer.setup(spec)
        except KxformError:
            raise
        except Exception as exc:
            raise self._failure("setup", exc) from exc

    def _forget_spec(self) -> None:
        self._spec = None

    def stop(self) -> None:
        """Unloaded (repository API, or shutdown): not ready. The predictor client is the process's, shared
        with the other transformers; the server closes it when it stops."""
        self.ready = False

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

    @property
    def declared_inputs(self) -> tuple[TensorSpec, ...]:
        return self.plugin.transformer.inputs

    @property
    def declared_outputs(self) -> tuple[TensorSpec, ...]:
        return self.plugin.transformer.outputs

    async def __call__(
        self, body: Any, headers: Mapping[str, str] | None = None, verb: Any = None
    ) -> tuple[Any, dict[str, str]]:
        """A V1 body (bytes, or an already parsed dict) or a ``V2Request`` → (V1 dict | V2Response, {});
        kserve's ``InferRequest`` (``--server kserve``) → (kserve's ``InferResponse``, {})."""
        headers = headers or {}
        request_id = accept_request_id(headers.get(HEADER))
        transport_request = body if isinstance(body, kserve.InferRequest) else None
        if transport_request is not None:
            body = from_infer_request(transport_request)
        if isinstance(body, V2Request):
            decode: Decode = functools.partial(decode_v2, body, self.declared_inputs)
            size = sum(tensor.data.nbytes for tensor in body.inputs)
        elif isinstance(body, dict):
            decode, size = functools.partial(decode_v1_document, body), 0
        else:
            decode, size = functools.partial(decode_v1, bytes(body), headers), len(body)
        envelope, result = await self.run(decode, size, headers, request_id)
        reply = self.encode(result, envelope)
        if transport_request is not None and isinstance(reply, V2Response) and envelope.request is not None:
            return to_infer_response(reply, envelope.request, transport_request), {}
        return reply, {}

    async def run(
        self,
        decode: Decode,
        size: int,
        headers: Mapping[str, str],
        request_id: str,
        trace: RequestTrace | None = None,
    ) -> tuple[Envelope, Any]:
        """The whole path of one request; returns the envelope and postprocess's result.

        ``trace`` (from the front, when tracing is on) gets a span per stage."""
        spec = await self.model_spec()
        envelope, ctx, inputs = await self._prepare(decode, size, spec, headers, request_id, trace)
        if trace is not None:
            trace.set_attribute("kxform.instances", len(envelope.instances))
        with stage(self.name, "predictor", trace):
            outputs = await self.infer(spec, inputs, request_id, trace)
        with stage(self.name, "postprocess", trace):
            result = await self._postprocess(outputs, ctx)
        logger.debug("%s request %s: %d instances", self.name, request_id, len(envelope.instances))
        return envelope, result

    async def _prepare(
        self,
        decode: Decode,
        size: int,
        spec: ModelSpec,
        headers: Mapping[str, str],
        request_id: str,
        trace: RequestTrace | None,
    ) -> Prepared:
        if self.plugin.async_preprocess:
            return await self._prepare_async(decode, size, spec, headers, request_id, trace)
        step = functools.partial(self._prepare_sync, decode, spec, headers, request_id, trace)
        if size <= self.inline_max_bytes and not self.plugin.transformer.offload_hooks:
            try:
                with inline_attempt():
                    return step()
            except NeedsWorker:
                logger.debug("%s request %s: large work, moved to a worker thread", self.name, request_id)
        return await self.pool.run(step)

    def _context(self, envelope: Envelope, spec: ModelSpec, headers: Mapping[str, str], request_id: str) -> Context:
        parameters = envelope.request.parameters if envelope.request is not None else {}
        return Context(spec, envelope.protocol, request_id, headers=headers, parameters=parameters)

    def _prepare_sync(
        self, decode: Decode, spec: ModelSpec, headers: Mapping[str, str], request_id: str, trace: RequestTrace | None
    ) -> Prepared:
        with stage(self.name, "decode", trace):
            envelope = decode()
        ctx = self._context(envelope, spec, headers, request_id)
        with stage(self.name, "preprocess", trace):
            try:
                result = self.plugin.transformer.preprocess(envelope.instances, ctx)
            except Exception as exc:
                raise self._preprocess_error(exc) from exc
            return envelope, ctx, assemble_inputs(result, spec)

    async def _prepare_async(
        self,
        decode: Decode,
        size: int,
        spec: ModelSpec,
        headers: Mapping[str, str],
        request_id: str,
        trace: RequestTrace | None,
    ) -> Prepared:
        with stage(self.name, "decode", trace):
            envelope = decode() if size <= self.inline_max_bytes else await self.pool.run(decode)
        ctx = self._context(envelope, spec, headers, request_id)
        with stage(self.name, "preprocess", trace):
            try:
                result = await self.plugin.preprocess(envelope.instances, ctx)
            except Exception as exc:
                raise self._preprocess_error(exc) from exc
            return envelope, ctx, assemble_inputs(result, spec)

    def _preprocess_error(self, exc: Exception) -> Exception:
        if isinstance(exc, KxformError):
            return exc
        if isinstance(exc, INPUT_FAULTS):
            return RequestError(
                f"transformer '{self.name}' could not preprocess the instances: {type(exc).__name__}: {exc}"
            )
        return self._failure("preprocess", exc)

    async def _postprocess(self, outputs: dict[str, Array], ctx: Context) -> Any:
        try:
            return await self.plugin.postprocess(outputs, ctx)
        except KxformError:
            raise
        except Exception as exc:
            raise self._failure("postprocess", exc) from exc

    def _failure(self, hook: str, exc: BaseException) -> PluginBugError:
        info = self.plugin.info
        return PluginBugError(
            f"transformer '{self.name}' failed in {hook} ({type(exc).__name__}); this is a bug in the plugin "
            f"({info.describe()}), not in the request: the server log has the traceback"
        )

    def encode(self, result: Any, envelope: Envelope, trace: RequestTrace | None = None) -> dict[str, Any] | V2Response:
        """postprocess's result as the reply of its protocol; a result that cannot be one is the plugin's bug."""
        with stage(self.name, "encode", trace):
            try:
                if envelope.request is not None:
                    return encode_v2(result, envelope.request, self.name, self.declared_outputs)
                return encode_v1(result)
            except (KxformError, ValueError, TypeError) as exc:
                failure = self._failure("postprocess", exc)
                failure.message += f": its result cannot be sent ({getattr(exc, 'message', exc)})"
                raise failure from exc

    def dump_v1(self, reply: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        """A V1 reply as JSON bytes and headers; a value JSON cannot carry is the plugin's bug."""
        try:
            return dump_json(reply), {"content-type": JSON_CONTENT_TYPE}
        except TypeError as exc:
            failure = self._failure("postprocess", exc)
            failure.message += f": its result is not JSON ({exc})"
            raise failure from exc

    def get_input_types(self) -> list[dict[str, Any]]:
        """What clients send to this transformer (``GET /v2/models/{name}``), not what Triton takes."""
        return [_tensor_metadata(spec) for spec in self.declared_inputs]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [_tensor_metadata(spec) for spec in self.declared_outputs]

    async def infer(
        self, spec: ModelSpec, inputs: dict[str, Array], request_id: str, trace: RequestTrace | None = None
    ) -> dict[str, Array]:
        """Call the predictor through the batcher, split by ``max_batch_size``; outputs in request order."""
        names = [output.name for output in spec.outputs]
        chunks = split_batches(inputs, spec.max_batch_size)
        batcher = self.batcher
        try:
            if len(chunks) == 1:  # the common case, without gather's task
                parts = [await batcher.infer(spec, chunks[0], names, request_id, trace)]
            else:
                calls = (batcher.infer(spec, chunk, names, request_id, trace) for chunk in chunks)
                parts = await asyncio.gather(*calls)
        except PredictorError as exc:
            child(PREDICTOR_ERRORS, self.name, _ERROR_KINDS.get(type(exc), "bad_response")).inc()
            if isinstance(exc, PredictorUnavailableError):
                self._forget_spec()
            raise
        except RequestError:
            child(PREDICTOR_ERRORS, self.name, "rejected").inc()
            raise
        batch = batch_size(inputs) if spec.batched else 1
        return shape_outputs(join_batches(parts), spec, batch)


def decode_v1_document(document: dict[str, Any]) -> Envelope:
    """The envelope of an already parsed V1 document (in-process callers)."""
    return Envelope(instances_of(document))


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": [-1, *spec.shape]}
