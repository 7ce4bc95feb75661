"""Prometheus metrics of the request path, served at ``/metrics``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = [
    "BATCH_QUEUE_SECONDS",
    "BATCH_SIZE",
    "PREDICTOR_ERRORS",
    "REQUESTS",
    "STAGE_SECONDS",
    "exposition",
    "stage",
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


@contextmanager
def stage(model: str, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(model, name).observe(time.perf_counter() - started)


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
