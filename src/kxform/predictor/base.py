"""What every predictor client offers, and the timeout/retry policy they share.

A client translates its transport's errors into the ``PredictorError`` family; ``call`` applies
the request timeout (504) and retries, with exponential backoff, only what is safe and likely to
pass on a second try: connection failures and 503s (``PredictorUnavailableError``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from kxform.errors import KxformError, PredictorSharedMemoryError, PredictorTimeoutError, PredictorUnavailableError
from kxform.v2 import Placed, RequestedOutput, Views

__all__ = ["Placement", "PredictorClient", "PredictorSettings", "RequestedOutputs", "SharedMemoryMode", "call"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
Array = npt.NDArray[Any]
PredictorProtocol = Literal["v2", "grpc-v2"]
SharedMemoryMode = Literal["none", "system", "auto"]


@dataclass(frozen=True, slots=True)
class PredictorSettings:
    """Where the predictor is and how patiently to talk to it."""

    host: str  # host:port, no scheme
    protocol: PredictorProtocol = "v2"
    use_ssl: bool = False
    timeout: float = 60.0  # seconds per predictor call, retries included
    retries: int = 2  # extra attempts after a connection failure or 503
    backoff: float = 0.05  # seconds before the first retry; doubles each time, with jitter
    shm: SharedMemoryMode = "auto"  # tensors through Triton's system shared memory (kxform.predictor.shm)


@dataclass(frozen=True, slots=True)
class Placement:
    """The tensors of one call that are in shared memory: inputs written there, outputs to be read from there."""

    inputs: Placed
    outputs: Placed
    views: Views  # the bytes of each region range in ``outputs``


class PredictorClient(Protocol):
    """One long-lived connection pool to the predictor; shared by every request of the process."""

    settings: PredictorSettings

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        outputs: Sequence[str],
        request_id: str = "",
        placement: Placement | None = None,
    ) -> dict[str, Array]: ...

    async def classify(self, model: str, inputs: Mapping[str, Array], output: str, count: int) -> list[str]:
        """Triton's classification extension: ``"score:index:label"`` for the top ``count`` classes."""
        ...

    async def model_metadata(self, model: str) -> dict[str, Any]: ...

    async def model_config(self, model: str) -> dict[str, Any]: ...

    async def server_ready(self) -> bool: ...

    async def model_ready(self, model: str) -> bool: ...

    async def server_extensions(self) -> frozenset[str]:
        """The protocol extensions the server lists (``system_shared_memory``, ``classification``, ...)."""
        ...

    async def register_shared_memory(self, region: str, key: str, byte_size: int) -> None:
        """Triton's system shared memory extension: map the POSIX shared memory object ``key`` as ``region``."""
        ...

    async def unregister_shared_memory(self, region: str) -> None:
        """Forget ``region`` (nothing happens if Triton does not know it)."""
        ...

    async def shared_memory_regions(self) -> list[str]:
        """The names of the system shared memory regions Triton has registered (everyone's)."""
        ...

    async def close(self) -> None: ...


async def call(
    operation: Callable[[float], Awaitable[T]],
    settings: PredictorSettings,
    translate: Callable[[Exception], KxformError],
    what: str,
) -> T:
    """Run ``operation(seconds_left)`` under one deadline for all attempts, translating errors and retrying.

    The timeout bounds the whole call, retries and backoff included; each attempt is told how much of
    it is left, so a transport with its own deadline (gRPC) gives up at the same moment.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.timeout
    for attempt in range(settings.retries + 1):
        try:
            async with asyncio.timeout_at(deadline):
                return await operation(max(0.001, deadline - loop.time()))
        except TimeoutError as exc:
            raise PredictorTimeoutError(
                f"{what}: the predictor at {settings.host} did not answer within {settings.timeout:g}s "
                "(--predictor_request_timeout_seconds)"
            ) from exc
        except Exception as exc:
            error = translate(exc)
            if not isinstance(error, PredictorUnavailableError):
                raise error from exc
            if attempt == settings.retries or loop.time() >= deadline:
                raise error from exc
            delay = settings.backoff * (2**attempt) * (0.5 + random.random())
            logger.info("%s: %s; retry %d/%d in %.3fs", what, error.message, attempt + 1, settings.retries, delay)
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
    raise AssertionError("unreachable: the last attempt raises or returns")


class RequestedOutputs:
    """``infer`` and ``classify`` for a client whose ``_infer`` returns the outputs Triton sent, by name."""

    async def _infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        outputs: Sequence[RequestedOutput],
        request_id: str,
        placement: Placement | None,
    ) -> dict[str, Array]:
        raise NotImplementedError

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        outputs: Sequence[str],
        request_id: str = "",
        placement: Placement | None = None,
    ) -> dict[str, Array]:
        placed = placement.outputs if placement is not None else {}
        requested = [
            RequestedOutput(name, placed[name].parameters()) if name in placed else RequestedOutput(name)
            for name in outputs
        ]
        arrays = await self._infer(model, inputs, requested, request_id, placement)
        return {name: arrays[name] for name in outputs}

    async def classify(self, model: str, inputs: Mapping[str, Array], output: str, count: int) -> list[str]:
        requested = [RequestedOutput(output, {"classification": count})]
        values = (await self._infer(model, inputs, requested, "", None))[output]
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]


def about_shared_memory(translate: Callable[[Exception], KxformError]) -> Callable[[Exception], KxformError]:
    """``translate``, for a call that names shared memory regions: Triton's errors about them are not retried.

    Triton answers 404 for a region it does not know (after a restart) and 400 or 500 for one it cannot
    open or that is too small; ``kxform.predictor.shm`` registers the region again instead.
    """

    def translated(exc: Exception) -> KxformError:
        error = translate(exc)
        if "shared memory" in error.message and not isinstance(error, PredictorTimeoutError):
            return PredictorSharedMemoryError(error.message)
        return error

    return translated


def zeros_for(shape: Sequence[int], dtype: np.dtype[Any]) -> Array:
    """A tensor of the given shape with dynamic (-1) axes set to 1: a probe input."""
    return np.zeros([max(1, d) for d in shape], dtype=dtype)
