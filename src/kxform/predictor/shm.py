"""Triton's system shared memory: a predictor call's tensors in ``/dev/shm`` regions, not in the message.

    kxform.batching.Batcher -> SharedMemory.infer(spec, inputs, outputs, request_id)
      -> decided once (--predictor_shm): system | none | auto (system when the predictor is on this
         host and lists the system_shared_memory extension; else none)
      -> the model's pool: a free region (the one returned last), else a new one (created in /dev/shm,
         registered with Triton over the predictor's protocol), else (MAX_REGIONS in use) the wire
      -> inputs copied into the region, outputs asked into it -> PredictorClient.infer(..., placement)
      -> outputs copied out by kxform.v2, the region back in the pool
    close(): every region unregistered from Triton and unlinked from /dev/shm

A region serves one call at a time: its inputs, then its outputs, each 64-byte aligned. It is sized
for the model's ``max_batch_size`` rows and replaced by a larger one when a call needs more (dynamic
dims). BYTES tensors, empty and scalar tensors, and outputs whose size is unknown before the call
(dynamic dims) travel in the message as before; a call with nothing to place goes over the wire.

A process that dies without closing (SIGKILL of its container, the OOM killer) cannot remove its
regions, and an emptyDir at /dev/shm outlives a container restart. So each process holds a lock
(``flock``, released by the kernel however the process ends) on ``/dev/shm/kxform-<pid>-<token>.lock``
while it has regions; at its first call, a process removes the regions of every lock nobody holds, from
Triton and from /dev/shm.

Triton forgets every region when it restarts. An error about a region (``PredictorSharedMemoryError``)
or an outage (``PredictorUnavailableError``) makes each region register again before its next use; a
call refused for its region is sent once more after registering, then over the wire. A call cut short
(timeout, cancellation) may still be read or written by Triton, so its region is retired: kept aside
for the predictor timeout, then unregistered and unlinked. The pool needs no lock: it lives on the
process's one event loop, and a region belongs to one call from ``_acquire`` to ``_release``.

CUDA shared memory (tensors in GPU memory, ``tritonclient.utils.cuda_shared_memory``) would be a
second kind of region with the same three operations as ``_Region`` (write an input, view an output,
destroy) and its own registration call; it needs a GPU that this project cannot test on, so none is
shipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.utils.shared_memory as triton_shm

from kxform.codecs.dtypes import numpy_dtype
from kxform.errors import KxformError, PredictorSharedMemoryError, PredictorTimeoutError, PredictorUnavailableError
from kxform.predictor.base import Array, Placement, PredictorClient
from kxform.spec import ModelSpec, TensorSpec
from kxform.tensors import batch_size
from kxform.v2 import SharedRegion

__all__ = ["MAX_REGIONS", "SharedMemory", "on_this_host", "region_bytes"]

logger = logging.getLogger(__name__)

MAX_REGIONS = 16
"""Regions per predictor model: the calls in flight that use shared memory at once; more go over the wire."""
_ALIGN = 64  # each tensor starts on a cache line
_PAGE = 4096
_UNREGISTER_SECONDS = 5.0  # close() does not wait longer for a Triton that does not answer
DEV_SHM = Path("/dev/shm")  # where POSIX shared memory objects live on Linux
EXTENSION = "system_shared_memory"


def on_this_host(host: str) -> bool:
    """Whether ``host:port`` is a loopback address (the same machine, or the same pod)."""
    name = host[1 : host.index("]")] if host.startswith("[") and "]" in host else host.rpartition(":")[0] or host
    if host.count(":") > 1 and not host.startswith("["):  # a bare IPv6 address ("::1"): no port to split off
        name = host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _aligned(size: int, to: int = _ALIGN) -> int:
    return -(-size // to) * to


def _tensor_bytes(spec: ModelSpec, tensor: TensorSpec, rows: int) -> int:
    """Bytes of ``tensor`` for ``rows`` rows, dynamic dims counted as 1."""
    count = math.prod(max(1, d) for d in tensor.shape) * (rows if spec.batched else 1)
    return count * numpy_dtype(tensor.datatype).itemsize


def _output_bytes(spec: ModelSpec, name: str, rows: int) -> int | None:
    """The bytes of output ``name`` for ``rows`` rows, if known before the call (no BYTES, no dynamic dim)."""
    tensor = spec.output(name)
    if tensor.datatype == "BYTES" or any(d < 0 for d in tensor.shape):
        return None
    return _tensor_bytes(spec, tensor, rows) or None


def region_bytes(spec: ModelSpec) -> int:
    """A region's size for one call of ``max_batch_size`` rows (dynamic dims counted as 1)."""
    rows = max(1, spec.max_batch_size)
    inputs = [_aligned(_tensor_bytes(spec, t, rows)) for t in spec.inputs if t.datatype != "BYTES"]
    outputs = [_aligned(_output_bytes(spec, t.name, rows) or 0) for t in spec.outputs]
    return sum(inputs) + sum(outputs)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where one call's tensors go in a region: name -> (offset, bytes)."""

    inputs: dict[str, tuple[int, int]]
    outputs: dict[str, tuple[int, int]]
    size: int


def _layout(spec: ModelSpec, inputs: Mapping[str, Array], outputs: Sequence[str]) -> _Layout | None:
    offset = 0
    placed_inputs: dict[str, tuple[int, int]] = {}
    rows = batch_size(inputs) if spec.batched else 1
    for name, array in inputs.items():
        if array.dtype != np.object_ and array.ndim and array.nbytes:
            placed_inputs[name] = (offset, array.nbytes)
            offset += _aligned(array.nbytes)
    placed_outputs: dict[str, tuple[int, int]] = {}
    for name in outputs:
        size = _output_bytes(spec, name, rows)
        if size is not None:
            placed_outputs[name] = (offset, size)
            offset += _aligned(size)
    if not placed_inputs and not placed_outputs:
        return None
    return _Layout(placed_inputs, placed_outputs, offset)


@dataclass(eq=False, slots=True)
class _Region:
    """One POSIX shared memory object, registered with Triton under ``name`` (its key: ``/name``)."""

    name: str
    model: str
    size: int
    handle: triton_shm.SharedMemoryRegion
    generation: int = -1  # the SharedMemory generation it was registered in; -1: never

    @property
    def key(self) -> str:
        return f"/{self.name}"

    def place(self, layout: _Layout, inputs: Mapping[str, Array]) -> Placement:
        """Write the inputs; the placement names every tensor's range, with views of the outputs'."""
        for name, (offset, _) in layout.inputs.items():
            array = inputs[name]
            little = array.astype(array.dtype.newbyteorder("<"), copy=False)  # as the wire sends it and Triton reads it
            triton_shm.set_shared_memory_region(self.handle, [little], offset)
        views = {
            name: memoryview(triton_shm.get_contents_as_numpy(self.handle, np.uint8, [size], offset))
            for name, (offset, size) in layout.outputs.items()
        }
        return Placement(
            inputs={name: SharedRegion(self.name, offset, size) for name, (offset, size) in layout.inputs.items()},
            outputs={name: SharedRegion(self.name, offset, size) for name, (offset, size) in layout.outputs.items()},
            views=views,
        )

    def destroy(self) -> None:
        try:
            triton_shm.destroy_shared_memory_region(self.handle)
        except (BufferError, OSError, triton_shm.SharedMemoryException) as exc:
            logger.warning("shared memory region %s: could not remove it from /dev/shm: %s", self.name, exc)


@dataclass(slots=True)
class _Pool:
    """The regions of one predictor model."""

    size: int  # bytes of a new region
    free: list[_Region] = field(default_factory=list)
    live: int = 0  # regions of this model, free, in use or retired


class SharedMemory:
    """The process's shared memory with the predictor: one pool of regions per predictor model."""

    def __init__(self, client: PredictorClient) -> None:
        self.client = client
        settings = client.settings
        self.mode = settings.shm
        self._state = "off" if self.mode == "none" else "pending"
        if self.mode == "auto" and not on_this_host(settings.host):
            self._state = "off"
            logger.info("predictor shared memory: none (the predictor at %s is not on this host)", settings.host)
        self._decision = asyncio.Lock()
        self._prefix = f"kxform-{os.getpid()}-{secrets.token_hex(3)}"
        self._count = 0
        self._generation = 0
        self._pools: dict[str, _Pool] = {}
        self._regions: set[_Region] = set()  # every region alive
        self._pending: set[asyncio.Task[None]] = set()  # retirements and removals under way
        self._retiring: dict[_Region, asyncio.TimerHandle] = {}
        self._lock: int | None = None  # the descriptor of our lock file, once we have regions

    @property
    def active(self) -> bool:
        """Whether calls may use shared memory (``pending``: not yet decided)."""
        return self._state != "off"

    def regions(self) -> list[str]:
        """The names of the regions alive now (registered with Triton, or about to be)."""
        return sorted(region.name for region in self._regions)

    async def infer(
        self, spec: ModelSpec, inputs: Mapping[str, Array], outputs: Sequence[str], request_id: str = ""
    ) -> dict[str, Array]:
        """The predictor's outputs, with the tensors that can be in shared memory placed there."""
        if self._state == "pending":
            await self._decide()
        layout = _layout(spec, inputs, outputs) if self._state == "on" else None
        region = None if layout is None else await self._acquire(spec, layout.size)
        if layout is None or region is None:
            return await self.client.infer(spec.name, inputs, outputs, request_id)
        reusable = False
        try:
            result = await self._placed_call(region, layout, spec, inputs, outputs, request_id)
            reusable = True
            return result
        except KxformError as exc:  # Triton answered (or is gone): unless it timed out, the region is free
            reusable = not isinstance(exc, PredictorTimeoutError)
            if isinstance(exc, PredictorUnavailableError):
                self._generation += 1  # an outage: a restarted Triton knows none of the regions
            raise
        finally:
            self._release(region, reusable)

    async def _placed_call(
        self,
        region: _Region,
        layout: _Layout,
        spec: ModelSpec,
        inputs: Mapping[str, Array],
        outputs: Sequence[str],
        request_id: str,
    ) -> dict[str, Array]:
        try:
            if region.generation != self._generation:
                await self._register(region)
        except PredictorSharedMemoryError as exc:
            self._refused(region, exc)
            return await self.client.infer(spec.name, inputs, outputs, request_id)
        placement = region.place(layout, inputs)
        try:
            try:
                return await self.client.infer(spec.name, inputs, outputs, request_id, placement)
            except PredictorSharedMemoryError as exc:
                logger.info("predictor: %s; registering the shared memory regions again", exc.message)
                self._generation += 1
            try:
                await self._register(region)
                return await self.client.infer(spec.name, inputs, outputs, request_id, placement)
            except PredictorSharedMemoryError as exc:
                logger.warning("predictor: %s; this call goes over the wire", exc.message)
                return await self.client.infer(spec.name, inputs, outputs, request_id)
        finally:
            for view in placement.views.values():
                view.release()  # the outputs were copied out (kxform.v2): nothing keeps pointing into the region

    def _refused(self, region: _Region, exc: PredictorSharedMemoryError) -> None:
        """Triton cannot map ``region``: an error with ``system``; with ``auto``, shared memory is turned off."""
        if self.mode == "system":
            raise PredictorSharedMemoryError(
                f"--predictor_shm system, but the predictor could not map kxform's region {region.key}: "
                f"{exc.message}. Triton must see the same /dev/shm as kxform (one emptyDir at /dev/shm in "
                "both containers, see docs/deploy.md), or use --predictor_shm auto or none"
            ) from exc
        self._turn_off(f"the predictor cannot map kxform's regions in /dev/shm: {exc.message}")

    async def _decide(self) -> None:
        """Once: does the predictor offer the extension? (An outage leaves it for the next call.)"""
        async with self._decision:
            if self._state != "pending":
                return
            host = self.client.settings.host
            try:
                extensions = await self.client.server_extensions()
            except PredictorUnavailableError:
                raise  # the call fails as it would over the wire; decided when the predictor is back
            except KxformError as exc:
                if self.mode == "system":
                    raise
                self._turn_off(f"the predictor at {host} did not describe itself: {exc.message}")
                return
            if EXTENSION not in extensions:
                if self.mode == "system":
                    raise PredictorSharedMemoryError(
                        f"--predictor_shm system, but the predictor at {host} does not list Triton's "
                        f"{EXTENSION} extension; use --predictor_shm auto or none"
                    )
                self._turn_off(f"the predictor at {host} does not list Triton's {EXTENSION} extension")
                return
            self._state = "on"
            logger.info("predictor shared memory: system (regions kxform-%d-* in /dev/shm)", os.getpid())
            await self._remove_abandoned()

    async def _remove_abandoned(self) -> None:
        """Remove the regions of kxform processes that died without closing (their lock is free)."""
        owners = _abandoned_locks()
        if not owners:
            return
        prefixes = tuple(f"{path.name.removesuffix('.lock')}-" for path in owners)
        try:
            names = [name for name in await self.client.shared_memory_regions() if name.startswith(prefixes)]
            for name in names:
                await self.client.unregister_shared_memory(name)
        except KxformError as exc:
            logger.info("regions of exited kxform processes: not unregistered from the predictor (%s)", exc.message)
        removed = 0
        for prefix in prefixes:
            for path in DEV_SHM.glob(f"{prefix}*"):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        for path, descriptor in owners.items():
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(descriptor)
        logger.info("removed %d shared memory regions of %d kxform processes that are gone", removed, len(owners))

    def _turn_off(self, reason: str) -> None:
        self._state = "off"
        logger.warning("predictor shared memory: none (%s); tensors go in the messages", reason)

    def _pool(self, spec: ModelSpec) -> _Pool:
        pool = self._pools.get(spec.name)
        if pool is None:
            pool = self._pools[spec.name] = _Pool(_aligned(region_bytes(spec), _PAGE))
            kib = pool.size // 1024
            logger.info("predictor shared memory for %s: regions of %d KiB, at most %d", spec.name, kib, MAX_REGIONS)
        return pool

    async def _acquire(self, spec: ModelSpec, size: int) -> _Region | None:
        """A region of at least ``size`` bytes for one call, or None: the call goes over the wire."""
        pool = self._pool(spec)
        while pool.free:
            region = pool.free.pop()
            if region.size >= size:
                return region
            self._remove(region)  # too small for this call's dynamic dims: a larger one replaces it
        if pool.live >= MAX_REGIONS:
            return None
        if size > pool.size:
            pool.size = 1 << (size - 1).bit_length()  # grow by powers of two: dynamic dims settle quickly
        region = self._create(spec.name, pool.size)
        pool.live += 1
        try:
            await self._register(region, fresh=True)
        except PredictorSharedMemoryError as exc:
            self._drop(region)
            self._refused(region, exc)
            return None
        except BaseException:
            self._drop(region)
            raise
        return region

    def _create(self, model: str, size: int) -> _Region:
        if self._lock is None:
            self._lock = _hold_lock(DEV_SHM / f"{self._prefix}.lock")
        self._count += 1
        name = f"{self._prefix}-{re.sub(r'[^A-Za-z0-9_.-]', '_', model)[:64]}-{self._count}"
        handle = triton_shm.create_shared_memory_region(name, f"/{name}", size, create_only=True)
        region = _Region(name, model, size, handle)
        self._regions.add(region)
        return region

    async def _register(self, region: _Region, *, fresh: bool = False) -> None:
        if not fresh:  # Triton may still know it (no restart after all): registering twice is an error
            await self.client.unregister_shared_memory(region.name)
        generation = self._generation
        await self.client.register_shared_memory(region.name, region.key, region.size)
        region.generation = generation

    def _release(self, region: _Region, reusable: bool) -> None:
        pool = self._pools.get(region.model)
        if pool is None or region not in self._regions:  # closed meanwhile
            return
        if reusable:
            pool.free.append(region)
            return
        # Triton may still read its inputs or write its outputs: not reused, removed after the timeout.
        loop = asyncio.get_running_loop()
        self._retiring[region] = loop.call_later(self.client.settings.timeout, self._retire, region)

    def _retire(self, region: _Region) -> None:
        self._retiring.pop(region, None)
        self._remove(region)

    def _remove(self, region: _Region) -> None:
        """Unregister ``region`` from Triton and unlink it (in the background); it is in no call."""
        task = asyncio.get_running_loop().create_task(self._unregister_and_drop(region))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _unregister_and_drop(self, region: _Region) -> None:
        try:
            async with asyncio.timeout(_UNREGISTER_SECONDS):
                await self.client.unregister_shared_memory(region.name)
        except (KxformError, TimeoutError) as exc:
            logger.info("shared memory region %s: not unregistered (%s)", region.name, exc)
        finally:
            self._drop(region)

    def _drop(self, region: _Region) -> None:
        if region not in self._regions:
            return
        self._regions.discard(region)
        pool = self._pools.get(region.model)
        if pool is not None:
            pool.live -= 1
        region.destroy()

    async def close(self) -> None:
        """Unregister every region from Triton (if it answers) and unlink them all; calls have finished."""
        for timer in self._retiring.values():
            timer.cancel()
        self._retiring.clear()
        for pool in self._pools.values():
            pool.free.clear()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        regions = list(self._regions)
        if regions:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_UNREGISTER_SECONDS):
                    await asyncio.gather(
                        *(self.client.unregister_shared_memory(region.name) for region in regions),
                        return_exceptions=True,
                    )
        for region in regions:
            self._drop(region)
        if self._lock is not None:
            with contextlib.suppress(OSError):
                (DEV_SHM / f"{self._prefix}.lock").unlink()
            os.close(self._lock)
            self._lock = None


def _hold_lock(path: Path) -> int:
    """Create ``path`` and hold an exclusive flock on it for as long as this process lives."""
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return descriptor


def _abandoned_locks() -> dict[Path, int]:
    """The lock files of kxform processes that are gone: now locked by us (path -> descriptor)."""
    abandoned = {}
    for path in DEV_SHM.glob("kxform-*.lock"):
        try:
            descriptor = os.open(path, os.O_RDWR)
        except OSError:  # removed meanwhile, or not ours to open
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its process is alive (this one included)
            os.close(descriptor)
            continue
        abandoned[path] = descriptor
    return abandoned
