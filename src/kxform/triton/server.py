"""Run the real ``tritonserver`` on a user's model repository: start, wait until ready, stop cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from kxform.errors import ModelLoadError, TritonServerError
from kxform.supervisor import ProcessStartError, Supervised, http_ready
from kxform.triton.binary import TritonInstall, find_triton
from kxform.triton.repository import DerivedModel, derive_repository

__all__ = ["TritonPorts", "TritonServer"]

# Triton logs a load failure as: ... "failed to load 'cifar10' version 1: Internal: <reason>"
_LOAD_FAILURE = re.compile(r"failed to load '(?P<model>[^']+)' version \d+: (?P<reason>.*?)\"?$")
_STOP_GRACE_SECONDS = 15.0
# The Python backend reports an exception of model.py's initialize as "Internal: <Class>: <message>\n\nAt:\n<traceback>"
# (the newlines escaped in the log line); the adapter's own TritonModelException message is the whole reason.
_ADAPTER_PREFIX = "Internal: TritonModelException: "
_TRACEBACK = "\\n\\nAt:\\n"


def load_failure_reason(logged: str) -> str:
    """The reason of a load failure as Triton logged it, without the stub's traceback and wrapping."""
    reason = logged.split(_TRACEBACK, 1)[0]
    return reason.removeprefix(_ADAPTER_PREFIX)


# What Triton logs at start on a machine without a usable CUDA driver: nothing is wrong (the models run on the
# CPU), so these lines are replaced by one that says so.
_NO_CUDA_LINES = re.compile(
    r"CUDA driver version is insufficient|CudaDriverHelper has not been initialized|CUDA memory pool disabled"
    r"|Failed to (?:get|initialize) CUDA|cudaGetDeviceCount|no CUDA-capable device"
)
_NO_CUDA_NOTE = (
    "kxform triton: no usable CUDA driver here, so Triton serves the models on the CPU "
    "(its CUDA start-up warnings are left out)\n"
)


@dataclass(frozen=True, slots=True)
class TritonPorts:
    """The three ports Triton listens on."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


class TritonServer:
    """One ``tritonserver`` process serving a repository derived from ``model_repository``."""

    def __init__(
        self,
        model_repository: Path,
        ports: TritonPorts | None = None,
        *,
        address: str = "127.0.0.1",
        log: IO[str] | None = None,
        log_prefix: str = "",
        startup_timeout: float = 300.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.model_repository = Path(model_repository)
        self.ports = ports or TritonPorts()
        self.address = address
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self.models: list[DerivedModel] = []
        self._log = log if log is not None else sys.stderr
        self._log_prefix = log_prefix
        self._child: Supervised | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._load_failures: dict[str, str] = {}
        self._cuda_noted = False

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.ports.metrics}/metrics"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def start(self) -> None:
        """Derive the repository, start Triton, and return once it is ready (or raise why not)."""
        install = find_triton()
        self._workdir = tempfile.TemporaryDirectory(prefix="kxform-triton-")
        try:
            self._spawn(install, Path(self._workdir.name))
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, install: TritonInstall, workdir: Path) -> None:
        repository = workdir / "models"
        repository.mkdir()
        self.models = derive_repository(self.model_repository, repository)
        backends = install.prepare_backends(workdir / "backends")
        command = [
            str(install.binary),
            f"--model-repository={repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.address}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=10",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            *self.extra_args,
        ]
        self._child = Supervised(
            "tritonserver",
            command,
            env=install.environment(),
            on_line=self._read_line,
            die_with_parent=True,  # if kxform dies without stopping it, Linux stops Triton too
        )
        self._child.start()

    def _read_line(self, line: str) -> None:
        match = _LOAD_FAILURE.search(line)
        if match:
            self._load_failures[match["model"]] = load_failure_reason(match["reason"])
        if _NO_CUDA_LINES.search(line):
            if self._cuda_noted:
                return
            self._cuda_noted = True
            text = _NO_CUDA_NOTE
        else:
            text = line + "\n"
        with contextlib.suppress(ValueError, OSError):  # the stream may be closed at shutdown
            self._log.write(self._log_prefix + text)
            self._log.flush()

    def _wait_ready(self) -> None:
        assert self._child is not None
        try:
            self._child.wait_ready(http_ready(self.http_url + "/v2/health/ready"), self.startup_timeout)
        except ProcessStartError as exc:
            if self._load_failures:
                raise ModelLoadError(self._load_failures) from exc
            raise TritonServerError(exc.message) from exc

    def model_states(self) -> dict[str, str]:
        """Each model's state as Triton reports it (``READY``, ``UNAVAILABLE``, ...)."""
        request = urllib.request.Request(self.http_url + "/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            index = json.loads(response.read())
        return {entry["name"]: entry.get("state", "") for entry in index}

    def is_running(self) -> bool:
        return self._child is not None and self._child.running()

    def wait(self) -> int:
        """Block until Triton exits on its own; return its exit status."""
        assert self._child is not None
        return self._child.wait()

    @property
    def _shm_prefix(self) -> str:
        """The Python backend's /dev/shm regions of this Triton start with it (Triton's default names are shared)."""
        return f"kxform_triton_{os.getpid()}_{self.ports.http}_"

    def stop(self) -> None:
        """Stop Triton and every process it started, then remove the derived repository."""
        child, self._child = self._child, None
        if child is not None:
            child.stop(signal.SIGTERM, grace=_STOP_GRACE_SECONDS)  # Triton unloads models and stops its stubs
            # A Triton that had to be killed (or crashed) leaves its Python stubs' regions behind.
            for leftover in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
