"""``GET /docs`` of ``kxform serve``: the transformer's own endpoints, per served model, as one HTML page.

What a client of this transformer can call (not Triton's API behind it): the V1 and V2 inference routes,
metadata, health and metrics, each model's declared input and output tensors, and a curl line. Plain
HTML, nothing fetched from elsewhere.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["ENDPOINTS", "docs_page"]

ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    (
        "POST",
        "/v1/models/{model}:predict",
        'V1: {"instances": [...]} (JSON of any Content-Type), a raw image, gzip, CloudEvents',
    ),
    ("POST", "/v2/models/{model}/infer", "V2 REST inference: JSON or binary tensors (Inference-Header-Content-Length)"),
    ("GET", "/v2/models/{model}", "V2 model metadata: the tensors this transformer takes and returns"),
    ("GET", "/v2/models/{model}/ready", "200 when the predictor model is ready, else 503"),
    ("GET", "/v1/models/{model}", "V1 model status"),
    ("GET", "/v1/models", "the served models"),
    ("GET", "/v2", "server metadata"),
    ("GET", "/v2/health/live", "liveness"),
    ("GET", "/v2/health/ready", "readiness: every transformer's predictor is ready"),
    ("GET", "/metrics", "Prometheus metrics (kxform_*)"),
)
GRPC_METHODS = (
    "inference.GRPCInferenceService: ModelInfer, ModelMetadata, ModelReady, ServerLive, ServerReady, ServerMetadata"
)


def _tensors(tensors: Sequence[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td><code>{html.escape(t['name'])}</code></td><td>{html.escape(t['datatype'])}</td>"
        f"<td>{html.escape(str(t['shape']))}</td></tr>"
        for t in tensors
    )
    return f"<table><tr><th>name</th><th>datatype</th><th>shape</th></tr>{rows}</table>" if rows else "<p>(any)</p>"


def _model_section(metadata: dict[str, Any], host: str) -> str:
    name = html.escape(metadata["name"])
    endpoints = "".join(
        f"<tr><td>{method}</td><td><code>{html.escape(path.replace('{model}', metadata['name']))}</code></td>"
        f"<td>{html.escape(what)}</td></tr>"
        for method, path, what in ENDPOINTS
        if "{model}" in path
    )
    curl = f"curl -s {host}/v2/models/{metadata['name']}"
    return (
        f"<h2 id='{name}'>{name}</h2><table>{endpoints}</table>"
        f"<h3>inputs</h3>{_tensors(metadata['inputs'])}<h3>outputs</h3>{_tensors(metadata['outputs'])}"
        f"<pre>{html.escape(curl)}</pre>"
    )


def docs_page(models: Sequence[dict[str, Any]], host: str) -> bytes:
    """The page, for the models' V2 metadata (``front.http.metadata_of``) and the ``Host`` they were asked on."""
    server = "".join(
        f"<tr><td>{m}</td><td><code>{html.escape(p)}</code></td><td>{html.escape(w)}</td></tr>"
        for m, p, w in ENDPOINTS
        if "{model}" not in p
    )
    body = "".join(_model_section(metadata, host) for metadata in models)
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>kxform endpoints</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}td,th{padding:.2rem .8rem;"
        "text-align:left;border-bottom:1px solid #ddd}table{border-collapse:collapse}pre{background:#f5f5f5;"
        "padding:.5rem}</style></head><body><h1>kxform: this transformer's endpoints</h1>"
        f"<p>gRPC: <code>{html.escape(GRPC_METHODS)}</code></p><table>{server}</table>{body}</body></html>"
    )
    return page.encode()
