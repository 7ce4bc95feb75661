"""Prometheus metrics of the request path, served by kserve's ``/metrics`` (the default registry)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

__all__ = ["PREDICTOR_ERRORS", "REQUESTS", "STAGE_SECONDS", "stage"]

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


@contextmanager
def stage(model: str, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(model, name).observe(time.perf_counter() - started)
