"""``kxform dev``'s playground: a page to try the served plugins, served by the dev server (never by ``kxform serve``).

    GET  /                the page (index.html beside this module: plain HTML and JavaScript, nothing fetched)
    GET  /api/plugins     the transformers served, each with its example request
    POST /api/send        {"model", "protocol": "v1"|"v2", "body"} -> forwarded to kxform serve, answered with
                          status, the reply, its x-request-id, the per-stage timings (its Server-Timing
                          header: kxform dev runs serve with --server_timing) and the equivalent curl line

A stdlib ``ThreadingHTTPServer`` on its own thread in the ``kxform dev`` process; only 127.0.0.1 is bound.
"""

from __future__ import annotations

import json
import shlex
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any

__all__ = ["Playground", "curl_line", "parse_server_timing"]

_MAX_BODY_BYTES = 64 * 1024 * 1024


def parse_server_timing(header: str) -> list[dict[str, Any]]:
    """``decode;dur=0.120, preprocess;dur=1.5`` -> ``[{"stage": "decode", "ms": 0.12}, ...]``."""
    timings = []
    for entry in header.split(","):
        name, _, parameters = entry.strip().partition(";")
        duration = next((p.split("=", 1)[1] for p in parameters.split(";") if p.strip().startswith("dur=")), None)
        if name and duration is not None:
            timings.append({"stage": name, "ms": float(duration)})
    return timings


def curl_line(url: str, body: str) -> str:
    """The curl command that sends ``body`` (JSON) to ``url`` as the playground did."""
    return f"curl -s {shlex.quote(url)} -H 'content-type: application/json' -d {shlex.quote(body)}"


def endpoint(base: str, model: str, protocol: str) -> str:
    if protocol == "v2":
        return f"{base}/v2/models/{model}/infer"
    if protocol == "v1":
        return f"{base}/v1/models/{model}:predict"
    raise ValueError(f"protocol {protocol!r}: use v1 or v2")


class Playground:
    """The page and its API in front of the ``kxform serve`` at ``base_url``."""

    def __init__(self, base_url: str, examples: Mapping[str, Any], port: int, host: str = "127.0.0.1") -> None:
        self.base_url = base_url
        self.examples = dict(examples)
        self._host = host
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="playground", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._server.server_address[1]}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def plugins(self) -> dict[str, Any]:
        return {"transformer": self.base_url, "plugins": [{"name": n, "example": e} for n, e in self.examples.items()]}

    def send(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Forward one request to kxform serve; what the page shows of its answer."""
        model, protocol = str(request.get("model", "")), str(request.get("protocol", "v1"))
        if model not in self.examples:
            raise ValueError(f"model {model!r} is not served here; pick one of {', '.join(self.examples)}")
        url = endpoint(self.base_url, model, protocol)
        body = request.get("body", "")
        text = body if isinstance(body, str) else json.dumps(body)
        status, headers, reply = _post(url, text.encode())
        try:
            shown: Any = json.loads(reply)
        except ValueError:
            shown = reply.decode("utf-8", "replace")
        return {
            "status": status,
            "request_id": headers.get("x-request-id", ""),
            "timings": parse_server_timing(headers.get("server-timing", "")),
            "response": shown,
            "curl": curl_line(url, text),
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        playground = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/":
                    page = files("kxform.playground").joinpath("index.html").read_bytes()
                    self._reply(200, page, "text/html; charset=utf-8")
                elif self.path == "/api/plugins":
                    self._json(200, playground.plugins())
                else:
                    self._json(404, {"error": f"no page {self.path[:100]}; the playground is at /"})

            def do_POST(self) -> None:
                if self.path != "/api/send":
                    self._json(404, {"error": f"no route {self.path[:100]}; POST /api/send"})
                    return
                size = int(self.headers.get("content-length") or 0)
                if size > _MAX_BODY_BYTES:
                    self._json(413, {"error": f"body of {size} bytes is over {_MAX_BODY_BYTES}"})
                    return
                try:
                    request = json.loads(self.rfile.read(size))
                    if not isinstance(request, dict):
                        raise ValueError("send a JSON object with model, protocol and body")
                    self._json(200, playground.send(request))
                except ValueError as exc:
                    self._json(400, {"error": str(exc)})
                except OSError as exc:
                    self._json(502, {"error": f"kxform serve at {playground.base_url} did not answer: {exc}"})

            def _json(self, status: int, value: Any) -> None:
                self._reply(status, json.dumps(value).encode(), "application/json")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # kxform serve logs the requests
                pass

        return Handler


def _post(url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return int(reply.status), {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
