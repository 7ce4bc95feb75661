"""One child process under supervision: spawned in its own process group, waited on until ready, stopped cleanly.

``kxform dev``, ``kxform triton``, ``kxform.testing`` and the benchmark start their servers through
``Supervised``; it is the one place that decides how a child is started and stopped:

- spawn: its own process group (``start_new_session``), so a Ctrl-C in the terminal reaches only the parent,
  which stops its children in order; stdin closed; stdout and stderr merged into one stream that a thread
  reads line by line into a bounded tail, an optional log file, an optional sink (each line prefixed, as
  ``kxform dev`` prints ``[triton] ...``) and an optional callback (``kxform triton`` reads load failures).
- ready: ``wait_ready(check)`` polls ``check()`` until it is true; the child exiting first, or the deadline
  passing, raises ``ProcessStartError`` with the last lines of its log.
- stop: SIGTERM (or the given signal) to the child, ``grace`` seconds for it to exit, then SIGKILL to the
  whole group, so nothing it started outlives it (a Triton Python stub, a worker).

``kxform serve --workers`` supervises its forked workers itself (``kxform.workers``): they share one socket
and one lifetime, which is a different job.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from kxform.errors import KxformError

__all__ = ["ProcessStartError", "Supervised", "http_ready", "http_status"]

_TAIL_LINES = 200
_POLL_SECONDS = 0.2


class ProcessStartError(KxformError):
    """A supervised child exited before it was ready, or was not ready in time; the message ends with its log."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of ``GET url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness check: ``GET url`` answers 200."""
    return lambda: http_status(url) == 200


def _set_parent_death_signal() -> None:
    # Runs in the child before exec: if the parent dies without stopping it, Linux sends the child SIGTERM.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervised:
    """One command run as a child in its own process group; its output collected as it comes."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        sink: IO[str] | None = None,
        prefix: str = "",
        on_line: Callable[[str], None] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env) if env is not None else None  # the whole environment; None: inherit ours
        self.log_path = log_path
        self.sink = sink
        self.prefix = prefix
        self.on_line = on_line
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[str] | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Spawn the command. Its output goes straight to ``log_path`` when nothing else reads it (no thread, the
        file is as current as the child's own writes), else through a reader thread to each destination."""
        direct = self.log_path is not None and self.sink is None and self.on_line is None
        log = self.log_path.open("w", encoding="utf-8") if self.log_path is not None else None
        try:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log if direct else subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
                preexec_fn=_set_parent_death_signal if self.die_with_parent else None,
            )
        except BaseException:
            if log is not None:
                log.close()
            raise
        if direct:
            assert log is not None
            log.close()  # the child has its own copy of the descriptor
            return
        self._reader = threading.Thread(target=self._pump, args=(log,), name=f"{self.name}-log", daemon=True)
        self._reader.start()

    def _pump(self, log: IO[str] | None) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self.tail.append(line.rstrip("\n"))
                if log is not None:
                    log.write(line)
                    log.flush()
                if self.on_line is not None:
                    self.on_line(line.rstrip("\n"))
                if self.sink is not None:
                    with contextlib.suppress(ValueError, OSError):  # the sink may be closed at shutdown
                        self.sink.write(self.prefix + line)
                        self.sink.flush()
        finally:
            if log is not None:
                log.close()

    def drain(self, timeout: float = 5.0) -> None:
        """Wait for the log reader to reach the end of the output (after the child exited)."""
        if self._reader is not None:
            self._reader.join(timeout=timeout)

    def last_lines(self, count: int = 20) -> str:
        if self._reader is None and self.log_path is not None:  # written straight to the file
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-count:])
        return "\n".join(list(self.tail)[-count:])

    def wait_ready(self, check: Callable[[], bool], timeout: float) -> None:
        """Return once ``check()`` is true; raise ``ProcessStartError`` if the child exits first or time runs out."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.drain()
                raise ProcessStartError(
                    f"{self.name} exited with status {self.process.returncode} before it was ready; "
                    f"last lines of its log:\n{self.last_lines()}",
                    self.process.returncode,
                )
            if check():
                return
            time.sleep(_POLL_SECONDS)
        raise ProcessStartError(
            f"{self.name} was not ready after {timeout:.0f}s; last lines of its log:\n{self.last_lines()}"
        )

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child exits on its own; its exit status."""
        assert self.process is not None, "start() first"
        return self.process.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 30.0) -> int | None:
        """Send ``sig``, give the child ``grace`` seconds, then SIGKILL its process group; its exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        # Whatever is left in the group (a process the child started, or the child itself) goes now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.drain()
        return process.returncode
