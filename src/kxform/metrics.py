"""Prometheus metrics of the request path, served at ``/metrics``."""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

if TYPE_CHECKING:
    from kxform.request_trace import RequestTrace

__all__ = [
    "BATCH_QUEUE_SECONDS",
    "BATCH_SIZE",
    "PREDICTOR_ERRORS",
    "REQUESTS",
    "STAGE_SECONDS",
    "child",
    "exposition",
    "stage",
    "stage_of",
]

# Stages: decode, preprocess, predictor, postprocess, encode.
STAGE_SECONDS = Histogram(
    "kxform_stage_seconds",
    "Time spent in each stage of a request",
    ["model", "stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REQUESTS = Counter(
    "kxform_requests_total", "Requests by model, protocol and status code", ["model", "protocol", "code"]
)
PREDICTOR_ERRORS = Counter(
    "kxform_predictor_errors_total",
    "Predictor failures by kind (unavailable, timeout, bad_response, rejected)",
    ["model", "kind"],
)

BATCH_SIZE = Histogram(
    "kxform_batch_size",
    "Rows (instances) per predictor call, after cross-request batching",
    ["model"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256),
)
BATCH_QUEUE_SECONDS = Histogram(
    "kxform_batch_queue_seconds",
    "Time a request waited to be sent in a batch (predictor model)",
    ["model"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
)


_children: dict[tuple[object, tuple[str, ...]], Any] = {}


def child(metric: MetricWrapperBase, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: label values here are bounded (models, stages, codes)."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


class _Stage:
    """Times the block into ``kxform_stage_seconds`` and, for a traced request, into its trace (a span, a
    Server-Timing entry). A class: cheaper than a generator per use; untraced, the trace costs a None check."""

    __slots__ = ("_histogram", "_name", "_opened", "_started", "_trace")

    def __init__(self, histogram: Any, name: str, trace: RequestTrace | None) -> None:
        self._histogram = histogram
        self._name = name
        self._trace = trace
        self._opened: Any = None
        self._started = 0.0

    def __enter__(self) -> None:
        if self._trace is not None:
            self._opened = self._trace.enter_stage(self._name)
        self._started = time.perf_counter()

    def __exit__(self, exc_type: object, exc: BaseException | None, traceback: object) -> None:
        seconds = time.perf_counter() - self._started
        self._histogram.observe(seconds)
        if exc is not None:
            _mark_stage(exc, self._name)
        if self._trace is not None:
            self._trace.exit_stage(self._opened, self._name, seconds, exc)


def stage(model: str, name: str, trace: RequestTrace | None = None) -> _Stage:
    return _Stage(child(STAGE_SECONDS, model, name), name, trace)


_STAGE_ATTRIBUTE = "kxform_stage"


def _mark_stage(exc: BaseException, name: str) -> None:
    """Remember the innermost stage ``exc`` left: the stage its request failed in (the first one marks it)."""
    if getattr(exc, _STAGE_ATTRIBUTE, None) is None:
        with contextlib.suppress(AttributeError, TypeError):  # a type without a __dict__: no stage known
            setattr(exc, _STAGE_ATTRIBUTE, name)


def stage_of(exc: BaseException) -> str:
    """The stage a request failed in (see ``_mark_stage``), or its cause's; "request" outside every stage."""
    for error in (exc, exc.__cause__):
        found = getattr(error, _STAGE_ATTRIBUTE, None)
        if found is not None:
            return str(found)
    return "request"


def exposition() -> tuple[bytes, str]:
    """``/metrics``: this process's metrics, or with ``--workers N`` the sum over every worker.

    The supervisor (``kxform.workers``) sets ``PROMETHEUS_MULTIPROC_DIR`` before its workers start, so
    their metrics live in files there and any worker can read them all.
    """
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in the wheel
    return generate_latest(registry), CONTENT_TYPE_LATEST
