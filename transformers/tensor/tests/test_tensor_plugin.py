"""The tensor example plugin: a V2 tensor passed through to ``pooled`` without a copy, and V1 nested lists.

Unit tests run it through kxform's request path on ``kxform.testing.MockPredictor`` (no Triton, no torch);
integration tests compare with the TorchScript model run in-process, through kxform's pytest fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from kxform_example_tensor import rows_as_batch

import kxform
from kxform.testing import MockPredictor, TransformerRunner, readme_curl_lines, run_readme_curl

README = Path(__file__).resolve().parents[1] / "README.md"
IMAGE = (3, 224, 224)


def images(count: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """``count`` images of normalised-looking values, different per channel and image."""
    return np.random.default_rng(seed).normal(size=(count, *IMAGE)).astype(np.float32)


SPEC = kxform.ModelSpec(  # what Triton says of models/pooled
    "pooled",
    "1",
    (kxform.TensorSpec("INPUT__0", "FP32", IMAGE),),
    (kxform.TensorSpec("OUTPUT__0", "FP32", (10,)),),
    8,
)


def channel_means(inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """A stand-in for the model: the three channel means of each image, then seven zeros."""
    means = inputs["INPUT__0"].mean(axis=(2, 3))
    return {"OUTPUT__0": np.pad(means, ((0, 0), (0, 7)))}


def pooled_in_process(model_repository: Path, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import torch  # the reference: the TorchScript model that Triton serves

    module = torch.jit.load(str(model_repository / "pooled" / "1" / "model.pt"))
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(batch)).numpy())


async def test_a_v2_tensor_reaches_the_predictor_input_without_a_copy() -> None:
    batch = images(8)
    mock = MockPredictor(SPEC, channel_means)

    outputs = await TransformerRunner("tensor", mock).v2({"input": batch})

    (call,) = mock.calls
    assert call["INPUT__0"].shape == (8, *IMAGE)
    assert np.shares_memory(call["INPUT__0"], batch)  # the client's buffer itself, not a copy
    np.testing.assert_allclose(outputs["logits"], channel_means({"INPUT__0": batch})["OUTPUT__0"], rtol=1e-6)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(list(images(3)[::-1]), id="rows-out-of-order"),
        pytest.param([images(1, seed)[0] for seed in range(3)], id="rows-of-separate-arrays"),
        pytest.param(list(images(3)[:, :, ::2]), id="rows-not-contiguous"),
    ],
)
def test_rows_that_are_not_one_buffer_in_order_are_stacked(rows: list[npt.NDArray[np.float32]]) -> None:
    batch = rows_as_batch(rows)

    np.testing.assert_array_equal(batch, np.stack(rows))
    assert not any(np.shares_memory(batch, row) for row in rows)


async def test_v1_instances_get_the_logits_of_their_image() -> None:
    batch = images(2)

    predictions = await TransformerRunner("tensor", MockPredictor(SPEC, channel_means)).v1(batch.tolist())

    np.testing.assert_allclose(predictions, channel_means({"INPUT__0": batch})["OUTPUT__0"], rtol=1e-5)


@pytest.mark.parametrize(
    ("instance", "fragment"),
    [
        pytest.param([[[0.5] * 224] * 224] * 2 + [[[0.5] * 223] * 224], "inhomogeneous", id="ragged"),
        pytest.param([[["a"] * 224] * 224] * 3, "could not convert", id="strings"),
    ],
)
async def test_a_v1_instance_that_is_no_tensor_is_a_400_saying_what_to_send(instance: Any, fragment: str) -> None:
    mock = MockPredictor(SPEC, channel_means)

    with pytest.raises(kxform.RequestError) as caught:
        await TransformerRunner("tensor", mock).v1([images(1)[0].tolist(), instance])

    assert caught.value.http_status == 400
    assert fragment in caught.value.message
    assert "send each instance as nested lists of shape [3, 224, 224]" in caught.value.message
    assert mock.calls == []


async def test_a_v1_instance_of_another_shape_is_a_400_naming_the_models_shape() -> None:
    with pytest.raises(kxform.RequestError) as caught:
        await TransformerRunner("tensor", MockPredictor(SPEC, channel_means)).v1([[[[0.5] * 32] * 32] * 3])

    assert caught.value.http_status == 400
    assert "[batch, 3, 224, 224]" in caught.value.message


@pytest.mark.integration
async def test_v2_tensor_gets_the_logits_of_the_model_in_process(predictor: Any, model_repository: Path) -> None:
    batch = images(8)

    outputs = await TransformerRunner("tensor", predictor).v2({"input": batch})

    assert outputs["logits"].shape == (8, 10)
    assert outputs["logits"].dtype == np.float32
    np.testing.assert_allclose(outputs["logits"], pooled_in_process(model_repository, batch), rtol=0, atol=1e-5)


@pytest.mark.integration
async def test_v1_instances_get_the_logits_of_the_model_in_process(predictor: Any, model_repository: Path) -> None:
    batch = images(2)

    predictions = await TransformerRunner("tensor", predictor).v1(batch.tolist())

    np.testing.assert_allclose(predictions, pooled_in_process(model_repository, batch), rtol=0, atol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["v2", "grpc"])
def test_v2_request_gets_the_logits(kxform_serve: Any, model_repository: Path, protocol: str) -> None:
    batch = images(4, seed=2)

    outputs = getattr(kxform_serve("tensor"), protocol)({"input": batch})

    assert list(outputs) == ["logits"]
    np.testing.assert_allclose(outputs["logits"], pooled_in_process(model_repository, batch), atol=1e-5)


def _sent_images(line: str) -> npt.NDArray[np.float32]:
    """The README's requests are the image of channels 0.1, 0.5 and 0.9, V1 or V2."""
    assert "(0.1, 0.5, 0.9)" in line, line
    return np.stack([np.full(IMAGE[1:], v, np.float32) for v in (0.1, 0.5, 0.9)])[np.newaxis]


@pytest.mark.integration
@pytest.mark.parametrize("line", readme_curl_lines(README))
def test_readme_curl_line_works_as_printed(
    line: str, kxform_serve: Any, model_repository: Path, pytestconfig: pytest.Config
) -> None:
    stdout = run_readme_curl(line, kxform_serve("tensor"), pytestconfig.rootpath, timeout=60)

    reply = json.loads(stdout)
    logits = reply["outputs"][0]["data"] if "/v2/" in line else reply["predictions"]
    expected = pooled_in_process(model_repository, _sent_images(line))
    np.testing.assert_allclose(np.reshape(logits, (1, 10)), expected, rtol=0, atol=1e-5)
