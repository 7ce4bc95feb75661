"""Run the real ``tritonserver`` on a user's model repository: start, wait until ready, stop cleanly."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from kxform.errors import ModelLoadError, TritonServerError
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


@dataclass(frozen=True, slots=True)
class TritonPorts:
    """The three ports Triton listens on."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def _set_parent_death_signal() -> None:
    # Runs in the child before exec: if kxform dies without cleaning up, Linux kills Triton too.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
        self._process: subprocess.Popen[str] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=200)
        self._load_failures: dict[str, str] = {}
        self._reader: threading.Thread | None = None

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
        return self._process.pid if self._process else None

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
        self._process = subprocess.Popen(
            command,
            env=install.environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: we stop it and its Python stubs together
            preexec_fn=_set_parent_death_signal,
        )
        self._reader = threading.Thread(target=self._pump_log, name="triton-log", daemon=True)
        self._reader.start()

    def _pump_log(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._tail.append(line)
            match = _LOAD_FAILURE.search(line.rstrip())
            if match:
                self._load_failures[match["model"]] = load_failure_reason(match["reason"])
            with contextlib.suppress(ValueError, OSError):  # the stream may be closed at shutdown
                self._log.write(self._log_prefix + line)
                self._log.flush()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                self._raise_start_failure()
            if self._http_status("/v2/health/ready") == 200:
                return
            time.sleep(0.2)
        raise TritonServerError(
            f"Triton did not become ready within {self.startup_timeout:.0f}s; last log lines:\n"
            + "".join(list(self._tail)[-20:])
        )

    def _raise_start_failure(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)  # read the log to the end: the reasons are in it
        if self._load_failures:
            raise ModelLoadError(self._load_failures)
        code = self._process.returncode if self._process else None
        raise TritonServerError(
            f"tritonserver exited with status {code} before it was ready; last log lines:\n"
            + "".join(list(self._tail)[-20:])
        )

    def _http_status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def model_states(self) -> dict[str, str]:
        """Each model's state as Triton reports it (``READY``, ``UNAVAILABLE``, ...)."""
        request = urllib.request.Request(self.http_url + "/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            index = json.loads(response.read())
        return {entry["name"]: entry.get("state", "") for entry in index}

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self) -> int:
        """Block until Triton exits on its own; return its exit status."""
        assert self._process is not None
        return self._process.wait()

    @property
    def _shm_prefix(self) -> str:
        """The Python backend's /dev/shm regions of this Triton start with it (Triton's default names are shared)."""
        return f"kxform_triton_{os.getpid()}_{self.ports.http}_"

    def stop(self) -> None:
        """Stop Triton and every process it started, then remove the derived repository."""
        process, self._process = self._process, None
        if process is not None:
            self._terminate(process)
            # A Triton that had to be killed (or crashed) leaves its Python stubs' regions behind.
            for leftover in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    @staticmethod
    def _terminate(process: subprocess.Popen[str]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Triton unloads models and stops its stubs on SIGTERM
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=_STOP_GRACE_SECONDS)
        # Whatever is left in the group (a stub that outlived its server) goes now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

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
