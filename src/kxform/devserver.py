"""``kxform dev``: a real Triton and ``kxform serve`` side by side on localhost, with working curl lines.

Both run as child processes (``kxform triton`` and ``kxform serve``) under ``kxform.supervisor``, each in its
own process group so that Ctrl-C reaches only this process, which stops serve first and Triton second. Their logs are
streamed with a ``[triton]`` / ``[serve]`` prefix. Each plugin may offer an example request
(``Transformer.example_request``); it is written to a file and printed as a curl line, and offered by the
playground (``kxform.playground``), which this process serves on ``--playground_port``.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kxform.errors import KxformError
from kxform.playground import Playground
from kxform.supervisor import ProcessStartError, Supervised, http_ready

__all__ = ["DevServer", "DevSettings", "default_transformers"]

EXAMPLE_DISTRIBUTION_PREFIX = "kxform-example-"
_STOP_GRACE_SECONDS = 30.0  # kxform triton itself waits up to 15 s for Triton to unload its models


@dataclass(frozen=True, slots=True)
class DevSettings:
    model_repository: Path
    transformers: tuple[str, ...]
    http_port: int = 8080
    grpc_port: int = 8081
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    predictor_protocol: str = "v2"
    startup_timeout: float = 300.0
    playground_port: int = 8090


class DevError(KxformError):
    """``kxform dev`` cannot start: a port is taken, Triton or serve failed (one line for the user)."""


def default_transformers() -> tuple[str, ...]:
    """The example plugins that are installed: entry point NAME of distribution ``kxform-example-NAME``."""
    from kxform.plugins import discover

    return tuple(
        name
        for name, claims in discover().items()
        if any(info.distribution == EXAMPLE_DISTRIBUTION_PREFIX + name for info in claims)
    )


def _check_port_free(port: int, flag: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise DevError(f"port {port} is in use ({flag}); stop what listens there or pass another {flag}") from exc


def _child(name: str, command: list[str], out: IO[str]) -> Supervised:
    """A ``kxform`` child whose output is copied to ours, each line prefixed ``[name]``."""
    return Supervised(name, command, sink=out, prefix=f"[{name}] ")


def _reason(child: Supervised) -> str:
    """The line of the child's log that says why it failed: the last that names an error, or the last one."""
    for line in reversed(child.tail):
        if "error" in line.lower():
            return line.split("error: ", 1)[-1].strip()
    return child.tail[-1] if child.tail else "no output"


def _wait_ready(child: Supervised, url: str, timeout: float) -> None:
    try:
        child.wait_ready(http_ready(url), timeout)
    except ProcessStartError as exc:
        what = "exited" if exc.returncode is not None else f"was not ready after {timeout:.0f}s"
        raise DevError(f"{child.name} {what}: {_reason(child)}") from exc


class DevServer:
    """Triton on the repository, kxform serve in front; ``run`` blocks until Ctrl-C or a child exits."""

    def __init__(self, settings: DevSettings, out: IO[str] | None = None) -> None:
        self.settings = settings
        self.out = out or sys.stdout
        self._workdir = tempfile.TemporaryDirectory(prefix="kxform-dev-")
        kxform = [sys.executable, "-m", "kxform"]
        s = settings
        self.triton = _child(
            "triton",
            [
                *kxform,
                "triton",
                f"--model-repository={s.model_repository}",
                f"--http-port={s.triton_http_port}",
                f"--grpc-port={s.triton_grpc_port}",
                f"--metrics-port={s.triton_metrics_port}",
            ],
            self.out,
        )
        predictor_port = s.triton_grpc_port if s.predictor_protocol == "grpc-v2" else s.triton_http_port
        self.serve = _child(
            "serve",
            [
                *kxform,
                "serve",
                *(f"--transformer={t}" for t in s.transformers),
                f"--predictor_host=127.0.0.1:{predictor_port}",
                f"--predictor_protocol={s.predictor_protocol}",
                f"--http_port={s.http_port}",
                f"--grpc_port={s.grpc_port}",
                "--bind_address=127.0.0.1",
                "--server_timing",  # the playground shows each stage's time
            ],
            self.out,
        )
        self.playground: Playground | None = None

    def start(self) -> None:
        s = self.settings
        if not s.transformers:
            raise DevError("no transformer to serve: install the example plugins (make setup) or pass --transformer")
        if not (s.model_repository / ".").is_dir():
            raise DevError(f"model repository {s.model_repository} does not exist: run `make models`")
        for port, flag in (
            (s.http_port, "--http_port"),
            (s.grpc_port, "--grpc_port"),
            (s.triton_http_port, "--triton-http-port"),
            (s.triton_grpc_port, "--triton-grpc-port"),
            (s.triton_metrics_port, "--triton-metrics-port"),
            (s.playground_port, "--playground_port"),
        ):
            _check_port_free(port, flag)
        self.triton.start()
        _wait_ready(self.triton, f"http://127.0.0.1:{s.triton_http_port}/v2/health/ready", s.startup_timeout)
        self.serve.start()
        _wait_ready(self.serve, f"http://127.0.0.1:{s.http_port}/v2/health/ready", s.startup_timeout)
        self.playground = Playground(f"http://127.0.0.1:{s.http_port}", self._examples(), s.playground_port)
        self.playground.start()

    def banner(self) -> str:
        s = self.settings
        base = f"http://127.0.0.1:{s.http_port}"
        lines = [
            "",
            "kxform dev is ready",
            f"  transformer  {base}  (V1 /v1/models/NAME:predict, V2 /v2/models/NAME/infer)",
            f"               gRPC 127.0.0.1:{s.grpc_port}   metrics {base}/metrics",
            f"  triton       http://127.0.0.1:{s.triton_http_port}  gRPC 127.0.0.1:{s.triton_grpc_port}",
            f"  playground   http://127.0.0.1:{s.playground_port}/  (try a plugin in the browser)   "
            f"endpoints {base}/docs",
            "",
            "Try:",
        ]
        for name in s.transformers:
            lines.append(f"  curl -s {base}/v2/models/{name}")
            request = self._write_example(name)
            if request is not None:
                lines.append(f"  curl -s {base}/v1/models/{name}:predict -d @{request}")
        lines += ["", "Ctrl-C stops both.", ""]
        return "\n".join(lines)

    def _examples(self) -> dict[str, Any]:
        return {name: _example_request(name) for name in self.settings.transformers}

    def _write_example(self, name: str) -> Path | None:
        body = _example_request(name)
        if body is None:
            return None
        path = Path(self._workdir.name) / f"{name}.json"
        path.write_text(json.dumps(body))
        return path

    def wait(self) -> str:
        """Block until a child exits; return which one."""
        while True:
            for child in (self.triton, self.serve):
                if child.process is not None and not child.running():
                    return child.name
            time.sleep(0.5)

    def stop(self) -> None:
        if self.playground is not None:
            self.playground.stop()
        self.serve.stop(grace=_STOP_GRACE_SECONDS)
        self.triton.stop(grace=_STOP_GRACE_SECONDS)
        self._workdir.cleanup()


def _example_request(name: str) -> Any:
    """The plugin's example request, or None (it offers none, or it cannot be loaded here)."""
    from kxform.plugins import load_plugin

    try:
        return load_plugin(name).transformer.example_request()
    except Exception:  # a plugin's bug must not stop kxform dev: the curl line and playground go without it
        return None
