"""The pt2 example plugin: JSON documents -> ``kxform.Call`` -> ``aoti_example`` (a ``.pt2`` with dict inputs
and outputs).

Unit tests run the plugin through kxform's request path on ``kxform.testing.MockPredictor`` (no Triton, no torch);
the integration tests use kxform's pytest fixtures (``predictor``, ``kxform_serve``) on the real Triton and compare
with ``aoti_load_package`` in this process, over V1, V2 REST and gRPC.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kxform
from kxform.testing import MockPredictor, ReplyError, TransformerRunner, readme_curl_lines, run_readme_curl

README = Path(__file__).resolve().parents[1] / "README.md"
INPUTS = ("ARGS[0]", "ARGS[1]", "ARGS[2][keyA]", "ARGS[2][key2]", "KWARGS[kwarg1]", "KWARGS[kw_arg2]")
OUTPUTS = (
    "RESULT[AAA]",
    "RESULT[BBB][0]",
    "RESULT[BBB][1]",
    "RESULT[CCC][key2]",
    "RESULT[CCC][keyA]",
    "RESULT[DDD][KA]",
    "RESULT[DDD][KB]",
    "RESULT[ZZZ]",
)
SPEC = kxform.ModelSpec(  # what Triton says of models/aoti_example, for the tests that need no server
    "aoti_example",
    "1",
    tuple(kxform.TensorSpec(name, "FP32", (16,)) for name in INPUTS),
    tuple(kxform.TensorSpec(name, "FP32", (16,)) for name in OUTPUTS),
    1,
)


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


def echo(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A stand-in for the model: output k is input k (outputs past the inputs repeat ARGS[0]) plus k."""
    names = list(INPUTS)
    return {name: inputs[names[k] if k < len(names) else "ARGS[0]"] + k for k, name in enumerate(OUTPUTS)}


def echo_expected(doc: dict[str, Any]) -> dict[str, Any]:
    """What ``echo`` answers for one document, in the model's structure."""
    leaves = [doc["hdata"], doc["vdata"], doc["options"]["keyA"], doc["options"]["key2"], doc["kwarg1"]]
    leaves += [doc["kw_arg2"], doc["hdata"], doc["hdata"]]
    pairs = enumerate(zip(OUTPUTS, leaves, strict=True))
    at = {name: (np.asarray(leaf, np.float32) + k).tolist() for k, (name, leaf) in pairs}
    return {
        "AAA": at["RESULT[AAA]"],
        "BBB": [at["RESULT[BBB][0]"], at["RESULT[BBB][1]"]],
        "CCC": {"key2": at["RESULT[CCC][key2]"], "keyA": at["RESULT[CCC][keyA]"]},
        "DDD": {"KA": at["RESULT[DDD][KA]"], "KB": at["RESULT[DDD][KB]"]},
        "ZZZ": at["RESULT[ZZZ]"],
    }


def in_process(model_repository: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """aoti_example's result for one document, from the package loaded here, as nested lists."""
    import torch  # the reference: the .pt2 Triton serves, run here

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


def flat(result: dict[str, Any]) -> dict[str, list[float]]:
    """The model's structure under its forward-based names."""
    names = {f"RESULT[{key}]": result[key] for key in ("AAA", "ZZZ")}
    names |= {f"RESULT[BBB][{i}]": result["BBB"][i] for i in (0, 1)}
    for group in ("CCC", "DDD"):
        names |= {f"RESULT[{group}][{key}]": value for key, value in result[group].items()}
    return names


DOES_NOT_FIT = [
    pytest.param(lambda d: d["options"].pop("key2"), "ARGS[2][key2] missing", id="missing-key"),
    pytest.param(
        lambda d: d["options"].update(key3=d["options"]["keyA"]),
        "ARGS[2][key3] is not an input of the model",
        id="extra-key",
    ),
    pytest.param(lambda d: d.pop("kw_arg2"), "KWARGS[kw_arg2] missing", id="missing-kwarg"),
    pytest.param(lambda d: d.update(kwarg3=d["kwarg1"]), "KWARGS[kwarg3] is not an input", id="extra-kwarg"),
]


# --- unit tests: MockPredictor, no Triton, no torch ------------------------------------------------------


async def test_five_instances_to_a_batch_1_model_are_five_calls_answered_in_order() -> None:
    mock = MockPredictor(SPEC, echo)
    documents = [document(seed) for seed in range(5)]

    predictions = await TransformerRunner("pt2", mock).v1(documents)

    assert [len(call["ARGS[0]"]) for call in mock.calls] == [1] * 5
    for got, doc in zip(predictions, documents, strict=True):
        assert_same_result(got, echo_expected(doc))


@pytest.mark.parametrize(("change", "fragment"), DOES_NOT_FIT)
async def test_a_document_that_does_not_fit_the_model_is_a_400_naming_the_path(change: Any, fragment: str) -> None:
    mock = MockPredictor(SPEC, echo)
    doc = document(0)
    change(doc)

    with pytest.raises(kxform.RequestError) as caught:
        await TransformerRunner("pt2", mock).v1([doc])

    assert caught.value.http_status == 400
    assert fragment in str(caught.value)
    assert mock.calls == []


async def test_v2_gets_the_models_tensors_under_its_own_names() -> None:
    documents = [document(1), document(2)]
    runner = TransformerRunner("pt2", MockPredictor(SPEC, echo))

    outputs = await runner.v2({"instance": [json.dumps(doc) for doc in documents]})

    assert sorted(outputs) == sorted(OUTPUTS)
    for index, doc in enumerate(documents):
        for name, value in flat(echo_expected(doc)).items():
            np.testing.assert_allclose(outputs[name][index], value, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    ("instance", "fragment"),
    [
        pytest.param("[1, 2", "instances[0] is not JSON", id="truncated-json"),
        pytest.param("[1, 2]", "instances[0] is list; send a JSON object", id="not-an-object"),
        pytest.param('{"hdata": [1]}', "instances[0] has no vdata, options", id="missing-arguments"),
    ],
)
async def test_an_element_that_is_not_a_document_is_a_400(instance: str, fragment: str) -> None:
    with pytest.raises(kxform.RequestError) as caught:
        await TransformerRunner("pt2", MockPredictor(SPEC, echo)).v2({"instance": [instance]})

    assert caught.value.http_status == 400
    assert fragment in str(caught.value)


# --- integration tests: the real Triton ------------------------------------------------------------------


@pytest.mark.integration
async def test_five_instances_to_the_batch_1_model_get_five_answers_in_order(
    predictor: Any, model_repository: Path
) -> None:
    documents = [document(seed) for seed in range(5)]

    predictions = await TransformerRunner("pt2", predictor).v1(documents)

    assert len(predictions) == 5
    for got, doc in zip(predictions, documents, strict=True):
        assert_same_result(got, in_process(model_repository, doc))


@pytest.mark.integration
@pytest.mark.parametrize(("change", "fragment"), DOES_NOT_FIT)
def test_v1_rest_a_document_that_does_not_fit_is_a_400_naming_the_path(
    kxform_serve: Any, change: Any, fragment: str
) -> None:
    doc = document(0)
    change(doc)

    reply = kxform_serve("pt2", "--predictor_protocol=grpc-v2").v1([doc])

    assert reply.status == 400
    assert fragment in reply.json["error"]


@pytest.mark.integration
def test_v1_rest_answers_with_the_models_structure(kxform_serve: Any, model_repository: Path) -> None:
    documents = [document(10), document(11)]

    predictions = kxform_serve("pt2", "--predictor_protocol=grpc-v2").v1(documents).predictions

    for got, doc in zip(predictions, documents, strict=True):
        assert_same_result(got, in_process(model_repository, doc))


@pytest.mark.integration
def test_v2_rest_gets_the_models_tensors_under_its_own_names(kxform_serve: Any, model_repository: Path) -> None:
    documents = [document(20), document(21), document(22)]

    outputs = kxform_serve("pt2", "--predictor_protocol=grpc-v2").v2({"instance": [json.dumps(d) for d in documents]})

    for index, doc in enumerate(documents):
        expected = flat(in_process(model_repository, doc))
        assert set(outputs) == set(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(outputs[name][index], value, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.integration
def test_v2_grpc_gets_the_models_tensors_and_a_missing_key_is_invalid_argument(
    kxform_serve: Any, model_repository: Path
) -> None:
    serve = kxform_serve("pt2", "--predictor_protocol=grpc-v2")
    good, bad = document(30), document(31)
    del bad["options"]["keyA"]

    outputs = serve.grpc({"instance": [json.dumps(good)]})
    with pytest.raises(ReplyError) as caught:
        serve.grpc({"instance": [json.dumps(bad)]})

    for name, value in flat(in_process(model_repository, good)).items():
        np.testing.assert_allclose(outputs[name][0], value, rtol=0, atol=1e-6, err_msg=name)
    assert caught.value.status == "INVALID_ARGUMENT"
    assert "ARGS[2][keyA] missing" in caught.value.message


@pytest.mark.integration
@pytest.mark.parametrize("line", readme_curl_lines(README))
def test_readme_curl_line_works_as_printed(
    line: str, kxform_serve: Any, model_repository: Path, pytestconfig: pytest.Config
) -> None:
    stdout = run_readme_curl(line, kxform_serve("pt2", "--predictor_protocol=grpc-v2"), pytestconfig.rootpath, 60)

    reply = json.loads(stdout)
    sent = json.loads((pytestconfig.rootpath / "transformers" / "pt2" / "example.json").read_text())
    for got, doc in zip(reply["predictions"], sent["instances"], strict=True):
        assert_same_result(got, in_process(model_repository, doc))
