"""Test helpers for kxform and its plugins: real servers on free ports, as pytest fixtures.

Use from a plugin's tests with ``pytest_plugins = ["kxform.testing"]``. The ``triton`` fixture starts
``kxform triton`` (the real Triton binary) once per session on the repository named by
``KXFORM_MODEL_REPOSITORY`` or ``models/`` under the pytest root directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kxform.predictor import PredictorClient, PredictorSettings, create_predictor

__all__ = [
    "DEV_URL",
    "ServerProcess",
    "free_port",
    "model_repository",
    "predictor",
    "predictor_settings",
    "readme_curl_lines",
    "run_readme_curl",
    "start_serve",
    "start_triton",
    "triton",
]


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of ``GET url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@dataclass
class ServerProcess:
    """A ``kxform`` command running as its own process, its output collected in a file."""

    command: list[str]
    log_path: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    env: Mapping[str, str] | None = None  # added to this process's environment

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            env = {**os.environ, **self.env} if self.env is not None else None
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, path: str = "/v2/health/ready", timeout: float = 300.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[2:4]} exited with {self.process.returncode}:\n{self.log()}")
            if http_status(self.http_url + path) == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.command[2:4]} not ready after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and return the exit status; kill after ``timeout``."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def kxform_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kxform", *args]


def start_triton(
    repository: Path,
    log_dir: Path,
    extra: Sequence[str] = (),
    ports: dict[str, int] | None = None,
    wrapper: Sequence[str] = (),
) -> ServerProcess:
    """Start ``kxform triton`` (on free ports unless given) and wait until it is ready.

    ``wrapper`` runs it through another command, which gets the command line as its last arguments
    (``unshare ... sh -c '...; exec "$@"' sh``).
    """
    ports = ports or {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    triton = kxform_command(
        "triton",
        f"--model-repository={repository}",
        f"--http-port={ports['http']}",
        f"--grpc-port={ports['grpc']}",
        f"--metrics-port={ports['metrics']}",
        *extra,
    )
    command = [*wrapper, *triton]
    server = ServerProcess(command, log_dir / f"triton-{ports['http']}.log", ports)
    server.start()
    try:
        server.wait_ready()
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


def start_serve(
    transformers: Sequence[str],
    predictor_host: str,
    log_dir: Path,
    extra: Sequence[str] = (),
    wait: bool = True,
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start ``kxform serve`` on free ports in front of ``predictor_host`` (``env`` added to its environment);
    wait until it is ready."""
    ports = {"http": free_port(), "grpc": free_port()}
    command = kxform_command(
        "serve",
        *(f"--transformer={name}" for name in transformers),
        f"--predictor_host={predictor_host}",
        f"--http_port={ports['http']}",
        f"--grpc_port={ports['grpc']}",
        *extra,
    )
    server = ServerProcess(command, log_dir / f"serve-{ports['http']}.log", ports, env=env)
    server.start()
    try:
        server.wait_ready("/v2/health/ready" if wait else "/v2/health/live", timeout=120)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


DEV_URL = "http://127.0.0.1:8080"  # where `make dev` serves the transformers


def readme_curl_lines(readme: Path) -> list[str]:
    """The ``curl`` command lines of a README, as a user copies them."""
    return [line for line in readme.read_text().splitlines() if line.startswith("curl ")]


def run_readme_curl(line: str, server: ServerProcess, cwd: Path, timeout: float = 60) -> str:
    """Run a README curl line written for ``make dev`` against ``server`` (a free port); its stdout."""
    command = line.replace(DEV_URL, server.http_url)
    assert command != line, f"the README's curl line does not call {DEV_URL}: {line}"
    done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


@pytest.fixture(scope="session")
def model_repository(pytestconfig: pytest.Config) -> Path:
    """The example model repository built by ``make models``."""
    path = Path(os.environ.get("KXFORM_MODEL_REPOSITORY", pytestconfig.rootpath / "models"))
    if not (path / "cifar10" / "config.pbtxt").exists():
        pytest.fail(f"no model repository at {path}: run `make models` (make test does it for you)")
    return path


def predictor_settings(triton: ServerProcess, protocol: str, **overrides: Any) -> PredictorSettings:
    """Settings that reach ``triton`` over ``protocol`` ("v2" for HTTP, "grpc-v2")."""
    port = triton.ports["grpc" if protocol == "grpc-v2" else "http"]
    return PredictorSettings(f"127.0.0.1:{port}", protocol, **overrides)  # type: ignore[arg-type]


@pytest.fixture(params=[pytest.param("v2", id="http"), pytest.param("grpc-v2", id="grpc")])
async def predictor(request: pytest.FixtureRequest, triton: ServerProcess) -> AsyncIterator[PredictorClient]:
    """A predictor client on the session's Triton, once over HTTP and once over gRPC."""
    client = create_predictor(predictor_settings(triton, request.param))
    yield client
    await client.close()


@pytest.fixture(scope="session")
def triton(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``kxform triton`` serving the example repository for the whole session."""
    server = start_triton(model_repository, tmp_path_factory.mktemp("triton"))
    yield server
    with contextlib.suppress(Exception):
        server.stop()
