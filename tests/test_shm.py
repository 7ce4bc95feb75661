"""kxform.predictor.shm against an in-memory Triton that maps kxform's regions from /dev/shm as Triton does.

Fast unit tests, no Triton. ``MemoryTriton`` is a predictor client and the server behind it in one: it
encodes each call with kxform's own REST codec, reads the placed inputs from the POSIX shared memory
objects it registered (opened with ``os.open`` + ``mmap``, as Triton opens them), never from the arrays
kxform passed, writes the placed outputs into them, and decodes its reply through the caller's views.
An answer is right only if its bytes went through /dev/shm. The model answers ``OUTPUT__0`` (and
``OUTPUT__1``) = the row sums of ``INPUT__0`` (and ``INPUT__1``), and ``ECHO`` = ``TEXT`` upper-cased.
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kxform.batching import Batcher
from kxform.codecs.dtypes import v2_datatype
from kxform.codecs.tensor import from_raw_bytes, to_raw_bytes
from kxform.errors import PredictorSharedMemoryError, PredictorTimeoutError, PredictorUnavailableError
from kxform.predictor.base import Placement, PredictorSettings, RequestedOutputs, SharedMemoryMode
from kxform.predictor.shm import MAX_REGIONS, SharedMemory, on_this_host
from kxform.spec import ModelSpec, TensorSpec
from kxform.v2 import HEADER_LENGTH, RequestedOutput, V2Tensor, decode_rest_response, encode_rest_request

Array = np.ndarray[Any, Any]
HANG_GUARD_SECONDS = 30  # not a speed bound: a test that waits this long has hung
DEV_SHM = Path("/dev/shm")
SYSTEM_SHARED_MEMORY = "system_shared_memory"  # the extension name Triton lists in its server metadata


# --- the in-memory Triton -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One inference request as the in-memory Triton received it."""

    given: frozenset[str]  # the inputs kxform passed to infer()
    in_body: frozenset[str]  # inputs whose bytes were in the message
    from_regions: frozenset[str]  # inputs read from shared memory
    into_regions: frozenset[str]  # outputs asked into shared memory
    regions: frozenset[str]
    rows: int


@dataclass(frozen=True, slots=True)
class Failure:
    """What the in-memory Triton does to its next inference request instead of answering it."""

    error: Exception
    after_work: bool  # raised once the outputs are in the region (the reply is lost)
    restart: bool  # Triton forgets its regions first, as a restarted one does


def row_sums(array: Array) -> Array:
    sums: Array = array.reshape(len(array), -1).sum(axis=1, keepdims=True, dtype=array.dtype)
    return sums


def model_answers(arrays: Mapping[str, Array]) -> dict[str, Array]:
    answers = {}
    if "INPUT__0" in arrays:
        answers["OUTPUT__0"] = row_sums(arrays["INPUT__0"])
    if "INPUT__1" in arrays:
        answers["OUTPUT__1"] = row_sums(arrays["INPUT__1"])
    if "TEXT" in arrays:
        text = arrays["TEXT"]
        answers["ECHO"] = np.array([value.upper() for value in text.ravel()], dtype=np.object_).reshape(text.shape)
    return answers


def _entry_parameters(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    parameters: Mapping[str, Any] = entry.get("parameters", {})
    return parameters


class MemoryTriton(RequestedOutputs):
    """A PredictorClient with Triton's system shared memory semantics; it counts what it was asked to do."""

    def __init__(
        self,
        shm: SharedMemoryMode = "auto",
        *,
        host: str = "127.0.0.1:1",
        timeout: float = 60.0,
        extensions: frozenset[str] = frozenset({SYSTEM_SHARED_MEMORY, "classification"}),
    ) -> None:
        self.settings = PredictorSettings(host, shm=shm, timeout=timeout)
        self.extensions = extensions
        self.shm_dir = DEV_SHM  # another directory: a Triton that does not see kxform's /dev/shm
        self.mapped: dict[str, mmap.mmap] = {}
        self.registrations: list[str] = []  # successful ones
        self.register_attempts = 0
        self.unregistrations: list[str] = []
        self.unregistered_at: dict[str, float] = {}  # the event loop's time
        self.extension_queries = 0
        self.refused = 0  # requests that named a region Triton does not know
        self.peak_mapped = 0
        self.calls: list[Call] = []
        self.gate: asyncio.Event | None = None  # while set to an unset event, every call waits at Triton
        self._failures: list[Failure] = []

    @property
    def wire_calls(self) -> int:
        return sum(1 for call in self.calls if not call.regions)

    @property
    def placed_calls(self) -> int:
        return sum(1 for call in self.calls if call.regions)

    def fail_next(self, error: Exception, *, after_work: bool = False, restart: bool = False) -> None:
        self._failures.append(Failure(error, after_work, restart))

    def restart(self) -> None:
        """Triton restarts: it forgets every region."""
        for mapping in self.mapped.values():
            mapping.close()
        self.mapped.clear()

    # --- the system shared memory extension

    async def server_extensions(self) -> frozenset[str]:
        await asyncio.sleep(0)
        self.extension_queries += 1
        return self.extensions

    async def register_shared_memory(self, region: str, key: str, byte_size: int) -> None:
        await asyncio.sleep(0)
        self.register_attempts += 1
        prefix = f"failed to register shared memory region '{region}'"
        if region in self.mapped:
            raise PredictorSharedMemoryError(f"{prefix}: shared memory region '{region}' already in manager")
        try:
            fd = os.open(self.shm_dir / key.lstrip("/"), os.O_RDWR)
        except OSError as exc:
            raise PredictorSharedMemoryError(f"{prefix}: Unable to open shared memory region: '{key}'") from exc
        try:
            self.mapped[region] = mmap.mmap(fd, byte_size)
        except (OSError, ValueError) as exc:
            raise PredictorSharedMemoryError(f"{prefix}: unable to mmap shared memory region '{key}'") from exc
        finally:
            os.close(fd)
        self.registrations.append(region)
        self.peak_mapped = max(self.peak_mapped, len(self.mapped))

    async def unregister_shared_memory(self, region: str) -> None:
        await asyncio.sleep(0)
        self.unregistrations.append(region)
        self.unregistered_at[region] = asyncio.get_running_loop().time()
        mapping = self.mapped.pop(region, None)
        if mapping is not None:
            mapping.close()

    async def shared_memory_regions(self) -> list[str]:
        await asyncio.sleep(0)
        return list(self.mapped)

    # --- inference, over kxform's own REST encoding

    async def _infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        outputs: Sequence[RequestedOutput],
        request_id: str,
        placement: Placement | None,
    ) -> dict[str, Array]:
        tensors = [V2Tensor.from_array(name, array) for name, array in inputs.items()]
        body, headers = encode_rest_request(tensors, outputs, request_id, placement.inputs if placement else {})
        await asyncio.sleep(0)  # the request is on its way
        length = int(headers.get(HEADER_LENGTH, len(body)))
        document = orjson.loads(body[:length])
        arrays = self._receive(document, body, length, frozenset(inputs))
        await self._work_starts()
        reply, reply_length = self._reply(model, document, model_answers(arrays))
        if self._failures and self._failures[0].after_work:
            raise self._failures.pop(0).error
        await asyncio.sleep(0)  # the reply is on its way
        return decode_rest_response(reply, reply_length, placement.views if placement else {}).arrays()

    def _receive(self, document: Any, body: bytes, offset: int, given: frozenset[str]) -> dict[str, Array]:
        arrays, in_body, from_regions, regions = {}, set(), set(), set()
        for entry in document["inputs"]:
            name, parameters = entry["name"], _entry_parameters(entry)
            if "shared_memory_region" in parameters:
                mapping, start, size = self._range(parameters)
                raw = mapping[start : start + size]  # a copy of the region's bytes
                from_regions.add(name)
                regions.add(parameters["shared_memory_region"])
            else:
                size = parameters["binary_data_size"]
                raw, offset = body[offset : offset + size], offset + size
                in_body.add(name)
            arrays[name] = from_raw_bytes(raw, entry["datatype"], entry["shape"], f"input '{name}'")
        into_regions = set()
        for requested in document["outputs"]:
            parameters = _entry_parameters(requested)
            if "shared_memory_region" in parameters:
                self._range(parameters)
                into_regions.add(requested["name"])
                regions.add(parameters["shared_memory_region"])
        count = len(next(iter(arrays.values())))
        self.calls.append(
            Call(given, frozenset(in_body), frozenset(from_regions), frozenset(into_regions), frozenset(regions), count)
        )
        return arrays

    def _range(self, parameters: Mapping[str, Any]) -> tuple[mmap.mmap, int, int]:
        region = parameters["shared_memory_region"]
        mapping = self.mapped.get(region)
        if mapping is None:
            self.refused += 1
            raise PredictorSharedMemoryError(f"Unable to find shared memory region: '{region}'")
        start, size = parameters["shared_memory_offset"], parameters["shared_memory_byte_size"]
        if start + size > len(mapping):
            raise PredictorSharedMemoryError(f"Invalid offset + byte size for shared memory region: '{region}'")
        return mapping, start, size

    async def _work_starts(self) -> None:
        if self._failures and not self._failures[0].after_work:
            failure = self._failures.pop(0)
            if failure.restart:
                self.restart()
            raise failure.error
        if self.gate is not None:
            await self.gate.wait()

    def _reply(self, model: str, document: Any, answers: Mapping[str, Array]) -> tuple[bytes, str]:
        entries, chunks = [], []
        for requested in document["outputs"]:
            name, parameters = requested["name"], _entry_parameters(requested)
            answer = answers[name]
            raw = to_raw_bytes(answer)
            entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(answer.dtype), "shape": list(answer.shape)}
            if "shared_memory_region" in parameters:  # written there; the reply carries no data for it
                mapping, start, size = self._range(parameters)
                if len(raw) > size:
                    raise PredictorSharedMemoryError(
                        f"shared memory size specified with the request for output '{name}' should be at least "
                        f"{len(raw)} bytes to hold the results"
                    )
                mapping[start : start + len(raw)] = raw
            else:
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            entries.append(entry)
        header = orjson.dumps({"model_name": model, "model_version": "1", "outputs": entries})
        return header + b"".join(chunks), str(len(header))

    # --- the rest of the protocol (not used by these tests)

    async def model_metadata(self, model: str) -> dict[str, Any]:
        raise NotImplementedError("the in-memory Triton has no model repository")

    async def model_config(self, model: str) -> dict[str, Any]:
        raise NotImplementedError("the in-memory Triton has no model repository")

    async def server_ready(self) -> bool:
        return True

    async def model_ready(self, model: str) -> bool:
        return True

    async def close(self) -> None:
        self.restart()


# --- helpers ------------------------------------------------------------------------------------------


def spec(max_batch_size: int = 8, dims: tuple[int, ...] = (3,), datatype: str = "FP32") -> ModelSpec:
    return ModelSpec(
        "model",
        "1",
        (TensorSpec("INPUT__0", datatype, dims),),
        (TensorSpec("OUTPUT__0", datatype, (1,)),),
        max_batch_size,
    )


UNBATCHED = ModelSpec(
    "unbatched", "1", (TensorSpec("INPUT__0", "FP64", (2, 3)),), (TensorSpec("OUTPUT__0", "FP64", (2, 1)),), 0
)
TEXTS = ModelSpec(
    "texts",
    "1",
    (TensorSpec("INPUT__0", "FP32", (3,)), TensorSpec("TEXT", "BYTES", (1,))),
    (TensorSpec("OUTPUT__0", "FP32", (1,)), TensorSpec("ECHO", "BYTES", (1,))),
    8,
)
PAIRS = ModelSpec(
    "pairs",
    "1",
    (TensorSpec("INPUT__0", "FP32", (3,)), TensorSpec("INPUT__1", "INT32", (5,))),
    (TensorSpec("OUTPUT__0", "FP32", (1,)), TensorSpec("OUTPUT__1", "INT32", (1,))),
    8,
)
ECHO = ModelSpec("echo", "1", (TensorSpec("TEXT", "BYTES", (1,)),), (TensorSpec("ECHO", "BYTES", (1,)),), 8)


def rows(count: int, seed: int, dims: tuple[int, ...] = (3,), dtype: Any = np.float32) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "i":
        return {"INPUT__0": rng.integers(-1000, 1000, (count, *dims)).astype(dtype)}
    return {"INPUT__0": rng.standard_normal((count, *dims)).astype(dtype)}


def assert_own_sums(result: Mapping[str, Array], request: Mapping[str, Array]) -> None:
    np.testing.assert_array_equal(result["OUTPUT__0"], row_sums(request["INPUT__0"]))


def our_dev_shm_entries() -> set[str]:
    return {path.name for path in DEV_SHM.glob(f"kxform-{os.getpid()}-*")}


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        while not condition():
            await asyncio.sleep(0.001)


async def infer(shm: SharedMemory, model: ModelSpec, inputs: Mapping[str, Array]) -> dict[str, Array]:
    return await asyncio.wait_for(shm.infer(model, inputs, ["OUTPUT__0"], "r"), HANG_GUARD_SECONDS)


async def concurrently(
    shm: SharedMemory, triton: MemoryTriton, model: ModelSpec, requests: Sequence[Mapping[str, Array]]
) -> list[dict[str, Array]]:
    """The calls, all in flight at once: held at Triton until every one has arrived."""
    arrived = len(triton.calls)
    triton.gate = asyncio.Event()
    calls = [asyncio.ensure_future(shm.infer(model, r, ["OUTPUT__0"], f"r{i}")) for i, r in enumerate(requests)]
    await until(lambda: len(triton.calls) - arrived == len(requests))
    triton.gate.set()
    triton.gate = None
    return list(await asyncio.wait_for(asyncio.gather(*calls), HANG_GUARD_SECONDS))


def region_of(call: Call) -> str:
    [region] = call.regions
    return region


MakeShm = Callable[[MemoryTriton], SharedMemory]


@pytest.fixture
async def make_shm() -> AsyncIterator[MakeShm]:
    """``SharedMemory`` over an in-memory Triton; closed after the test, which must leave nothing in /dev/shm."""
    before = our_dev_shm_entries()
    made: list[tuple[SharedMemory, MemoryTriton]] = []

    def make(triton: MemoryTriton) -> SharedMemory:
        made.append((SharedMemory(triton), triton))
        return made[-1][0]

    yield make
    for shm, triton in made:
        await shm.close()
        await triton.close()
    assert our_dev_shm_entries() - before == set()


# --- answers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "requests"),
    [
        pytest.param(spec(), [rows(count, seed) for seed, count in enumerate([1, 8, 3])], id="fp32-batched"),
        pytest.param(spec(dims=(4,), datatype="INT64"), [rows(5, 0, (4,), np.int64)], id="int64-batched"),
        pytest.param(UNBATCHED, [rows(2, seed, (3,), np.float64) for seed in range(2)], id="fp64-unbatched"),
    ],
)
async def test_shm_answers_equal_the_wire_answers_and_the_model_function(
    make_shm: MakeShm, model: ModelSpec, requests: list[dict[str, Array]]
) -> None:
    triton, wire = MemoryTriton(), MemoryTriton(shm="none")
    shm, no_shm = make_shm(triton), make_shm(wire)

    for request in requests:
        through_shm, over_wire = await infer(shm, model, request), await infer(no_shm, model, request)

        assert_own_sums(through_shm, request)
        np.testing.assert_array_equal(through_shm["OUTPUT__0"], over_wire["OUTPUT__0"])
    assert all(call.from_regions == {"INPUT__0"} and call.into_regions == {"OUTPUT__0"} for call in triton.calls)
    assert all(call.in_body == {"INPUT__0"} and not call.regions for call in wire.calls)


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(rows(3, 0)["INPUT__0"].astype(">f4"), id="big-endian"),
        pytest.param(rows(3, 0, (6,))["INPUT__0"][:, ::2], id="strided"),
        pytest.param(np.asfortranarray(rows(3, 0)["INPUT__0"]), id="fortran-order"),
    ],
)
async def test_an_input_of_another_byte_order_or_layout_gives_the_wire_answer(make_shm: MakeShm, array: Array) -> None:
    shm, no_shm = make_shm(MemoryTriton()), make_shm(MemoryTriton(shm="none"))

    through_shm, over_wire = (
        await infer(shm, spec(), {"INPUT__0": array}),
        await infer(no_shm, spec(), {"INPUT__0": array}),
    )

    np.testing.assert_array_equal(through_shm["OUTPUT__0"], over_wire["OUTPUT__0"])
    np.testing.assert_array_equal(through_shm["OUTPUT__0"], row_sums(array.astype(np.float32)))


async def test_several_inputs_and_outputs_each_have_their_own_range_of_the_region(make_shm: MakeShm) -> None:
    triton = MemoryTriton()
    shm = make_shm(triton)
    inputs = {**rows(4, 0), "INPUT__1": rows(4, 1, (5,), np.int32)["INPUT__0"]}

    result = await shm.infer(PAIRS, inputs, ["OUTPUT__0", "OUTPUT__1"], "r")

    assert_own_sums(result, inputs)
    np.testing.assert_array_equal(result["OUTPUT__1"], row_sums(inputs["INPUT__1"]))
    [call] = triton.calls
    assert call.from_regions == {"INPUT__0", "INPUT__1"}
    assert call.into_regions == {"OUTPUT__0", "OUTPUT__1"}


async def test_sequential_calls_reuse_one_region_registered_once(make_shm: MakeShm) -> None:
    triton = MemoryTriton()
    shm = make_shm(triton)

    requests = [rows(seed + 1, seed) for seed in range(5)]
    results = [await infer(shm, spec(), request) for request in requests]

    for request, result in zip(requests, results, strict=True):  # checked last: answers outlive the region's reuse
        assert_own_sums(result, request)
    [region] = shm.regions()
    assert triton.registrations == [region]
    assert [call.regions for call in triton.calls] == [{region}] * 5
    assert triton.extension_queries == 1  # decided once


async def test_concurrent_calls_each_get_their_own_answer_in_a_region_of_their_own(make_shm: MakeShm) -> None:
    triton = MemoryTriton()
    shm = make_shm(triton)
    requests = [rows(2, seed) for seed in range(5)]

    results = await concurrently(shm, triton, spec(), requests)

    for request, result in zip(requests, results, strict=True):
        assert_own_sums(result, request)
    assert len({region_of(call) for call in triton.calls}) == 5
    assert sorted(triton.registrations) == shm.regions()


async def test_calls_beyond_max_regions_in_flight_go_over_the_wire_with_correct_answers(make_shm: MakeShm) -> None:
    triton = MemoryTriton()
    shm = make_shm(triton)
    requests = [rows(1, seed) for seed in range(MAX_REGIONS + 4)]

    results = await concurrently(shm, triton, spec(), requests)

    for request, result in zip(requests, results, strict=True):
        assert_own_sums(result, request)
    assert (triton.placed_calls, triton.wire_calls) == (MAX_REGIONS, 4)
    assert triton.peak_mapped == len(shm.regions()) == MAX_REGIONS
    request = rows(3, 99)
    assert_own_sums(await infer(shm, spec(), request), request)  # a free region again: no new one
    assert len(triton.registrations) == MAX_REGIONS
    assert triton.calls[-1].regions


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 8), min_size=1, max_size=40),
    max_batch_size=st.integers(1, 8),
    concurrency=st.integers(1, 40),
    delay_us=st.sampled_from([0, 1, 500]),
)
def test_any_mix_of_requests_through_the_batcher_and_shm_gets_its_own_rows(
    sizes: list[int], max_batch_size: int, concurrency: int, delay_us: int
) -> None:
    sizes = [min(size, max_batch_size) for size in sizes]  # larger requests are split before the batcher
    requests = [rows(size, seed) for seed, size in enumerate(sizes)]
    model = spec(max_batch_size=max_batch_size)

    async def scenario() -> tuple[list[dict[str, Array]], MemoryTriton]:
        triton = MemoryTriton()
        shm = SharedMemory(triton)
        batcher = Batcher(triton, delay_us, shm)
        results: list[dict[str, Array]] = []
        try:
            for start in range(0, len(requests), concurrency):
                wave = [batcher.infer(model, r, ["OUTPUT__0"], "") for r in requests[start : start + concurrency]]
                results += await asyncio.wait_for(asyncio.gather(*wave), HANG_GUARD_SECONDS)
            assert len(shm.regions()) <= MAX_REGIONS
        finally:
            await shm.close()
            await triton.close()
        return results, triton

    results, triton = asyncio.run(scenario())
    for request, result in zip(requests, results, strict=True):
        assert_own_sums(result, request)
    assert sum(call.rows for call in triton.calls) == sum(sizes)  # every row sent once
    assert max(call.rows for call in triton.calls) <= max_batch_size
    assert triton.placed_calls >= 1
    assert triton.peak_mapped <= MAX_REGIONS
    assert triton.refused == 0
    assert not our_dev_shm_entries() & set(triton.registrations)


# --- Triton restarts and outages ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "system"])
async def test_a_triton_restart_between_calls_registers_the_region_again_without_an_error(
    make_shm: MakeShm, mode: SharedMemoryMode
) -> None:
    triton = MemoryTriton(shm=mode)
    shm = make_shm(triton)
    await infer(shm, spec(), rows(2, 0))
    triton.restart()

    request = rows(2, 1)
    assert_own_sums(await infer(shm, spec(), request), request)

    [region] = shm.regions()
    assert triton.refused == 1  # Triton did not know the region; kxform registered it and sent the call again
    assert triton.registrations == [region, region]
    assert [call.regions for call in triton.calls] == [{region}, {region}]


@pytest.mark.parametrize(
    "restarted", [pytest.param(True, id="triton-restarted"), pytest.param(False, id="network-blip")]
)
async def test_after_an_outage_every_region_registers_again_before_its_next_use(
    make_shm: MakeShm, restarted: bool
) -> None:
    triton = MemoryTriton()
    shm = make_shm(triton)
    await concurrently(shm, triton, spec(), [rows(1, seed) for seed in range(2)])
    first, second = shm.regions()
    triton.fail_next(PredictorUnavailableError("the predictor at 127.0.0.1:1 is unreachable"), restart=restarted)
    with pytest.raises(PredictorUnavailableError):
        await infer(shm, spec(), rows(1, 2))

    requests = [rows(1, seed) for seed in range(3, 5)]
    results = await concurrently(shm, triton, spec(), requests)

    for request, result in zip(requests, results, strict=True):
        assert_own_sums(result, request)
    assert triton.refused == 0  # registered before use: Triton never saw a region it did not know
    assert sorted(triton.registrations) == [first, first, second, second]
    assert {region_of(call) for call in triton.calls[-2:]} == {first, second}


# --- when shared memory is off ------------------------------------------------------------------------


async def test_a_refused_registration_in_auto_mode_turns_shm_off_and_calls_go_over_the_wire(
    make_shm: MakeShm, tmp_path: Path
) -> None:
    triton = MemoryTriton(shm="auto")
    triton.shm_dir = tmp_path  # Triton's /dev/shm is not kxform's
    shm = make_shm(triton)

    for seed in range(3):
        request = rows(2, seed)
        assert_own_sums(await infer(shm, spec(), request), request)

    assert not shm.active
    assert triton.register_attempts == 1
    assert (triton.placed_calls, triton.wire_calls) == (0, 3)
    assert shm.regions() == []
    assert not our_dev_shm_entries() & {f.name for f in tmp_path.iterdir()}


async def test_a_refused_registration_in_system_mode_is_an_error_naming_the_flag(
    make_shm: MakeShm, tmp_path: Path
) -> None:
    triton = MemoryTriton(shm="system")
    triton.shm_dir = tmp_path
    shm = make_shm(triton)

    with pytest.raises(PredictorSharedMemoryError, match="--predictor_shm") as info:
        await infer(shm, spec(), rows(2, 0))

    assert "Unable to open shared memory region" in info.value.message
    assert triton.calls == []
    assert shm.regions() == []


async def test_no_shm_extension_in_auto_mode_sends_over_the_wire(make_shm: MakeShm) -> None:
    triton = MemoryTriton(shm="auto", extensions=frozenset({"classification"}))
    shm = make_shm(triton)

    for seed in range(2):
        request = rows(2, seed)
        assert_own_sums(await infer(shm, spec(), request), request)

    assert not shm.active
    assert (triton.placed_calls, triton.wire_calls, triton.register_attempts) == (0, 2, 0)
    assert triton.extension_queries == 1


async def test_no_shm_extension_in_system_mode_is_an_error_naming_the_flag(make_shm: MakeShm) -> None:
    triton = MemoryTriton(shm="system", extensions=frozenset({"classification"}))
    shm = make_shm(triton)

    with pytest.raises(PredictorSharedMemoryError, match="--predictor_shm system") as info:
        await infer(shm, spec(), rows(2, 0))

    assert SYSTEM_SHARED_MEMORY in info.value.message
    assert triton.calls == []


async def test_a_predictor_on_another_host_is_never_asked_for_extensions_in_auto_mode(make_shm: MakeShm) -> None:
    triton = MemoryTriton(shm="auto", host="10.1.2.3:8000")
    shm = make_shm(triton)

    request = rows(2, 0)
    assert_own_sums(await infer(shm, spec(), request), request)

    assert not shm.active
    assert (triton.extension_queries, triton.register_attempts, triton.wire_calls) == (0, 0, 1)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        pytest.param("localhost", True, id="localhost"),
        pytest.param("localhost:8000", True, id="localhost-port"),
        pytest.param("127.0.0.1:8001", True, id="ipv4-loopback"),
        pytest.param("127.5.0.1:8000", True, id="ipv4-loopback-net"),
        pytest.param("[::1]:8001", True, id="ipv6-loopback-port"),
        pytest.param("::1", True, id="ipv6-loopback"),
        pytest.param("10.0.0.1", False, id="ipv4-private"),
        pytest.param("10.0.0.1:8000", False, id="ipv4-private-port"),
        pytest.param("[fd00::1]:8001", False, id="ipv6-private"),
        pytest.param("triton.example.com", False, id="dns-name"),
        pytest.param("triton.default.svc:8000", False, id="service-name"),
    ],
)
def test_on_this_host_is_true_only_for_loopback_addresses(host: str, local: bool) -> None:
    assert on_this_host(host) is local


# --- regions that must not be reused, or are too small ------------------------------------------------


@pytest.mark.parametrize("cut_short", ["caller-timeout", "predictor-timeout"])
async def test_a_call_cut_short_does_not_reuse_its_region_which_is_removed_after_the_timeout(
    make_shm: MakeShm, cut_short: str
) -> None:
    retirement = 0.1
    triton = MemoryTriton(timeout=retirement)
    shm = make_shm(triton)
    if cut_short == "caller-timeout":
        triton.gate = asyncio.Event()  # Triton does not answer
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await shm.infer(spec(), rows(2, 0), ["OUTPUT__0"], "r")
        triton.gate = None
    else:
        triton.fail_next(PredictorTimeoutError("no answer within 0.05s"), after_work=True)
        with pytest.raises(PredictorTimeoutError):
            await infer(shm, spec(), rows(2, 0))
    failed_at = asyncio.get_running_loop().time()
    first = region_of(triton.calls[0])
    assert first in shm.regions()  # kept aside: Triton may still write into it
    assert first not in triton.unregistrations

    request = rows(2, 1)
    assert_own_sums(await infer(shm, spec(), request), request)

    second = region_of(triton.calls[1])
    assert second != first
    await until(lambda: first in triton.unregistrations and first not in our_dev_shm_entries())
    assert triton.unregistered_at[first] - failed_at >= retirement * 0.9  # not before the predictor timeout
    assert shm.regions() == [second]


async def test_a_call_larger_than_its_region_gets_a_larger_one_and_the_small_one_is_removed(
    make_shm: MakeShm,
) -> None:
    triton = MemoryTriton()
    shm = make_shm(triton)
    model = spec(dims=(-1,))
    small, large = rows(2, 0, (3,)), rows(8, 1, (200,))
    await infer(shm, model, small)
    [first] = shm.regions()

    assert_own_sums(await infer(shm, model, large), large)

    second = region_of(triton.calls[1])
    assert second != first
    assert triton.calls[1].from_regions == {"INPUT__0"}
    assert (DEV_SHM / second).stat().st_size >= large["INPUT__0"].nbytes + 8 * 4
    await until(lambda: first in triton.unregistrations and first not in our_dev_shm_entries())
    assert shm.regions() == [second]
    assert_own_sums(await infer(shm, model, small), small)  # the larger region serves small calls too
    assert region_of(triton.calls[2]) == second


async def test_a_bytes_input_travels_in_the_message_next_to_a_placed_fp32_input(make_shm: MakeShm) -> None:
    triton = MemoryTriton()
    shm = make_shm(triton)
    inputs = {**rows(2, 0), "TEXT": np.array([[b"cat"], [b"dog"]], dtype=np.object_)}

    result = await shm.infer(TEXTS, inputs, ["OUTPUT__0", "ECHO"], "r")

    assert_own_sums(result, inputs)
    assert result["ECHO"].tolist() == [[b"CAT"], [b"DOG"]]
    [call] = triton.calls
    assert call.given == {"INPUT__0", "TEXT"}
    assert call.from_regions == {"INPUT__0"}
    assert call.in_body == {"TEXT"}
    assert call.into_regions == {"OUTPUT__0"}  # a BYTES output's size is unknown before the call


async def test_a_model_of_bytes_only_goes_over_the_wire_without_a_region(make_shm: MakeShm) -> None:
    triton = MemoryTriton()
    shm = make_shm(triton)

    result = await shm.infer(ECHO, {"TEXT": np.array([[b"hi"]], dtype=np.object_)}, ["ECHO"], "r")

    assert result["ECHO"].tolist() == [[b"HI"]]
    assert triton.wire_calls == 1
    assert (triton.register_attempts, shm.regions()) == (0, [])


# --- close --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("history", ["sequential", "concurrent", "retired"])
async def test_close_unregisters_every_region_and_leaves_nothing_in_dev_shm(make_shm: MakeShm, history: str) -> None:
    triton = MemoryTriton()
    shm = make_shm(triton)
    kept: list[pytest.ExceptionInfo[PredictorTimeoutError]] = []
    if history == "sequential":
        for seed in range(3):
            await infer(shm, spec(), rows(2, seed))
    elif history == "concurrent":
        await concurrently(shm, triton, spec(), [rows(1, seed) for seed in range(5)])
    else:
        triton.fail_next(PredictorTimeoutError("no answer within 60s"), after_work=True)
        with pytest.raises(PredictorTimeoutError) as cut_short:
            await infer(shm, spec(), rows(2, 0))
        kept.append(cut_short)  # its traceback, as an error reporter keeps it, holds the call's frames
        await infer(shm, spec(), rows(2, 1))  # the first region is retiring (for 60s)
    names = shm.regions()
    assert names
    assert set(names) <= our_dev_shm_entries()

    await shm.close()

    assert set(names) <= set(triton.unregistrations)
    assert triton.mapped == {}
    assert shm.regions() == []
    assert not our_dev_shm_entries() & set(names)
    assert all(info.value.http_status == 504 for info in kept)


# --- regions of processes that died without closing -------------------------------------------------


async def test_the_first_call_removes_the_regions_of_kxform_processes_that_died_without_closing(
    make_shm: MakeShm,
) -> None:
    # Two other processes' regions: one died (its lock file is free), one lives (it holds its lock).
    dead, alive = "kxform-999999-dead00", "kxform-999998-a11ve0"
    created = []
    for prefix in (dead, alive):
        for path in (DEV_SHM / f"{prefix}.lock", DEV_SHM / f"{prefix}-cifar10-1"):
            path.write_bytes(b"\0" * 4096)
            created.append(path)
    holder = os.open(DEV_SHM / f"{alive}.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    triton = MemoryTriton("auto")
    for prefix in (dead, alive):
        await triton.register_shared_memory(f"{prefix}-cifar10-1", f"/{prefix}-cifar10-1", 4096)
    try:
        shm = make_shm(triton)
        model = spec()
        request = rows(2, 0)

        assert_own_sums(await infer(shm, model, request), request)

        assert f"{dead}-cifar10-1" in triton.unregistrations
        assert not (DEV_SHM / f"{dead}-cifar10-1").exists()
        assert not (DEV_SHM / f"{dead}.lock").exists()
        assert f"{alive}-cifar10-1" in triton.mapped  # a live process keeps its regions
        assert (DEV_SHM / f"{alive}-cifar10-1").exists()
        assert any(path.name.endswith(".lock") for path in DEV_SHM.glob(f"kxform-{os.getpid()}-*"))
    finally:
        os.close(holder)
        for path in created:
            path.unlink(missing_ok=True)
