"""The bounded worker pool that keeps heavy decoding and preprocessing off the event loop.

Small requests run inline (a thread hand-off costs more than decoding a 32x32 PNG); a request whose
body exceeds ``--inline_max_bytes``, or whose work turns out large once a codec has looked inside
(an image of more than ``INLINE_MAX_PIXELS``, a long text), runs on one of ``--worker_threads``
threads. At most ``--worker_queue`` requests wait for a thread; past that the request is refused
with 503 and ``Retry-After`` rather than queued without bound.

A codec asks ``require_worker(cost, what)`` before expensive work. On the event loop, inside
``inline_attempt()``, that raises ``NeedsWorker``, and the caller runs the whole step again in the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, TypeVar

from kxform.errors import OverloadedError

__all__ = [
    "INLINE_MAX_PIXELS",
    "INLINE_MAX_TEXT_BYTES",
    "NeedsWorker",
    "WorkerPool",
    "inline_attempt",
    "require_worker",
]

T = TypeVar("T")

INLINE_MAX_PIXELS: Final = 1_000_000  # decoding + resizing a megapixel image takes a few ms
INLINE_MAX_TEXT_BYTES: Final = 16 * 1024

_inline: contextvars.ContextVar[bool] = contextvars.ContextVar("kxform_inline", default=False)


class NeedsWorker(BaseException):  # a signal between codec and pool, not an error anyone sees
    """Raised by ``require_worker`` during an inline attempt: run this step on the worker pool instead.

    A ``BaseException``, like ``asyncio.CancelledError``, so that a plugin's ``except Exception`` around
    its decoding does not turn the signal into an error.
    """


@contextlib.contextmanager
def inline_attempt() -> Iterator[None]:
    """Mark the block as running on the event loop: codecs' ``require_worker`` may escalate."""
    token = _inline.set(True)
    try:
        yield
    finally:
        _inline.reset(token)


def require_worker(cost: int, budget: int) -> None:
    """Escalate to the worker pool when ``cost`` exceeds ``budget`` and the caller is on the event loop."""
    if cost > budget and _inline.get():
        raise NeedsWorker


class WorkerPool:
    """``threads`` worker threads and at most ``queue`` requests waiting for one."""

    def __init__(self, threads: int, queue: int) -> None:
        self.threads = threads
        self.queue = queue
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kxform-worker")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting; released when the thread finishes, even if the caller left

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self.threads + self.queue:
                raise OverloadedError(
                    f"all {self.threads} worker threads are busy and {self.queue} requests wait for one; "
                    "retry shortly (--worker_threads, --worker_queue)",
                    retry_after=1,
                )
            self._admitted += 1

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._admitted -= 1

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on a worker thread, with the caller's context variables."""
        self._admit()
        context = contextvars.copy_context()
        try:
            future = self._executor.submit(context.run, _on_worker, functools.partial(function, *args))
        except BaseException:
            with self._lock:
                self._admitted -= 1
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Stop taking work; running calls finish, waiting ones are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _on_worker(call: Callable[[], T]) -> T:
    _inline.set(False)  # a copied context may carry the caller's inline flag
    return call()
