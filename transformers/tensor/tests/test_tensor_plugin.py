"""The tensor example plugin: FP32 images passed through to ``pooled``, against the model in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
import torch
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest
from kxform_example_tensor import rows_as_batch

import kxform
from kxform.envelope import decode_v2
from kxform.model import TransformerModel
from kxform.plugins import load_plugin
from kxform.predictor import PredictorClient
from kxform.testing import ServerProcess, readme_curl_lines, run_readme_curl, start_serve
from kxform.v2 import V2Request, V2Response, decode_rest_request

README = Path(__file__).resolve().parents[1] / "README.md"
IMAGE = (3, 224, 224)


def images(count: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """``count`` images of normalised-looking values, different per channel and image."""
    return np.random.default_rng(seed).normal(size=(count, *IMAGE)).astype(np.float32)


def pooled_in_process(model_repository: Path, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    module = torch.jit.load(str(model_repository / "pooled" / "1" / "model.pt"))
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(batch)).numpy())


def binary_request(batch: npt.NDArray[np.float32]) -> V2Request:
    """What kxform's HTTP front makes of a V2 binary body carrying ``batch`` as the input ``input``."""
    raw = batch.tobytes()
    parameters = {"binary_data_size": len(raw)}
    entry = {"name": "input", "datatype": "FP32", "shape": list(batch.shape), "parameters": parameters}
    header = orjson.dumps({"inputs": [entry]})
    return decode_rest_request(header + raw, str(len(header)), "tensor")


def test_a_v2_tensor_reaches_the_predictor_input_without_a_copy() -> None:
    request = binary_request(images(8))
    instances = decode_v2(request, load_plugin("tensor").transformer.inputs).instances

    batch = rows_as_batch(instances)

    assert batch.shape == (8, *IMAGE)
    assert np.shares_memory(batch, request.inputs[0].data)
    np.testing.assert_array_equal(batch, request.inputs[0].data)


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


@pytest.mark.integration
async def test_v2_tensor_gets_the_logits_of_the_model_in_process(
    predictor: PredictorClient, model_repository: Path
) -> None:
    model = TransformerModel("tensor", load_plugin("tensor"), predictor)
    batch = images(8)

    reply, _ = await model(binary_request(batch), {})

    assert isinstance(reply, V2Response)
    (logits,) = reply.outputs
    assert (logits.name, logits.datatype, logits.shape) == ("logits", "FP32", (8, 10))
    np.testing.assert_allclose(logits.data, pooled_in_process(model_repository, batch), rtol=0, atol=1e-5)


@pytest.mark.integration
async def test_v1_instances_get_the_logits_of_the_model_in_process(
    predictor: PredictorClient, model_repository: Path
) -> None:
    model = TransformerModel("tensor", load_plugin("tensor"), predictor)
    batch = images(2)

    reply, _ = await model({"instances": batch.tolist()}, {})

    np.testing.assert_allclose(reply["predictions"], pooled_in_process(model_repository, batch), rtol=0, atol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("instance", "fragment"),
    [
        pytest.param([[[0.5] * 224] * 224] * 2 + [[[0.5] * 223] * 224], "inhomogeneous", id="ragged"),
        pytest.param([[["a"] * 224] * 224] * 3, "could not convert", id="strings"),
    ],
)
async def test_a_v1_instance_that_is_no_tensor_is_a_400_saying_what_to_send(
    predictor: PredictorClient, instance: Any, fragment: str
) -> None:
    model = TransformerModel("tensor", load_plugin("tensor"), predictor)

    with pytest.raises(kxform.RequestError) as caught:
        await model({"instances": [images(1)[0].tolist(), instance]}, {})

    assert caught.value.http_status == 400
    assert fragment in caught.value.message
    assert "send each instance as nested lists of shape [3, 224, 224]" in caught.value.message


@pytest.mark.integration
async def test_a_v1_instance_of_another_shape_is_a_400_naming_the_models_shape(predictor: PredictorClient) -> None:
    model = TransformerModel("tensor", load_plugin("tensor"), predictor)

    with pytest.raises(kxform.RequestError) as caught:
        await model({"instances": [[[[0.5] * 32] * 32] * 3]}, {})

    assert caught.value.http_status == 400
    assert "[batch, 3, 224, 224]" in caught.value.message


@pytest.fixture(scope="module")
def serve(triton: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_serve(["tensor"], f"127.0.0.1:{triton.ports['http']}", tmp_path_factory.mktemp("tensor"))
    yield server
    server.stop()


@pytest.mark.integration
def test_v2_binary_request_from_tritonclient_gets_the_logits(serve: ServerProcess, model_repository: Path) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{serve.ports['http']}", network_timeout=60)
    batch = images(8, seed=1)
    tensor = triton_http.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)

    result = client.infer("tensor", [tensor], outputs=[triton_http.InferRequestedOutput("logits", binary_data=True)])

    np.testing.assert_allclose(result.as_numpy("logits"), pooled_in_process(model_repository, batch), atol=1e-5)


@pytest.mark.integration
async def test_v2_grpc_request_gets_the_logits(serve: ServerProcess, model_repository: Path) -> None:
    # kserve's gRPC client: tritonclient.grpc's protos clash with kserve's in one process (tests/triton/).
    batch = images(4, seed=2)
    tensor = InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    client = InferenceGRPCClient(serve.grpc_url, timeout=60, retries=0)
    try:
        response = await client.infer(InferRequest("tensor", [tensor]))
    finally:
        await client.close()

    (logits,) = response.outputs
    assert logits.name == "logits"
    np.testing.assert_allclose(logits.as_numpy(), pooled_in_process(model_repository, batch), atol=1e-5)


def _sent_images(line: str) -> npt.NDArray[np.float32]:
    """The README's requests are the image of channels 0.1, 0.5 and 0.9, V1 or V2."""
    assert "(0.1, 0.5, 0.9)" in line, line
    return np.stack([np.full(IMAGE[1:], v, np.float32) for v in (0.1, 0.5, 0.9)])[np.newaxis]


@pytest.mark.integration
@pytest.mark.parametrize("line", readme_curl_lines(README))
def test_readme_curl_line_works_as_printed(
    line: str, serve: ServerProcess, model_repository: Path, pytestconfig: pytest.Config
) -> None:
    stdout = run_readme_curl(line, serve, pytestconfig.rootpath, timeout=60)

    reply = json.loads(stdout)
    logits = reply["outputs"][0]["data"] if "/v2/" in line else reply["predictions"]
    expected = pooled_in_process(model_repository, _sent_images(line))
    np.testing.assert_allclose(np.reshape(logits, (1, 10)), expected, rtol=0, atol=1e-5)
