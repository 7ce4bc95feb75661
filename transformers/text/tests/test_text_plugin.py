"""The text example plugin: strings in, the model's label and score out.

Unit tests run it through kxform's request path on ``kxform.testing.MockPredictor`` (no Triton, no torch);
integration tests compare with the TorchScript model run in-process, through kxform's pytest fixtures.
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
SEED_TEXTS = ["This movie was absolutely fantastic! Great acting and plot.", "Terrible movie, waste of time."]
TEXTS = [
    *SEED_TEXTS,
    "",
    "not bad at all, I'd even say good",
    "Ünïcode, emoji 🎬 and 日本語 go through as they are",
    "a\nmulti-line\ttext with\x00a NUL",
    *(f"review {i}: {'great ' * (i % 3)}{'boring ' * (i % 4)}plot" for i in range(66)),  # 72 in all: > 64
]


SPEC = kxform.ModelSpec(  # what Triton says of models/text
    "text",
    "1",
    (kxform.TensorSpec("INPUT__0", "BYTES", (1,)),),
    (kxform.TensorSpec("OUTPUT__0", "FP32", (2,)),),
    64,
    {"OUTPUT__0": ("NEGATIVE", "POSITIVE")},
)


def exclamations(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A stand-in for the model: a text with a '!' is positive (logits [0, 2]), any other negative ([2, 0])."""
    positive = np.array([b"!" in text for text in inputs["INPUT__0"].ravel()])
    return {"OUTPUT__0": np.where(positive[:, None], [0.0, 2.0], [2.0, 0.0]).astype(np.float32)}


def text_in_process(model_repository: Path, texts: list[str]) -> np.ndarray:
    """The text model's class probabilities, run here with torch on the same strings."""
    import torch  # the reference: the TorchScript model that Triton serves

    module = torch.jit.load(str(model_repository / "text" / "1" / "model.pt"))
    with torch.no_grad():
        return np.asarray(module(texts).softmax(1).numpy())


def labels(model_repository: Path) -> list[str]:
    return (model_repository / "text" / "labels.txt").read_text().split()


def assert_predictions(predictions: list[dict[str, Any]], texts: list[str], model_repository: Path) -> None:
    expected = text_in_process(model_repository, texts)
    assert [p["label"] for p in predictions] == [labels(model_repository)[i] for i in expected.argmax(1)]
    np.testing.assert_allclose([p["score"] for p in predictions], expected.max(1), rtol=0, atol=1e-6)


async def test_each_text_reaches_the_model_as_one_bytes_row_and_gets_its_label_and_score() -> None:
    mock = MockPredictor(SPEC, exclamations)

    predictions = await TransformerRunner("text", mock).v1([*SEED_TEXTS, {"text": "Ünïcode!"}])

    (call,) = mock.calls
    assert call["INPUT__0"].shape == (3, 1)
    assert list(call["INPUT__0"].ravel()) == [*(t.encode() for t in SEED_TEXTS), "Ünïcode!".encode()]
    assert [p["label"] for p in predictions] == ["POSITIVE", "NEGATIVE", "POSITIVE"]
    np.testing.assert_allclose([p["score"] for p in predictions], 1 / (1 + np.exp(-2.0)), rtol=1e-6)


async def test_more_texts_than_max_batch_size_are_split_into_calls_and_joined_in_order() -> None:
    mock = MockPredictor(SPEC, exclamations)

    predictions = await TransformerRunner("text", mock).v1(TEXTS)

    assert [len(call["INPUT__0"]) for call in mock.calls] == [64, len(TEXTS) - 64]
    assert [p["label"] for p in predictions] == ["POSITIVE" if "!" in t else "NEGATIVE" for t in TEXTS]


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        pytest.param(42, "instances[1] is int, not text", id="a-number"),
        pytest.param({"text": ["a", "b"]}, "instances[1].text is list, not text", id="text-list"),
        pytest.param({"review": "good"}, "instances[1] is dict, not text", id="unknown-key"),
        pytest.param("caf\udce9", "instances[1] is not valid Unicode", id="lone-surrogate"),
    ],
)
async def test_a_bad_instance_is_a_400_naming_it(bad: Any, fragment: str) -> None:
    mock = MockPredictor(SPEC, exclamations)

    with pytest.raises(kxform.RequestError) as caught:
        await TransformerRunner("text", mock).v1(["fine", bad])

    assert caught.value.http_status == 400
    assert fragment in caught.value.message
    assert mock.calls == []


async def test_v2_text_that_is_not_utf8_is_a_400_naming_the_element() -> None:
    with pytest.raises(kxform.RequestError) as caught:
        await TransformerRunner("text", MockPredictor(SPEC, exclamations)).v2({"text": [b"fine", b"caf\xe9"]})

    assert caught.value.http_status == 400
    assert "instances[1] is not UTF-8 text" in caught.value.message


@pytest.mark.integration
async def test_texts_get_the_label_and_score_of_the_model_in_process(predictor: Any, model_repository: Path) -> None:
    predictions = await TransformerRunner("text", predictor).v1(TEXTS)

    assert_predictions(predictions, TEXTS, model_repository)
    assert [p["label"] for p in predictions[:2]] == ["POSITIVE", "NEGATIVE"]  # seed 004's examples


@pytest.mark.integration
async def test_labels_are_read_from_the_string_model(predictor: Any, model_repository: Path) -> None:
    spec = await TransformerRunner("text", predictor).model_spec()

    assert spec.inputs == (kxform.TensorSpec("INPUT__0", "BYTES", (1,)),)
    assert spec.labels == {"OUTPUT__0": tuple(labels(model_repository))}


@pytest.mark.integration
async def test_text_objects_are_instances_too(predictor: Any, model_repository: Path) -> None:
    predictions = await TransformerRunner("text", predictor).v1([{"text": text} for text in SEED_TEXTS])

    assert_predictions(predictions, SEED_TEXTS, model_repository)


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["v2", "grpc"])
def test_v2_request_gets_label_and_score_tensors(kxform_serve: Any, model_repository: Path, protocol: str) -> None:
    texts = TEXTS[:6]

    outputs = getattr(kxform_serve("text"), protocol)({"text": np.array([t.encode() for t in texts], np.object_)})

    label, score = outputs["label"], outputs["score"]
    assert score.dtype == np.float32
    predictions = [{"label": lb.decode(), "score": float(s)} for lb, s in zip(label, score, strict=True)]
    assert_predictions(predictions, texts, model_repository)


@pytest.mark.integration
def test_v2_text_that_is_not_utf8_is_a_400_from_the_server(kxform_serve: Any) -> None:
    with pytest.raises(ReplyError) as caught:
        kxform_serve("text").v2({"text": np.array([b"fine", b"caf\xe9"], dtype=np.object_)})

    assert caught.value.status == 400
    assert "instances[1] is not UTF-8 text" in caught.value.message


@pytest.mark.integration
@pytest.mark.parametrize("line", readme_curl_lines(README))
def test_readme_curl_line_works_as_printed(
    line: str, kxform_serve: Any, model_repository: Path, pytestconfig: pytest.Config
) -> None:
    stdout = run_readme_curl(line, kxform_serve("text"), pytestconfig.rootpath, timeout=60)

    reply = json.loads(stdout)
    if "outputs" in reply:  # V2: one output per key of the per-instance dicts
        columns = {output["name"]: output["data"] for output in reply["outputs"]}
        pairs = zip(columns["label"], columns["score"], strict=True)
        reply = {"predictions": [{"label": label, "score": score} for label, score in pairs]}
    assert_predictions(reply["predictions"], SEED_TEXTS, model_repository)
