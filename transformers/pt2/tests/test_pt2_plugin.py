"""The pt2 example plugin: JSON documents -> ``kxform.Call`` -> ``aoti_example`` (a ``.pt2`` with dict inputs
and outputs) on the real Triton, against ``aoti_load_package`` in this process; V1, V2 REST and gRPC."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest

import kxform
from kxform.model import TransformerModel
from kxform.plugins import load_plugin
from kxform.predictor import PredictorClient
from kxform.testing import ServerProcess, readme_curl_lines, run_readme_curl, start_serve

README = Path(__file__).resolve().parents[1] / "README.md"
KEYS = ("hdata", "vdata", "kwarg1", "kw_arg2")


def document(seed: int) -> dict[str, Any]:
    """One instance: 16 numbers per tensor, different per instance and tensor."""
    rng = np.random.default_rng(seed)

    def row() -> list[float]:
        return [float(x) for x in rng.normal(size=16).astype(np.float32)]

    return {
        "hdata": row(),
        "vdata": row(),
        "options": {"keyA": row(), "key2": row()},
        "kwarg1": row(),
        "kw_arg2": row(),
    }


def in_process(model_repository: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """aoti_example's result for one document, from the package loaded here, as nested lists."""
    package = torch._inductor.aoti_load_package(str(model_repository / "aoti_example" / "1" / "model.pt2"))

    def tensor(values: list[float]) -> torch.Tensor:
        return torch.tensor([values], dtype=torch.float32)

    options = {key: tensor(value) for key, value in doc["options"].items()}
    result = package(
        tensor(doc["hdata"]),
        tensor(doc["vdata"]),
        options,
        kwarg1=tensor(doc["kwarg1"]),
        kw_arg2=tensor(doc["kw_arg2"]),
    )
    return _lists(result)


def _lists(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _lists(value) for key, value in tree.items()}
    if isinstance(tree, tuple | list):
        return [_lists(value) for value in tree]
    return tree[0].tolist()


def assert_same_result(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert sorted(got) == sorted(expected) == ["AAA", "BBB", "CCC", "DDD", "ZZZ"]
    assert len(got["BBB"]) == 2
    assert sorted(got["CCC"]) == ["key2", "keyA"]
    for key in ("AAA", "ZZZ"):
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-6)
    for index in (0, 1):
        np.testing.assert_allclose(got["BBB"][index], expected["BBB"][index], rtol=0, atol=1e-6)
    for group in ("CCC", "DDD"):
        for key, value in expected[group].items():
            np.testing.assert_allclose(got[group][key], value, rtol=0, atol=1e-6)


@pytest.mark.integration
async def test_five_instances_to_the_batch_1_model_get_five_answers_in_order(
    predictor: PredictorClient, model_repository: Path
) -> None:
    model = TransformerModel("pt2", load_plugin("pt2"), predictor)
    documents = [document(seed) for seed in range(5)]

    reply, _ = await model({"instances": documents}, {})

    assert len(reply["predictions"]) == 5
    for got, doc in zip(reply["predictions"], documents, strict=True):
        assert_same_result(got, in_process(model_repository, doc))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param(lambda d: d["options"].pop("key2"), "ARGS[2][key2] missing", id="missing-key"),
        pytest.param(
            lambda d: d["options"].update(key3=d["options"]["keyA"]),
            "ARGS[2][key3] is not an input of the model",
            id="extra-key",
        ),
        pytest.param(lambda d: d.pop("kw_arg2"), "KWARGS[kw_arg2] missing", id="missing-kwarg"),
        pytest.param(lambda d: d.update(kwarg3=d["kwarg1"]), "KWARGS[kwarg3] is not an input", id="extra-kwarg"),
    ],
)
async def test_a_document_that_does_not_fit_the_model_is_a_400_naming_the_path(
    predictor: PredictorClient, change: Any, fragment: str
) -> None:
    model = TransformerModel("pt2", load_plugin("pt2"), predictor)
    doc = document(0)
    change(doc)

    with pytest.raises(kxform.RequestError) as caught:
        await model({"instances": [doc]}, {})

    assert caught.value.http_status == 400
    assert fragment in str(caught.value)


@pytest.fixture(scope="module")
def serve(triton: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_serve(
        ["pt2"], f"127.0.0.1:{triton.ports['grpc']}", tmp_path_factory.mktemp("pt2"), ["--predictor_protocol=grpc-v2"]
    )
    yield server
    server.stop()


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.integration
def test_v1_rest_answers_with_the_models_structure(serve: ServerProcess, model_repository: Path) -> None:
    documents = [document(10), document(11)]

    status, reply = post(f"{serve.http_url}/v1/models/pt2:predict", {"instances": documents})

    assert status == 200
    for got, doc in zip(reply["predictions"], documents, strict=True):
        assert_same_result(got, in_process(model_repository, doc))


@pytest.mark.integration
def test_v1_rest_missing_key_is_a_400_naming_its_path(serve: ServerProcess) -> None:
    doc = document(0)
    del doc["options"]["key2"]

    status, reply = post(f"{serve.http_url}/v1/models/pt2:predict", {"instances": [doc]})

    assert status == 400
    assert "ARGS[2][key2] missing" in reply["error"]


def flat_expected(model_repository: Path, doc: dict[str, Any]) -> dict[str, list[float]]:
    result = in_process(model_repository, doc)
    flat = {f"RESULT[{key}]": result[key] for key in ("AAA", "ZZZ")}
    flat |= {f"RESULT[BBB][{i}]": result["BBB"][i] for i in (0, 1)}
    flat |= {f"RESULT[{group}][{key}]": value for group in ("CCC", "DDD") for key, value in result[group].items()}
    return flat


@pytest.mark.integration
def test_v2_rest_gets_the_models_tensors_under_its_own_names(serve: ServerProcess, model_repository: Path) -> None:
    documents = [document(20), document(21), document(22)]
    elements = np.array([orjson.dumps(doc) for doc in documents], dtype=np.object_)
    tensor = triton_http.InferInput("instance", [len(documents)], "BYTES")
    tensor.set_data_from_numpy(elements, binary_data=True)
    client = triton_http.InferenceServerClient(f"127.0.0.1:{serve.ports['http']}", network_timeout=60)

    result = client.infer("pt2", [tensor])

    names = {output["name"] for output in result.get_response()["outputs"]}
    for index, doc in enumerate(documents):
        expected = flat_expected(model_repository, doc)
        assert names == set(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(result.as_numpy(name)[index], value, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.integration
async def test_v2_grpc_gets_the_models_tensors_and_a_missing_key_is_invalid_argument(
    serve: ServerProcess, model_repository: Path
) -> None:
    good, bad = document(30), document(31)
    del bad["options"]["keyA"]
    client = InferenceGRPCClient(serve.grpc_url, timeout=60, retries=0)
    try:
        replies = []
        for doc in (good, bad):
            tensor = InferInput("instance", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([orjson.dumps(doc)], dtype=np.object_), binary_data=True)
            try:
                replies.append(await client.infer(InferRequest("pt2", [tensor])))
            except Exception as exc:  # kserve raises grpc's AioRpcError as it is
                replies.append(exc)
    finally:
        await client.close()

    outputs = {output.name: output.as_numpy() for output in replies[0].outputs}
    for name, value in flat_expected(model_repository, good).items():
        np.testing.assert_allclose(outputs[name][0], value, rtol=0, atol=1e-6, err_msg=name)
    error = replies[1]
    assert error.code().name == "INVALID_ARGUMENT"
    assert "ARGS[2][keyA] missing" in error.details()


@pytest.mark.integration
@pytest.mark.parametrize("line", readme_curl_lines(README))
def test_readme_curl_line_works_as_printed(
    line: str, serve: ServerProcess, model_repository: Path, pytestconfig: pytest.Config
) -> None:
    stdout = run_readme_curl(line, serve, pytestconfig.rootpath, timeout=60)

    reply = json.loads(stdout)
    sent = json.loads((pytestconfig.rootpath / "transformers" / "pt2" / "example.json").read_text())
    for got, doc in zip(reply["predictions"], sent["instances"], strict=True):
        assert_same_result(got, in_process(model_repository, doc))
