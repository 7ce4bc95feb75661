"""``kxform serve``: the plugins as ``TransformerModel``s behind kxform's own HTTP and gRPC fronts.

    serve(settings) -> limits configured -> plugins loaded (errors name the entry point)
      -> one event loop: uvicorn running kxform.front.http.HttpFront, grpc.aio running GrpcFront
      -> SIGTERM/SIGINT: stop accepting, finish in-flight requests, close the predictor, exit 0

Only the serving endpoints are exposed (no kserve model repository API unless asked for); see
``docs/architecture.md`` for a request's path through the modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Iterator

import grpc
import uvicorn

from kxform import limits
from kxform.front.grpc import GrpcFront, server_options
from kxform.front.http import HttpFront
from kxform.front.protocol import BoundedHttpToolsProtocol
from kxform.model import TransformerModel
from kxform.offload import WorkerPool
from kxform.plugins import load_plugin
from kxform.predictor import PredictorClient, create_predictor
from kxform.registry import Registry
from kxform.settings import ServeSettings

__all__ = ["build_models", "serve"]

logger = logging.getLogger(__name__)
_GRACE_SECONDS = 10.0


def _builder(settings: ServeSettings, predictor: PredictorClient, pool: WorkerPool) -> dict[str, TransformerModel]:
    names = settings.model_names()
    return {
        name: TransformerModel(
            name, load_plugin(plugin), predictor, pool=pool, inline_max_bytes=settings.inline_max_bytes
        )
        for name, plugin in zip(names, settings.transformers, strict=True)
    }


def build_models(
    settings: ServeSettings, predictor: PredictorClient | None = None, pool: WorkerPool | None = None
) -> list[TransformerModel]:
    """Load the plugins (errors name the entry point) and wrap each in a TransformerModel."""
    predictor = predictor or create_predictor(settings.predictor)  # one client, one connection pool, per process
    pool = pool or WorkerPool(settings.worker_threads, settings.worker_queue)
    return list(_builder(settings, predictor, pool).values())


class _Server(uvicorn.Server):
    """uvicorn's server without re-raising the stop signal after shutdown: kxform exits 0 on SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        import signal

        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(settings: ServeSettings) -> None:
    """Run the server until SIGINT/SIGTERM, then drain and exit."""
    limits.configure(settings.limits)
    predictor = create_predictor(settings.predictor)
    pool = WorkerPool(settings.worker_threads, settings.worker_queue)
    models = build_models(settings, predictor, pool)
    _quiet_per_request_logs(settings.log_level)
    _calm_garbage_collector()
    _return_large_blocks_to_the_os()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvicorn[standard] brings uvloop; without it asyncio's loop serves as well
        pass
    asyncio.run(_serve(settings, models, predictor, pool))


async def _serve(
    settings: ServeSettings, models: list[TransformerModel], predictor: PredictorClient, pool: WorkerPool
) -> None:
    plugin_of = dict(zip(settings.model_names(), settings.transformers, strict=True))

    def rebuild(name: str) -> TransformerModel:
        return TransformerModel(
            name, load_plugin(plugin_of[name]), predictor, pool=pool, inline_max_bytes=settings.inline_max_bytes
        )

    registry = Registry(models, rebuild)
    repository_api = settings.enable_model_repository_api
    grpc_server = await _start_grpc(settings, registry, pool) if settings.enable_grpc else None
    http = _Server(
        uvicorn.Config(
            HttpFront(registry, enable_repository_api=repository_api),
            host=settings.bind_address,
            port=settings.http_port,
            http=BoundedHttpToolsProtocol,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(_GRACE_SECONDS),
        )
    )
    logger.info(
        "kxform serve: %s on HTTP %s:%d%s, predictor %s (%s)",
        ", ".join(registry.names()),
        settings.bind_address,
        settings.http_port,
        f" and gRPC {settings.bind_address}:{settings.grpc_port}" if grpc_server else "",
        settings.predictor.host,
        settings.predictor.protocol,
    )
    try:
        await http.serve()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=_GRACE_SECONDS)
        await predictor.close()
        pool.shutdown()
        logger.info("kxform serve: stopped")


async def _start_grpc(settings: ServeSettings, registry: Registry, pool: WorkerPool) -> grpc.aio.Server:
    server = grpc.aio.server(options=server_options())
    front = GrpcFront(registry, pool, enable_repository_api=settings.enable_model_repository_api)
    server.add_generic_rpc_handlers([front.handler()])
    server.add_insecure_port(f"{settings.bind_address}:{settings.grpc_port}")
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
