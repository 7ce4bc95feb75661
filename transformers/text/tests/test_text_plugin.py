"""The text example plugin: strings through Triton to a TorchScript List[str] model and back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as triton_http

import kxform
from kxform.model import TransformerModel
from kxform.plugins import load_plugin
from kxform.predictor import PredictorClient
from kxform.testing import ServerProcess, readme_curl_lines, run_readme_curl, start_serve

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[1] / "README.md"
SEED_TEXTS = ["This movie was absolutely fantastic! Great acting and plot.", "Terrible movie, waste of time."]
TEXTS = [
    *SEED_TEXTS,
    "",
    "not bad at all, I'd even say good",
    "Ünïcode, emoji 🎬 and 日本語 go through as they are",
    "a\nmulti-line\ttext with\x00a NUL",
    *(f"review {i}: {'great ' * (i % 3)}{'boring ' * (i % 4)}plot" for i in range(66)),  # 72 in all: > 64
]


def text_in_process(model_repository: Path, texts: list[str]) -> np.ndarray:
    """The text model's class probabilities, run here with torch on the same strings."""
    module = torch.jit.load(str(model_repository / "text" / "1" / "model.pt"))
    with torch.no_grad():
        return np.asarray(module(texts).softmax(1).numpy())


def labels(model_repository: Path) -> list[str]:
    return (model_repository / "text" / "labels.txt").read_text().split()


def assert_predictions(predictions: list[dict[str, Any]], texts: list[str], model_repository: Path) -> None:
    expected = text_in_process(model_repository, texts)
    assert [p["label"] for p in predictions] == [labels(model_repository)[i] for i in expected.argmax(1)]
    np.testing.assert_allclose([p["score"] for p in predictions], expected.max(1), rtol=0, atol=1e-6)


async def test_texts_get_the_label_and_score_of_the_model_in_process(
    predictor: PredictorClient, model_repository: Path
) -> None:
    model = TransformerModel("text", load_plugin("text"), predictor)

    reply, _ = await model({"instances": TEXTS}, {})

    assert_predictions(reply["predictions"], TEXTS, model_repository)
    assert [p["label"] for p in reply["predictions"][:2]] == ["POSITIVE", "NEGATIVE"]  # seed 004's examples


async def test_labels_are_read_from_the_string_model(predictor: PredictorClient, model_repository: Path) -> None:
    model = TransformerModel("text", load_plugin("text"), predictor)

    spec = await model.model_spec()

    assert spec.inputs == (kxform.TensorSpec("INPUT__0", "BYTES", (1,)),)
    assert spec.labels == {"OUTPUT__0": tuple(labels(model_repository))}


async def test_text_objects_and_v2_bytes_are_instances_too(predictor: PredictorClient, model_repository: Path) -> None:
    model = TransformerModel("text", load_plugin("text"), predictor)

    reply, _ = await model({"instances": [{"text": text} for text in SEED_TEXTS]}, {})

    assert_predictions(reply["predictions"], SEED_TEXTS, model_repository)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        pytest.param(42, "instances[1] is int, not text", id="a-number"),
        pytest.param({"text": ["a", "b"]}, "instances[1].text is list, not text", id="text-list"),
        pytest.param({"review": "good"}, "instances[1] is dict, not text", id="unknown-key"),
        pytest.param("caf\udce9", "instances[1] is not valid Unicode", id="lone-surrogate"),
    ],
)
async def test_a_bad_instance_is_a_400_naming_it(predictor: PredictorClient, bad: Any, fragment: str) -> None:
    model = TransformerModel("text", load_plugin("text"), predictor)

    with pytest.raises(kxform.RequestError) as caught:
        await model({"instances": ["fine", bad]}, {})

    assert caught.value.http_status == 400
    assert fragment in caught.value.message


@pytest.fixture(scope="module")
def serve(triton: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_serve(["text"], f"127.0.0.1:{triton.ports['http']}", tmp_path_factory.mktemp("text"))
    yield server
    server.stop()


def test_v2_binary_request_gets_label_and_score_tensors(serve: ServerProcess, model_repository: Path) -> None:
    texts = TEXTS[:6]
    client = triton_http.InferenceServerClient(f"127.0.0.1:{serve.ports['http']}")
    tensor = triton_http.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=True)

    result = client.infer("text", [tensor])

    label, score = result.as_numpy("label"), result.as_numpy("score")
    assert score.dtype == np.float32
    predictions = [{"label": lb.decode(), "score": float(s)} for lb, s in zip(label, score, strict=True)]
    assert_predictions(predictions, texts, model_repository)


def test_v2_text_that_is_not_utf8_is_a_400(serve: ServerProcess) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{serve.ports['http']}")
    tensor = triton_http.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"fine", b"caf\xe9"], dtype=np.object_), binary_data=True)

    with pytest.raises(triton_http.InferenceServerException) as caught:
        client.infer("text", [tensor])

    assert caught.value.status() == "400"
    assert "instances[1] is not UTF-8 text" in str(caught.value.message())


@pytest.mark.parametrize("line", readme_curl_lines(README))
def test_readme_curl_line_works_as_printed(
    line: str, serve: ServerProcess, model_repository: Path, pytestconfig: pytest.Config
) -> None:
    stdout = run_readme_curl(line, serve, pytestconfig.rootpath, timeout=60)

    reply = json.loads(stdout)
    if "outputs" in reply:  # V2: one output per key of the per-instance dicts
        columns = {output["name"]: output["data"] for output in reply["outputs"]}
        pairs = zip(columns["label"], columns["score"], strict=True)
        reply = {"predictions": [{"label": label, "score": score} for label, score in pairs]}
    assert_predictions(reply["predictions"], SEED_TEXTS, model_repository)
