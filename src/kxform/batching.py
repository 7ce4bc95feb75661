"""Cross-request batching: concurrent requests for one predictor model become one predictor call.

    TransformerModel.infer -> Batcher.infer(spec, rows, ...) -> queue of that model and input kind
      -> dispatched when the predictor is idle (next loop turn), when the call in flight returns,
         when the queue holds max_batch_size rows, or --batch_max_delay_us after its oldest request
      -> one concatenated call (through kxform.predictor.shm when the tensors go by shared memory)
      -> outputs split back by row, in order, to each waiting request

Adaptive, like the batchers of MLServer and BentoML but without a latency model: a request that finds
the predictor idle is sent on the next turn of the event loop (with whatever arrived in the same turn),
so under low load batching adds no delay; while a call is in flight, requests gather for at most the
delay bound, so under load batches fill. Only inputs of the same kind batch together: the same names,
datatypes and shapes after the batch axis (dynamic dims batch only with their like).

A request's own bad input was rejected before it got here (``kxform.tensors.assemble_inputs``). If the
predictor still rejects a batch of several requests (400), each is sent again alone, so one request's
input never fails the others; any other failure of the shared call fails every member with it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kxform import tracing
from kxform.errors import PredictorError, RequestError
from kxform.metrics import BATCH_QUEUE_SECONDS, BATCH_SIZE, child
from kxform.predictor import PredictorClient
from kxform.predictor.shm import SharedMemory
from kxform.spec import ModelSpec
from kxform.tensors import Array, batch_size, join_batches

if TYPE_CHECKING:
    from kxform.request_trace import RequestTrace

__all__ = ["DEFAULT_MAX_DELAY_US", "Batcher"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_DELAY_US = 2000
"""``--batch_max_delay_us``: chosen with ``make bench`` (see benchmarks/RESULTS.md and docs/architecture.md)."""

Kind = tuple[str, tuple[tuple[str, str, tuple[int, ...]], ...], tuple[str, ...]]


@dataclass(slots=True)
class _Member:
    """One request's rows, waiting to be sent."""

    inputs: Mapping[str, Array]
    rows: int
    request_id: str
    queued_at: float
    future: asyncio.Future[dict[str, Array]]
    trace: RequestTrace | None = None


@dataclass(slots=True)
class _Queue:
    """The waiting requests of one predictor model and input kind."""

    kind: Kind
    spec: ModelSpec
    outputs: tuple[str, ...]
    members: deque[_Member] = field(default_factory=deque)
    rows: int = 0
    in_flight: int = 0
    flush_soon: bool = False
    timer: asyncio.TimerHandle | None = None


class Batcher:
    """Shared by every transformer of a process that forwards to ``predictor``."""

    def __init__(
        self,
        predictor: PredictorClient,
        max_delay_us: int = DEFAULT_MAX_DELAY_US,
        shared_memory: SharedMemory | None = None,
    ) -> None:
        self.predictor = predictor
        self.shared_memory = shared_memory  # calls go through it when given (it chooses shm or the wire)
        self.max_delay = max_delay_us / 1e6
        self._queues: dict[Kind, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.max_delay > 0

    async def infer(
        self,
        spec: ModelSpec,
        inputs: Mapping[str, Array],
        outputs: Sequence[str],
        request_id: str,
        trace: RequestTrace | None = None,
    ) -> dict[str, Array]:
        """The predictor's outputs for ``inputs`` (at most ``max_batch_size`` rows), batched with others."""
        if not self.enabled or not spec.batched:
            rows = batch_size(inputs) if spec.batched else 1
            child(BATCH_SIZE, spec.name).observe(rows)
            if trace is not None:
                return await self._traced(spec, inputs, outputs, request_id, [trace], rows)
            return await self._forward(spec, inputs, outputs, request_id)
        queue = self._queue(spec, inputs, tuple(outputs))
        loop = asyncio.get_running_loop()
        rows = batch_size(inputs)
        member = _Member(inputs, rows, request_id, loop.time(), loop.create_future(), trace)
        queue.members.append(member)
        queue.rows += rows
        if queue.rows >= spec.max_batch_size:
            self._flush(queue, full_only=True)
        if queue.members:
            self._schedule(queue, loop)
        return await member.future

    async def _forward(
        self, spec: ModelSpec, inputs: Mapping[str, Array], outputs: Sequence[str], request_id: str
    ) -> dict[str, Array]:
        if self.shared_memory is not None:
            return await self.shared_memory.infer(spec, inputs, outputs, request_id)
        return await self.predictor.infer(spec.name, inputs, outputs, request_id)

    async def _traced(
        self,
        spec: ModelSpec,
        inputs: Mapping[str, Array],
        outputs: Sequence[str],
        request_id: str,
        traces: list[RequestTrace],
        rows: int,
    ) -> dict[str, Array]:
        """``_forward`` inside the spans of the call (one per request in it); the predictor clients send the
        first one's context to Triton (``tracing.CALL_HEADERS``)."""
        active = tracing.ACTIVE
        assert active is not None  # a request is traced only while tracing is on
        call = active.predictor_call(traces, spec.name, rows, self.predictor.settings.host)
        token = tracing.CALL_HEADERS.set(call.headers)
        try:
            result = await self._forward(spec, inputs, outputs, request_id)
        except BaseException as exc:
            call.end(exc)
            raise
        finally:
            tracing.CALL_HEADERS.reset(token)
        call.end(None)
        return result

    def _queue(self, spec: ModelSpec, inputs: Mapping[str, Array], outputs: tuple[str, ...]) -> _Queue:
        kind: Kind = (
            spec.name,
            tuple((name, array.dtype.str, array.shape[1:]) for name, array in inputs.items()),
            outputs,
        )
        queue = self._queues.get(kind)
        if queue is None or (queue.spec is not spec and queue.spec != spec):  # re-read after an outage
            queue = self._queues[kind] = _Queue(kind, spec, outputs)
        return queue

    def _schedule(self, queue: _Queue, loop: asyncio.AbstractEventLoop) -> None:
        if queue.in_flight == 0:
            if not queue.flush_soon:
                queue.flush_soon = True
                loop.call_soon(self._flush_now, queue)
        elif queue.timer is None:
            delay = queue.members[0].queued_at + self.max_delay - loop.time()
            queue.timer = loop.call_later(max(0.0, delay), self._flush_now, queue)

    def _flush_now(self, queue: _Queue) -> None:
        queue.flush_soon = False
        self._flush(queue, full_only=False)

    def _flush(self, queue: _Queue, *, full_only: bool) -> None:
        """Send the waiting requests in batches of at most ``max_batch_size`` rows (full ones only, if asked)."""
        limit = queue.spec.max_batch_size
        while queue.members and (queue.rows >= limit or not full_only):
            batch, rows = [], 0
            while queue.members and rows + queue.members[0].rows <= limit:
                member = queue.members.popleft()
                queue.rows -= member.rows
                if not member.future.done():  # a cancelled request is not sent
                    batch.append(member)
                    rows += member.rows
            if batch:
                self._dispatch(queue, batch)
        if not queue.members and queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None

    def _dispatch(self, queue: _Queue, batch: list[_Member]) -> None:
        loop = asyncio.get_running_loop()
        queue.in_flight += 1
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
        try:
            now = loop.time()
            rows = sum(member.rows for member in batch)
            child(BATCH_SIZE, queue.spec.name).observe(rows)
            now_ns = 0
            for member in batch:
                child(BATCH_QUEUE_SECONDS, queue.spec.name).observe(now - member.queued_at)
                if member.trace is not None:
                    now_ns = now_ns or time.time_ns()
                    queued_ns = now_ns - int((now - member.queued_at) * 1e9)  # the loop's clock on the wall's
                    member.trace.batch_wait(queued_ns, now_ns, rows, len(batch))
            task = loop.create_task(self._call(queue, batch))
        except BaseException as exc:  # the members left the queue: none may be left waiting
            queue.in_flight -= 1
            _fail(batch, exc)
            raise
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, queue: _Queue, batch: list[_Member]) -> None:
        try:
            await self._send(queue, batch)
        finally:
            queue.in_flight -= 1
            if queue.members:  # the predictor is free: send what gathered meanwhile
                self._flush(queue, full_only=False)
                if queue.members:
                    self._schedule(queue, asyncio.get_running_loop())
            elif queue.in_flight == 0 and self._queues.get(queue.kind) is queue:
                del self._queues[queue.kind]  # idle: dynamic shapes must not pile up queues

    async def _send(self, queue: _Queue, batch: list[_Member]) -> None:
        batch = [member for member in batch if not member.future.done()]  # cancelled meanwhile
        if not batch:
            return
        try:
            inputs = join_batches([member.inputs for member in batch])
            traces = [m.trace for m in batch if m.trace is not None] if tracing.ACTIVE is not None else None
            if traces:
                rows = sum(member.rows for member in batch)
                outputs = await self._traced(queue.spec, inputs, queue.outputs, batch[0].request_id, traces, rows)
            else:
                outputs = await self._forward(queue.spec, inputs, queue.outputs, batch[0].request_id)
            parts = _split(outputs, [member.rows for member in batch], queue.spec.name)
        except RequestError as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            # The batch was rejected; which member's input was it? Each alone finds out, and only it fails.
            logger.info("predictor rejected a batch of %d requests (%s); sending each alone", len(batch), exc.message)
            await asyncio.gather(*(self._send(queue, [member]) for member in batch))
            return
        except BaseException as exc:  # cancelled (shutdown) or anything else: every member learns of it
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for member, part in zip(batch, parts, strict=True):
            if not member.future.done():
                member.future.set_result(part)

    async def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the calls in flight (their requests are draining), then cancel the rest."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks:  # a call that returns may start the next batch: wait for those too
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                return
            await asyncio.wait(set(self._tasks), timeout=left)


def _fail(batch: list[_Member], exc: BaseException) -> None:
    for member in batch:
        if not member.future.done():
            if isinstance(exc, asyncio.CancelledError):
                member.future.cancel()
            else:
                member.future.set_exception(exc)


def _split(outputs: Mapping[str, Array], rows: list[int], model: str) -> list[dict[str, Array]]:
    """Each member's rows of every output (views); outputs must have the batch axis first."""
    total = sum(rows)
    if len(rows) == 1:
        return [dict(outputs)]
    shaped: dict[str, Array] = {}
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            if array.size % total:
                raise PredictorError(
                    f"output '{name}' of '{model}' has shape {list(array.shape)}: it cannot be split into the "
                    f"{total} rows of the batch sent"
                )
            array = array.reshape(total, -1)
        shaped[name] = array
    bounds = np.cumsum([0, *rows]).tolist()
    return [{name: array[start:end] for name, array in shaped.items()} for start, end in itertools.pairwise(bounds)]
