"""``kxform serve``: the plugins as ``TransformerModel``s behind kxform's own HTTP and gRPC fronts.

    serve_process (one process; kxform.workers.serve runs N of them for --workers N)
      -> limits configured -> plugins loaded (errors name the entry point)
      -> one event loop: uvicorn running kxform.front.http.HttpFront, grpc.aio running GrpcFront
      -> SIGTERM/SIGINT: stop accepting, finish in-flight requests (and their batches), close the predictor

Only the serving endpoints are exposed (no kserve model repository API unless asked for); see
``docs/architecture.md`` for a request's path through the modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import uvicorn

from kxform import limits, tracing
from kxform.batching import Batcher
from kxform.front.grpc import GrpcFront, server_options
from kxform.front.http import HttpFront
from kxform.front.protocol import BoundedHttpToolsProtocol
from kxform.model import TransformerModel
from kxform.offload import WorkerPool
from kxform.plugins import load_plugin
from kxform.predictor import PredictorClient, create_predictor
from kxform.predictor.shm import SharedMemory
from kxform.registry import Registry
from kxform.settings import ServeSettings

__all__ = ["GRACE_SECONDS", "Shared", "serve_process"]

logger = logging.getLogger(__name__)
GRACE_SECONDS = 10.0  # in-flight requests finish within it, on either front


@dataclass(frozen=True, slots=True)
class Shared:
    """What every transformer of a process shares: one predictor client, shared memory, worker pool, batcher."""

    settings: ServeSettings
    predictor: PredictorClient
    shared_memory: SharedMemory
    pool: WorkerPool
    batcher: Batcher

    @classmethod
    def create(cls, settings: ServeSettings, predictor: PredictorClient | None = None) -> Shared:
        predictor = predictor or create_predictor(settings.predictor)  # one connection pool per process
        shared_memory = SharedMemory(predictor)
        pool = WorkerPool(settings.worker_threads, settings.worker_queue)
        batcher = Batcher(predictor, settings.batch_max_delay_us, shared_memory)
        return cls(settings, predictor, shared_memory, pool, batcher)

    async def close(self) -> None:
        """After the fronts have drained: the calls in flight finish, then regions, connections, threads go."""
        await self.batcher.close(timeout=GRACE_SECONDS)
        await self.shared_memory.close()
        await self.predictor.close()
        self.pool.shutdown()

    def model(self, name: str, plugin: str) -> TransformerModel:
        return TransformerModel(
            name,
            load_plugin(plugin),
            self.predictor,
            pool=self.pool,
            inline_max_bytes=self.settings.inline_max_bytes,
            batcher=self.batcher,
        )


class _Server(uvicorn.Server):
    """uvicorn's server, exiting 0 on SIGTERM (uvicorn re-raises the signal) and telling when it serves.

    A worker of ``--workers N`` handles SIGTERM only: Ctrl-C reaches the whole process group, and the
    supervisor turns it into one SIGTERM per worker (a second signal would make uvicorn stop at once).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        signals: tuple[int, ...],
        on_ready: Callable[[], None],
        on_stop: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self.stop_signals = signals
        self.on_ready = on_ready
        self.on_stop = on_stop

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in self.stop_signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_stop()  # the other front drains at the same time, not after this one
        await super().shutdown(sockets)


def serve_process(
    settings: ServeSettings,
    http_socket: socket.socket | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """One serving process: the plugins, both fronts and the predictor client on one event loop.

    A worker of ``--workers N`` gets the supervisor's listening HTTP socket and shares the gRPC port
    (SO_REUSEPORT); ``on_ready`` is called once both fronts accept requests.
    """
    limits.configure(settings.limits)
    tracing.configure(otel=settings.otel, server_timing=settings.server_timing)
    shared = Shared.create(settings)
    plugins = zip(settings.model_names(), settings.transformers, strict=True)
    models = [shared.model(name, plugin) for name, plugin in plugins]
    _quiet_per_request_logs(settings.log_level)
    _calm_garbage_collector()
    _return_large_blocks_to_the_os()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvicorn[standard] brings uvloop; without it asyncio's loop serves as well
        pass
    asyncio.run(_serve(shared, models, http_socket, on_ready))


async def _serve(
    shared: Shared,
    models: list[TransformerModel],
    http_socket: socket.socket | None,
    on_ready: Callable[[], None],
) -> None:
    settings = shared.settings
    plugin_of = dict(zip(settings.model_names(), settings.transformers, strict=True))
    registry = Registry(models, lambda name: shared.model(name, plugin_of[name]))
    repository_api = settings.enable_model_repository_api
    in_group = http_socket is not None
    grpc_server = await _start_grpc(settings, registry, shared.pool, in_group) if settings.enable_grpc else None
    stop_signals = (signal.SIGTERM,) if in_group else (signal.SIGINT, signal.SIGTERM)
    grpc_stopped: list[asyncio.Task[None]] = []

    def stop_grpc() -> None:
        if grpc_server is not None and not grpc_stopped:
            grpc_stopped.append(asyncio.get_running_loop().create_task(grpc_server.stop(grace=GRACE_SECONDS)))

    http = _Server(
        uvicorn.Config(
            HttpFront(registry, enable_repository_api=repository_api),
            host=settings.bind_address,
            port=settings.http_port,
            http=BoundedHttpToolsProtocol,
            lifespan="off",
            proxy_headers=False,  # nothing reads the client's address; X-Forwarded-* would cost each request
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(GRACE_SECONDS),
        ),
        stop_signals,
        on_ready,
        stop_grpc,
    )
    logger.info(
        "kxform serve: %s on HTTP %s:%d%s, predictor %s (%s)%s%s",
        ", ".join(registry.names()),
        settings.bind_address,
        settings.http_port,
        f" and gRPC {settings.bind_address}:{settings.grpc_port}" if grpc_server else "",
        settings.predictor.host,
        settings.predictor.protocol,
        f", batching up to {settings.batch_max_delay_us} us" if shared.batcher.enabled else ", batching off",
        f", shared memory {settings.predictor.shm}",
    )
    try:
        await http.serve(sockets=[http_socket] if http_socket is not None else None)
    finally:
        stop_grpc()  # also when uvicorn did not start
        await asyncio.gather(*grpc_stopped, return_exceptions=True)
        await shared.close()
        tracing.shutdown()  # the spans still queued are exported
        logger.info("kxform serve: stopped")


async def _start_grpc(
    settings: ServeSettings, registry: Registry, pool: WorkerPool, shared_port: bool
) -> grpc.aio.Server:
    # Workers share the port through SO_REUSEPORT; a single process refuses a port another one holds.
    server = grpc.aio.server(options=[*server_options(), ("grpc.so_reuseport", int(shared_port))])
    front = GrpcFront(registry, pool, enable_repository_api=settings.enable_model_repository_api)
    server.add_generic_rpc_handlers([front.handler()])
    address = f"{settings.bind_address}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError:  # grpc says only "Failed to bind"
        raise SystemExit(f"kxform serve: error: cannot listen on {address} (--grpc_port): it is in use") from None
    await server.start()
    return server


def _calm_garbage_collector() -> None:
    """Fewer, cheaper collections: start-up objects (kserve, numpy, plugins) are never garbage.

    Each request allocates thousands of short-lived objects; with the default threshold (700) the
    collector runs several times per request and, now and then, walks every start-up object in a
    full collection, which showed as the p99 tail under load.
    """
    gc.collect()
    gc.freeze()
    # Young collections every 50,000 allocations; a full one (cheap: frozen objects are skipped) every
    # 10 million, so that reference cycles a failed request leaves behind do not pile up for hours.
    gc.set_threshold(50_000, 20, 10)


def _return_large_blocks_to_the_os() -> None:
    """Keep glibc's mmap threshold fixed at 128 KiB, so freed large buffers go back to the OS.

    glibc raises the threshold each time a mapped block is freed (up to 32 MiB), after which request
    bodies and decoded images are carved from per-thread heaps that rarely shrink: under ``make soak``
    (gzip bombs inflated on worker threads) the idle RSS grew by half in two minutes.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD; a non-glibc libc may lack mallopt
    except (OSError, AttributeError):
        logger.debug("mallopt is not available; the allocator's defaults stay")


def _quiet_per_request_logs(level: str) -> None:
    """Errors always; uvicorn's per-connection lines only at DEBUG."""
    if level != "DEBUG":
        for name in ("uvicorn.access", "uvicorn.error"):
            logging.getLogger(name).setLevel(logging.WARNING)
