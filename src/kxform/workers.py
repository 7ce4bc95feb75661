"""``kxform serve``: one serving process, or with ``--workers N`` N of them on the same ports, supervised.

    serve(settings) -> 1 worker: kxform.server.serve_process here (--server kserve: kxform.front.kserve's)
    supervise(settings)
      -> HTTP port bound here (a port in use fails now, in one line; workers listen); gRPC port checked
      -> Prometheus multiprocess directory (every worker's /metrics shows the sum of all workers)
      -> N children (spawned: no plugin, torch or thread is ever forked), each serve_process(settings,
         the listening socket) sharing the gRPC port through SO_REUSEPORT
      -> a worker that dies is replaced (after a pause that grows while replacements keep dying young);
         a first worker that dies before it served stops them all (a plugin that cannot load will not
         load the second time either): exit 1
      -> SIGTERM/SIGINT: SIGTERM to every worker, each drains its requests; exit 0

The supervisor imports neither kserve nor a plugin and serves nothing itself: it stays small, and a
bug in a request cannot take it down. Workers die with it (``PR_SET_PDEATHSIG``), so a killed supervisor leaves no
orphan holding the ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from types import FrameType

from kxform.logs import configure_logging
from kxform.settings import ServeSettings, available_cpus

__all__ = ["serve", "supervise"]

logger = logging.getLogger(__name__)
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_STOP_GRACE_SECONDS = 20.0  # a worker drains for up to 10 s (kxform.server) before it is killed
_RESTART_PAUSE_SECONDS = 1.0  # before replacing a worker that died young; doubles each time, up to:
_RESTART_PAUSE_MAX_SECONDS = 30.0
_YOUNG_SECONDS = 10.0  # a worker that served longer than this was not crash-looping
_READY = b"ready"


@dataclass
class _Worker:
    index: int
    process: SpawnProcess
    ready: Connection  # the worker writes one message on it once it serves
    started_at: float
    replacement: bool  # False for the first worker of its index: dying before serving then is fatal

    def has_served(self) -> bool:
        try:
            return self.ready.poll() and self.ready.recv_bytes() == _READY
        except (EOFError, OSError):  # it exited before writing
            return False


def serve(settings: ServeSettings) -> int:
    """Serve until SIGINT/SIGTERM, then drain; the exit status."""
    if settings.server == "kserve":  # one process: settings refuse --workers N with it
        from kxform.front import kserve

        kserve.serve_process(settings)
        return 0
    if settings.workers == 1:
        from kxform.server import serve_process

        serve_process(settings)
        return 0
    return supervise(settings)


def supervise(settings: ServeSettings) -> int:
    """Run ``settings.workers`` serving processes until SIGTERM/SIGINT; the exit status of the group."""
    cpus = available_cpus()
    if settings.workers > cpus:
        logger.warning(
            "kxform serve: %d workers on %d CPUs: each worker holds its own plugins (memory) and they share the "
            "CPUs; --workers auto starts one per CPU",
            settings.workers,
            cpus,
        )
    http_socket = _bind(settings.bind_address, settings.http_port)
    if settings.enable_grpc:
        _check_free(settings.bind_address, settings.grpc_port, "--grpc_port")
    metrics_dir = tempfile.mkdtemp(prefix="kxform-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = metrics_dir  # the children inherit it; set before any of them starts
    supervisor = _Supervisor(settings, http_socket)
    try:
        return supervisor.run()
    finally:
        http_socket.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Supervisor:
    def __init__(self, settings: ServeSettings, http_socket: socket.socket) -> None:
        self.settings = replace(settings, workers=1)  # what each child runs
        self.count = settings.workers
        self.http_socket = http_socket
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, _Worker] = {}
        self.stopping = False
        self.wakeup_reader, self.wakeup_writer = socket.socketpair()
        self.wakeup_writer.setblocking(False)
        self.young_deaths = 0

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for index in range(self.count):
                if not self.stopping:
                    self._start(index, replacement=False)
            logger.info(
                "kxform serve: %d workers on HTTP %s:%d (supervisor pid %d)",
                self.count,
                self.settings.bind_address,
                self.settings.http_port,
                os.getpid(),
            )
            return self._watch()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.wakeup_reader.close()
            self.wakeup_writer.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            self.wakeup_writer.send(b"\0")

    def _start(self, index: int, *, replacement: bool) -> None:
        # A pipe, not a multiprocessing Event: an Event is a named semaphore in /dev/shm, which outlives a
        # supervisor killed with its resource tracker.
        ready, ready_writer = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_main,
            args=(self.settings, self.http_socket, ready_writer, index, os.getpid()),
            name=f"kxform-worker-{index}",
        )
        process.start()
        ready_writer.close()  # the child holds its own copy: its exit closes the pipe
        self.workers[index] = _Worker(index, process, ready, time.monotonic(), replacement)
        logger.info("worker %d started (pid %s)", index, process.pid)

    def _watch(self) -> int:
        while not self.stopping:
            sentinels = {worker.process.sentinel: worker for worker in self.workers.values()}
            ready = multiprocessing.connection.wait([*sentinels, self.wakeup_reader])
            for item in ready:
                worker = sentinels.get(item) if isinstance(item, int) else None  # else: the wakeup socket
                if worker is None or self.stopping:
                    continue
                status = self._reap(worker)
                if status is not None:
                    return status
        return 0

    def _reap(self, worker: _Worker) -> int | None:
        """A worker exited on its own: replace it, or (if it never served) give up with its status."""
        worker.process.join()
        code = worker.process.exitcode
        _mark_dead(worker.process.pid)
        del self.workers[worker.index]
        served = worker.has_served()
        worker.ready.close()
        if not served and not worker.replacement:
            logger.error(
                "worker %d (pid %s) exited with status %s before serving; stopping",
                worker.index,
                worker.process.pid,
                code,
            )
            return 1
        young = time.monotonic() - worker.started_at < _YOUNG_SECONDS
        self.young_deaths = self.young_deaths + 1 if young else 0
        pause = min(_RESTART_PAUSE_MAX_SECONDS, _RESTART_PAUSE_SECONDS * 2 ** (self.young_deaths - 1)) if young else 0
        logger.error(
            "worker %d (pid %s) exited with status %s; starting another%s",
            worker.index,
            worker.process.pid,
            code,
            f" in {pause:g}s" if pause else "",
        )
        if pause:
            multiprocessing.connection.wait([self.wakeup_reader], timeout=pause)  # a stop signal ends the pause
        if not self.stopping:
            self._start(worker.index, replacement=True)
        return None

    def _stop_all(self) -> None:
        self.http_socket.close()  # once the workers close theirs, new connections are refused, not queued
        for worker in self.workers.values():
            if worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for worker in self.workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                logger.error(
                    "worker %d (pid %s) did not stop within %gs; killed",
                    worker.index,
                    worker.process.pid,
                    _STOP_GRACE_SECONDS,
                )
                worker.process.kill()
                worker.process.join()
        for worker in self.workers.values():
            worker.ready.close()
        self.workers.clear()
        logger.info("kxform serve: all workers stopped")


def _worker_main(
    settings: ServeSettings, http_socket: socket.socket, ready: Connection, index: int, parent: int
) -> None:
    """A child: die with the supervisor, Ctrl-C is the supervisor's to handle, then serve."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from kxform import kserve_import

    kserve_import.load()  # before kxform.server imports kserve: a worker's sys.argv is the supervisor's
    from kxform.server import serve_process

    configure_logging(settings.log_level, settings.log_format)
    serve_process(settings, http_socket, on_ready=lambda: ready.send_bytes(_READY))


def _die_with_parent(parent: int) -> None:
    name = ctypes.util.find_library("c")
    if name is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux); elsewhere not available
    # The supervisor died before prctl took effect (it may itself be PID 1 in a container: compare pids).
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _mark_dead(pid: int | None) -> None:
    from prometheus_client import multiprocess

    if pid is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # untyped in the wheel


def _bind(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound but not listening: the first worker that can serve starts listening on it
    (uvicorn's create_server does), so no connection is accepted into a queue before a worker serves."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"kxform serve: error: cannot listen on {host}:{port} (--http_port): {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _check_free(host: str, port: int, flag: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is not "in use"
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"kxform serve: error: cannot listen on {host}:{port} ({flag}): {exc.strerror}") from None
