"""The batcher (``kxform.batching``) against an in-memory predictor: what it sends, and what each request gets.

Fast unit tests on ``kxform.testing.MockPredictor``, which checks each call's inputs against the model's spec as
Triton does (a call over ``max_batch_size`` fails); ``tests/test_batching_triton.py`` checks the same promises
through ``kxform serve`` against the real Triton. The in-memory predictor answers ``OUTPUT__0 = row sums`` of
``INPUT__0``, so every request can check that it got its own rows back, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kxform.batching import Batcher
from kxform.errors import PredictorUnavailableError, RequestError
from kxform.spec import ModelSpec, TensorSpec
from kxform.testing import MockPredictor

Array = np.ndarray[Any, Any]
HANG_GUARD_SECONDS = 30  # not a speed bound: a test that waits this long has hung
WAIT_FOREVER_US = 3600 * 10**6


def spec(max_batch_size: int = 8, dims: tuple[int, ...] = (3,)) -> ModelSpec:
    return ModelSpec(
        "model",
        "1",
        (TensorSpec("INPUT__0", "FP32", dims),),
        (TensorSpec("OUTPUT__0", "FP32", (1,)),),
        max_batch_size,
    )


class RowSums(MockPredictor):
    """kxform.testing's in-memory predictor, with a model that sums each row; it can be held or made to fail.

    ``rows_per_call`` lists how many rows each predictor call carried.
    """

    def __init__(self, model: ModelSpec | None = None) -> None:
        super().__init__(model or spec(), self.answer)
        self.gate: asyncio.Event | None = None
        self.failure: Exception | None = None
        self.reject_nan = False

    @property
    def rows_per_call(self) -> list[int]:
        return [len(call["INPUT__0"]) for call in self.calls]

    async def answer(self, inputs: dict[str, Array]) -> dict[str, Array]:
        array = inputs["INPUT__0"]
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        if self.reject_nan and np.isnan(array).any():
            raise RequestError("input 'INPUT__0' holds NaN")
        return {"OUTPUT__0": array.reshape(len(array), -1).sum(axis=1, keepdims=True)}


def rows(count: int, seed: int, dims: tuple[int, ...] = (3,)) -> dict[str, Array]:
    return {"INPUT__0": np.random.default_rng(seed).standard_normal((count, *dims)).astype(np.float32)}


def own_sums(inputs: Mapping[str, Array]) -> Array:
    array = inputs["INPUT__0"]
    return array.reshape(len(array), -1).sum(axis=1, keepdims=True)


async def settle() -> None:
    """Let every task that can run, run (a few turns of the event loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def held_call(batcher: Batcher, model: ModelSpec) -> asyncio.Future[dict[str, Array]]:
    """A first request, sent and held at the predictor's gate: the predictor is busy until it opens."""
    call = asyncio.ensure_future(batcher.infer(model, rows(1, 0), ["OUTPUT__0"], "first"))
    await settle()
    return call


async def infer_all(batcher: Batcher, model: ModelSpec, requests: list[dict[str, Array]]) -> list[Any]:
    calls = [batcher.infer(model, request, ["OUTPUT__0"], f"r{i}") for i, request in enumerate(requests)]
    return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), HANG_GUARD_SECONDS)


async def test_concurrent_requests_share_calls_and_each_gets_its_own_rows() -> None:
    predictor = RowSums()
    batcher = Batcher(predictor, max_delay_us=WAIT_FOREVER_US)
    requests = [rows(1, seed) for seed in range(20)]

    results = await infer_all(batcher, spec(), requests)

    assert len(predictor.rows_per_call) < len(requests)
    assert max(predictor.rows_per_call) <= 8
    assert sum(predictor.rows_per_call) == 20
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_allclose(result["OUTPUT__0"], own_sums(request), rtol=1e-6)


async def test_a_request_that_finds_the_predictor_idle_is_not_held_for_the_delay() -> None:
    predictor = RowSums()
    batcher = Batcher(predictor, max_delay_us=WAIT_FOREVER_US)  # were it held for the delay, this would hang

    [result] = await infer_all(batcher, spec(), [rows(1, 0)])

    assert predictor.rows_per_call == [1]
    np.testing.assert_allclose(result["OUTPUT__0"], own_sums(rows(1, 0)), rtol=1e-6)


async def test_requests_gather_while_a_call_is_in_flight_and_go_when_it_returns() -> None:
    predictor = RowSums()
    predictor.gate = asyncio.Event()
    batcher = Batcher(predictor, max_delay_us=WAIT_FOREVER_US)
    model = spec()
    first = await held_call(batcher, model)  # the predictor is now busy
    later = [asyncio.ensure_future(batcher.infer(model, rows(1, s), ["OUTPUT__0"], "")) for s in range(1, 6)]
    await settle()

    assert predictor.rows_per_call == [1]  # the five wait: the predictor is busy and the delay has not passed
    predictor.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), HANG_GUARD_SECONDS)
    assert predictor.rows_per_call == [1, 5]


async def test_a_full_batch_goes_at_once_and_the_delay_bounds_the_wait_of_the_rest() -> None:
    model = spec(max_batch_size=4)
    predictor = RowSums(model)
    predictor.gate = asyncio.Event()
    batcher = Batcher(predictor, max_delay_us=1000)
    busy = await held_call(batcher, model)  # the predictor is now busy
    full = [asyncio.ensure_future(batcher.infer(model, rows(1, s), ["OUTPUT__0"], "")) for s in range(4)]
    await settle()
    assert predictor.rows_per_call == [1, 4]  # four rows fill a batch: sent although a call is in flight

    rest = asyncio.ensure_future(batcher.infer(model, rows(2, 9), ["OUTPUT__0"], ""))
    while len(predictor.rows_per_call) < 3:  # sent once its delay passes, though the calls before it still wait
        await asyncio.sleep(0.001)
    assert predictor.rows_per_call == [1, 4, 2]
    predictor.gate.set()
    await asyncio.wait_for(asyncio.gather(busy, *full, rest), HANG_GUARD_SECONDS)


async def test_members_are_packed_up_to_max_batch_size_without_splitting_a_request() -> None:
    predictor = RowSums()
    batcher = Batcher(predictor, max_delay_us=WAIT_FOREVER_US)
    requests = [rows(3, seed) for seed in range(3)]

    results = await infer_all(batcher, spec(max_batch_size=8), requests)

    assert sorted(predictor.rows_per_call) == [3, 6]
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_allclose(result["OUTPUT__0"], own_sums(request), rtol=1e-6)


async def test_inputs_of_different_shapes_batch_only_with_their_kind() -> None:
    model = spec(dims=(-1,))
    predictor = RowSums(model)
    batcher = Batcher(predictor, max_delay_us=WAIT_FOREVER_US)
    requests = [rows(1, 0, (4,)), rows(1, 1, (5,)), rows(1, 2, (4,)), rows(1, 3, (5,))]

    results = await infer_all(batcher, model, requests)

    assert sorted(predictor.rows_per_call) == [2, 2]
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_allclose(result["OUTPUT__0"], own_sums(request), rtol=1e-6)


async def test_a_failed_call_fails_every_member_with_the_same_error() -> None:
    predictor = RowSums()
    predictor.failure = PredictorUnavailableError("the predictor at memory:0 is unreachable")
    batcher = Batcher(predictor, max_delay_us=WAIT_FOREVER_US)

    results = await infer_all(batcher, spec(), [rows(1, seed) for seed in range(6)])

    assert all(isinstance(result, PredictorUnavailableError) for result in results)
    assert {result.message for result in results} == {"the predictor at memory:0 is unreachable"}


async def test_a_batch_the_predictor_rejects_is_resent_member_by_member_so_only_the_bad_one_fails() -> None:
    predictor = RowSums()
    predictor.reject_nan = True
    batcher = Batcher(predictor, max_delay_us=WAIT_FOREVER_US)
    requests = [rows(1, seed) for seed in range(5)]
    requests[2]["INPUT__0"][0, 1] = np.nan

    results = await infer_all(batcher, spec(), requests)

    assert isinstance(results[2], RequestError)
    for index in (0, 1, 3, 4):
        np.testing.assert_allclose(results[index]["OUTPUT__0"], own_sums(requests[index]), rtol=1e-6)


async def test_a_cancelled_request_is_not_sent() -> None:
    predictor = RowSums()
    predictor.gate = asyncio.Event()
    batcher = Batcher(predictor, max_delay_us=WAIT_FOREVER_US)
    model = spec()
    busy = await held_call(batcher, model)  # the predictor is now busy
    gone = asyncio.ensure_future(batcher.infer(model, rows(2, 1), ["OUTPUT__0"], ""))
    kept = asyncio.ensure_future(batcher.infer(model, rows(1, 2), ["OUTPUT__0"], ""))
    await settle()
    gone.cancel()
    predictor.gate.set()

    await asyncio.wait_for(asyncio.gather(busy, kept), HANG_GUARD_SECONDS)
    assert predictor.rows_per_call == [1, 1]


@pytest.mark.parametrize("model", [spec(max_batch_size=0, dims=(2, 3)), spec()], ids=["unbatched-model", "off"])
async def test_no_batching_for_a_model_without_a_batch_axis_or_with_delay_zero(model: ModelSpec) -> None:
    predictor = RowSums(model)
    batcher = Batcher(predictor, max_delay_us=0 if model.batched else WAIT_FOREVER_US)
    requests = [rows(2, seed) for seed in range(4)]

    await infer_all(batcher, model, requests)

    assert predictor.rows_per_call == [2, 2, 2, 2]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 8), min_size=1, max_size=24),
    max_batch_size=st.integers(1, 8),
    delay_us=st.sampled_from([1, 500, WAIT_FOREVER_US]),
    busy=st.booleans(),
)
def test_any_mix_of_requests_gets_its_own_rows_in_order_and_no_call_exceeds_the_batch(
    sizes: list[int], max_batch_size: int, delay_us: int, busy: bool
) -> None:
    sizes = [min(size, max_batch_size) for size in sizes]  # larger requests are split before the batcher
    requests = [rows(size, seed) for seed, size in enumerate(sizes)]

    async def scenario() -> list[Any]:
        model = spec(max_batch_size=max_batch_size)
        predictor = RowSums(model)  # it refuses a call of more rows than max_batch_size, as Triton does
        batcher = Batcher(predictor, max_delay_us=delay_us)
        if busy:  # a call in flight: the requests gather instead of leaving one by one
            predictor.gate = asyncio.Event()
            asyncio.get_running_loop().call_later(0.002, predictor.gate.set)
        results = await infer_all(batcher, model, requests)
        assert max(predictor.rows_per_call) <= max_batch_size
        assert sum(predictor.rows_per_call) == sum(sizes)
        return results

    results = asyncio.run(scenario())
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_allclose(result["OUTPUT__0"], own_sums(request), rtol=1e-5)


async def test_an_idle_kind_leaves_no_queue_behind() -> None:
    model = spec(dims=(-1,))
    batcher = Batcher(RowSums(model), max_delay_us=WAIT_FOREVER_US)

    await infer_all(batcher, model, [rows(1, seed, (width,)) for seed, width in enumerate(range(1, 40))])

    assert batcher._queues == {}  # one per shape while in use; dynamic shapes must not pile them up


async def test_close_cancels_calls_that_outlast_the_grace_period_and_their_members_end() -> None:
    predictor = RowSums()
    predictor.gate = asyncio.Event()  # never set: the predictor hangs
    batcher = Batcher(predictor, max_delay_us=WAIT_FOREVER_US)
    waiting = [asyncio.ensure_future(batcher.infer(spec(), rows(1, s), ["OUTPUT__0"], "")) for s in range(3)]
    await settle()

    await asyncio.wait_for(batcher.close(timeout=0.05), HANG_GUARD_SECONDS)

    done, _ = await asyncio.wait(waiting, timeout=HANG_GUARD_SECONDS)
    assert done == set(waiting)
    assert all(future.cancelled() for future in waiting)
