"""The load generator: wrk (Debian's package) with a Lua script that POSTs a prebuilt body."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from .payloads import Payload

__all__ = ["Load", "LoadResult", "Reply", "require_wrk", "run_wrk", "send_once"]

SCRIPT = Path(__file__).with_name("post.lua")
_MARKER = "KXFORM_WRK_JSON "


@dataclass(frozen=True, slots=True)
class Load:
    """How wrk drives one run: connections, duration, wrk threads, timeout."""

    connections: int = 8
    duration_s: float = 10.0
    threads: int = 1  # one wrk thread drives 64 connections easily and leaves the 2 cores to the servers
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What wrk measured: completed requests, errors of every kind, latency percentiles."""

    requests: int  # completed responses, whatever their status
    duration_s: float
    errors: int  # responses with status >= 400, plus connect, read, write errors and timeouts
    failed_responses: int  # responses with status >= 400
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        """Successful requests per second (responses with status >= 400 do not count)."""
        return (self.requests - self.failed_responses) / self.duration_s


def require_wrk() -> str:
    """The path of ``wrk``, or a SystemExit that says how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does it for you)")
    return path


def _parse(stdout: str) -> LoadResult:
    line = next((line for line in stdout.splitlines() if line.startswith(_MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{stdout}")
    raw = json.loads(line.removeprefix(_MARKER))
    # A response with status >= 400 counts in "requests" and in "status"; the other errors in neither.
    errors = sum(int(raw[kind]) for kind in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        errors=errors,
        failed_responses=int(raw["status"]),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
    )


def _command(base_url: str, payload: Payload, load: Load, body_file: Path) -> list[str]:
    return [
        require_wrk(),
        f"--threads={load.threads}",
        f"--connections={load.connections}",
        f"--duration={load.duration_s:g}s",
        f"--timeout={load.timeout_s:g}s",
        f"--script={SCRIPT}",
        base_url + payload.path,
        "--",
        str(body_file),
        payload.content_type,
        "" if payload.header_length is None else str(payload.header_length),
    ]


def run_wrk(base_url: str, payload: Payload, load: Load) -> LoadResult:
    """Drive ``base_url`` with ``payload`` for ``load.duration_s`` and return what wrk measured."""
    with tempfile.NamedTemporaryFile(prefix="kxform-bench-", suffix=".body") as body_file:
        body_file.write(payload.body)
        body_file.flush()
        command = _command(base_url, payload, load, Path(body_file.name))
        completed = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=load.duration_s + load.timeout_s + 30
        )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk exited with {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return _parse(completed.stdout)


@dataclass(frozen=True, slots=True)
class Reply:
    """One response: status, body and, for a V2 binary body, the length of its JSON header."""

    status: int
    body: bytes
    header_length: int | None


def _header_length(headers: Message) -> int | None:
    value = headers.get("Inference-Header-Content-Length")
    return None if value is None else int(value)


def send_once(base_url: str, payload: Payload, timeout_s: float = 60.0) -> Reply:
    """One request with ``payload`` (checked before the load starts)."""
    request = urllib.request.Request(base_url + payload.path, data=payload.body, headers=payload.headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Reply(int(response.status), bytes(response.read()), _header_length(response.headers))
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), None)
