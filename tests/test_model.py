"""A plugin installed from its own package, served by TransformerModel against the real Triton."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from PIL import Image

from kxform.errors import PredictorTimeoutError, PredictorUnavailableError, RequestError
from kxform.model import TransformerModel
from kxform.plugins import load_plugin
from kxform.predictor import PredictorClient, PredictorSettings, create_predictor
from kxform.testing import ServerProcess, free_port, predictor_settings

pytestmark = pytest.mark.integration


def png_b64(seed: int, size: int = 32) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def cifar10_in_process(model_repository: Path, batch: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(model_repository / "cifar10" / "1" / "model.pt"))
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy())


def seed_tensor(b64: str) -> np.ndarray:
    """The seeds' own preprocessing (ToTensor + Normalize(0.5)), written out in numpy."""
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.float32) / 255
    return ((pixels - 0.5) / 0.5).transpose(2, 0, 1)


@pytest.mark.parametrize("key", ["image_bytes", "image"])
async def test_seed_instances_give_the_logits_of_the_model_in_process(
    predictor: PredictorClient, model_repository: Path, key: str
) -> None:
    model = TransformerModel("test-cifar10", load_plugin("test-cifar10"), predictor)
    images = [png_b64(seed) for seed in range(3)]

    reply, _ = await model({"instances": [{key: {"b64": b64}} for b64 in images]}, {})

    expected = cifar10_in_process(model_repository, np.stack([seed_tensor(b64) for b64 in images]))
    predictions = reply["predictions"]
    np.testing.assert_allclose([p["logits"] for p in predictions], expected, atol=1e-5)
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert [p["class"] for p in predictions] == [classes[i] for i in expected.argmax(1)]


async def test_thirty_instances_are_split_by_max_batch_size_and_returned_in_order(
    predictor: PredictorClient, model_repository: Path
) -> None:
    model = TransformerModel("test-tensor", load_plugin("test-tensor"), predictor)
    batch = np.random.default_rng(7).standard_normal((30, 3, 32, 32))

    # bytes, as kserve hands over a body curl sent as application/x-www-form-urlencoded
    body = orjson.dumps({"instances": batch.tolist()})
    reply, _ = await model(body, {"content-type": "application/x-www-form-urlencoded"})

    assert (await model.model_spec()).max_batch_size == 8
    assert len(reply["predictions"]) == 30
    np.testing.assert_allclose(reply["predictions"], cifar10_in_process(model_repository, batch), atol=1e-5)


async def test_async_plugin_returns_its_own_reply(predictor: PredictorClient) -> None:
    model = TransformerModel("test-async", load_plugin("test-async"), predictor)

    reply, _ = await model({"instances": np.zeros((2, 3, 32, 32)).tolist()}, {})

    assert reply["async"] is True
    assert np.asarray(reply["rows"]).shape == (2, 10)


@pytest.mark.parametrize(
    ("instances", "fragments"),
    [
        pytest.param(
            np.zeros((1, 3, 31, 32)).tolist(), ["input 'INPUT__0'", "[1, 3, 31, 32]", "[batch, 3, 32, 32]"], id="shape"
        ),
        pytest.param([[["a"]]], ["could not preprocess the instances", "ValueError", "'a'"], id="plugin-valueerror"),
    ],
)
async def test_mismatched_tensors_are_a_400_naming_input_got_and_expected(
    predictor: PredictorClient, instances: list[Any], fragments: list[str]
) -> None:
    model = TransformerModel("test-async", load_plugin("test-async"), predictor)

    with pytest.raises(RequestError) as caught:
        await model({"instances": instances}, {})

    assert caught.value.http_status == 400
    for fragment in fragments:
        assert fragment in caught.value.message


async def test_request_id_reaches_the_predictor(predictor: PredictorClient) -> None:
    # Triton quotes the request id in its errors: a wrongly shaped tensor makes it show.
    with pytest.raises(RequestError, match=r"\[request id: req-42\]"):
        await predictor.infer("cifar10", {"INPUT__0": np.zeros((1, 3, 2, 2), np.float32)}, ["OUTPUT__0"], "req-42")


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
async def test_unreachable_predictor_is_a_503_after_bounded_retries(protocol: str) -> None:
    client = create_predictor(PredictorSettings(f"127.0.0.1:{free_port()}", protocol, retries=2, backoff=0.01))  # type: ignore[arg-type]
    model = TransformerModel("test-tensor", load_plugin("test-tensor"), client)
    started = asyncio.get_running_loop().time()

    with pytest.raises(PredictorUnavailableError) as caught:
        await model({"instances": [np.zeros((3, 32, 32)).tolist()]}, {})

    assert caught.value.http_status == 503
    assert asyncio.get_running_loop().time() - started < 30  # bounded: no hang (the limit is not a benchmark)
    assert not await model.healthy()
    await client.close()


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
async def test_slow_predictor_is_a_504(triton: ServerProcess, protocol: str) -> None:
    client = create_predictor(predictor_settings(triton, protocol, timeout=0.0005))

    with pytest.raises(PredictorTimeoutError) as caught:
        await client.infer("resnet50", {"INPUT__0": np.zeros((8, 3, 224, 224), np.float32)}, ["OUTPUT__0"])

    assert caught.value.http_status == 504
    assert "--predictor_request_timeout_seconds" in caught.value.message
    await client.close()


async def test_predictor_model_missing_is_a_503(predictor: PredictorClient) -> None:
    with pytest.raises(PredictorUnavailableError, match="nope"):
        await predictor.model_metadata("nope")
