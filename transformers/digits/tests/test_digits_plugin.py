"""The digits example plugin: scikit-learn's digits as image files, on an in-memory predictor and a real server.

Unit tests run it through kxform's request path on ``kxform.testing.MockPredictor`` (no Triton, no torch);
integration tests compare with the TorchScript model run in-process, through kxform's pytest fixtures.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kxform_example_digits import digit_pixels
from PIL import Image

import kxform
from kxform.testing import MockPredictor, TransformerRunner, readme_curl_lines, run_readme_curl

ROOT = Path(__file__).resolve().parents[3]
README = Path(__file__).resolve().parents[1] / "README.md"
BATCH = 64


def _build_models() -> Any:
    spec = importlib.util.spec_from_file_location("build_models", ROOT / "tools" / "build_models.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SPEC = kxform.ModelSpec(  # what Triton says of models/digits
    "digits",
    "1",
    (kxform.TensorSpec("INPUT__0", "FP32", (1, 8, 8)),),
    (kxform.TensorSpec("OUTPUT__0", "FP32", (10,)),),
    64,
    {"OUTPUT__0": tuple(str(digit) for digit in range(10))},
)


def brightest_row(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A stand-in for the model: logit k is the ink in row k of the 8x8 image (rows 8 and 9: none)."""
    ink = inputs["INPUT__0"][:, 0].sum(axis=2)
    return {"OUTPUT__0": np.pad(ink, ((0, 0), (0, 2))).astype(np.float32)}


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    """The first digits of scikit-learn's dataset as the model takes them: [N,1,8,8], values k/16."""
    from sklearn.datasets import load_digits

    return (load_digits().images[:120] / 16.0).astype(np.float32)[:, None, :, :]


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    """The split the digits model was not trained on (tools/build_models.py, which needs torch): [N,1,8,8], labels."""
    _, x_test, _, y_test = _build_models().digits_split()
    return x_test, y_test


def encode(pixels: np.ndarray, image_format: str = "PNG", **params: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **params)
    return buffer.getvalue()


def gray_levels(image: np.ndarray) -> np.ndarray:
    """A [1,8,8] image of the dataset (values k/16) as 8-bit grayscale: k * 255/16, rounded."""
    return np.rint(image[0] * 255).astype(np.uint8)


def png_8x8(image: np.ndarray) -> bytes:
    return encode(gray_levels(image))


def jpeg_32x32(image: np.ndarray) -> bytes:
    return encode(np.kron(gray_levels(image), np.ones((4, 4), np.uint8)), "JPEG", quality=90)


def ink_on_paper_png_64x64(image: np.ndarray) -> bytes:
    return encode(255 - np.kron(gray_levels(image), np.ones((8, 8), np.uint8)))


RENDERINGS = [
    pytest.param(png_8x8, id="png-8x8"),
    pytest.param(jpeg_32x32, id="jpeg-32x32"),
    pytest.param(ink_on_paper_png_64x64, id="ink-on-paper-png-64x64"),
]


@pytest.mark.parametrize("render", RENDERINGS)
def test_rendered_images_decode_to_exactly_the_training_values(
    samples: np.ndarray, render: Callable[[np.ndarray], bytes]
) -> None:
    images = samples

    decoded = np.stack([digit_pixels(render(image), (8, 8), f"instances[{i}]") for i, image in enumerate(images)])

    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, images[:, 0])


@pytest.mark.parametrize("paper", [pytest.param(False, id="light-on-dark"), pytest.param(True, id="ink-on-paper")])
def test_a_tall_image_is_centred_on_a_square_not_stretched(samples: np.ndarray, paper: bool) -> None:
    digit = np.kron(gray_levels(samples[0]), np.ones((4, 4), np.uint8))  # 32x32
    tall, square = np.zeros((48, 32), np.uint8), np.zeros((48, 48), np.uint8)
    tall[8:40, :], square[8:40, 8:40] = digit, digit
    if paper:
        tall, square = 255 - tall, 255 - square

    decoded = digit_pixels(encode(tall), (8, 8), "instances[0]")

    np.testing.assert_array_equal(decoded, digit_pixels(encode(square), (8, 8), "instances[0]"))
    assert decoded[:, 0].max() == decoded[:, -1].max() == 0  # the margins the square added stay dark


async def test_every_rendering_reaches_the_model_as_its_pixels_and_gets_the_top_label(samples: np.ndarray) -> None:
    images = samples[:20]
    files = [render(image) for image in images for render in (png_8x8, jpeg_32x32, ink_on_paper_png_64x64)]
    mock = MockPredictor(SPEC, brightest_row)

    predictions = await TransformerRunner("digits", mock).v1([base64.b64encode(data).decode() for data in files])

    (call,) = mock.calls
    np.testing.assert_array_equal(call["INPUT__0"], np.repeat(images, 3, axis=0))
    logits = brightest_row({"INPUT__0": call["INPUT__0"]})["OUTPUT__0"]
    assert [p["label"] for p in predictions] == [str(i) for i in logits.argmax(1)]
    assert all(0 < p["confidence"] <= 1 for p in predictions)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        pytest.param(
            {"image": {"b64": base64.b64encode(encode(np.full((32, 32), 9, np.uint8), "JPEG")[:-60]).decode()}},
            "truncated or corrupt",
            id="truncated-jpeg",
        ),
        pytest.param(7, "is int, not an image", id="a-number"),
        pytest.param({"image": "iVBOR"}, '{"b64": ...}', id="no-b64-object"),
    ],
)
async def test_a_bad_instance_is_a_400_naming_it(bad: Any, fragment: str) -> None:
    mock = MockPredictor(SPEC, brightest_row)
    good = base64.b64encode(encode(np.zeros((8, 8), np.uint8))).decode()

    with pytest.raises(kxform.RequestError) as caught:
        await TransformerRunner("digits", mock).v1([good, good, bad])

    assert caught.value.http_status == 400
    assert "instances[2]" in caught.value.message
    assert fragment in caught.value.message
    assert mock.calls == []


def digits_in_process(model_repository: Path, batch: np.ndarray) -> np.ndarray:
    """The digits model's class probabilities, run here with torch on ``batch`` [N,1,8,8]."""
    import torch  # the reference: the TorchScript model that Triton serves

    module = torch.jit.load(str(model_repository / "digits" / "1" / "model.pt"))
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(batch)).softmax(1).numpy())


@pytest.mark.integration
def test_held_out_split_over_http_is_as_accurate_as_the_model_in_process(
    kxform_serve: Any, model_repository: Path, held_out: tuple[np.ndarray, np.ndarray]
) -> None:
    serve = kxform_serve("digits")
    images, truth = held_out
    files = [png_8x8(image) for image in images]
    instances = [{"image": {"b64": base64.b64encode(data).decode()}} for data in files]

    predictions = [
        p for start in range(0, len(files), BATCH) for p in serve.v1(instances[start : start + BATCH]).predictions
    ]

    # what the model says in-process on the tensors the plugin makes of those files, and on the original split
    tensors = np.stack([digit_pixels(data, (8, 8), "file")[np.newaxis] for data in files])
    expected = digits_in_process(model_repository, tensors)
    original_accuracy = float((digits_in_process(model_repository, images).argmax(1) == truth).mean())
    labels = np.array([int(p["label"]) for p in predictions])
    assert len(predictions) == len(images) == 450
    assert labels.tolist() == expected.argmax(1).tolist()
    np.testing.assert_allclose([p["confidence"] for p in predictions], expected.max(1), rtol=0, atol=1e-5)
    assert float((labels == truth).mean()) == original_accuracy >= 0.95


@pytest.mark.integration
async def test_every_rendering_gets_the_label_of_the_model_in_process(
    predictor: Any, model_repository: Path, held_out: tuple[np.ndarray, np.ndarray]
) -> None:
    images = held_out[0][:20]
    files = [render(image) for image in images for render in (png_8x8, jpeg_32x32, ink_on_paper_png_64x64)]

    predictions = await TransformerRunner("digits", predictor).v1([base64.b64encode(data).decode() for data in files])

    expected = digits_in_process(model_repository, np.repeat(images, 3, axis=0))
    assert [p["label"] for p in predictions] == [str(i) for i in expected.argmax(1)]
    np.testing.assert_allclose([p["confidence"] for p in predictions], expected.max(1), rtol=0, atol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize("line", readme_curl_lines(README))
def test_readme_curl_line_works_as_printed(
    line: str, kxform_serve: Any, model_repository: Path, pytestconfig: pytest.Config
) -> None:
    stdout = run_readme_curl(line, kxform_serve("digits"), pytestconfig.rootpath, timeout=60)

    predictions = json.loads(stdout)["predictions"]
    sent = json.loads(line.split("-d '", 1)[1].rsplit("'", 1)[0])["instances"]
    tensors = np.stack([digit_pixels(base64.b64decode(i["image"]["b64"]), (8, 8), "x")[np.newaxis] for i in sent])
    expected = digits_in_process(model_repository, tensors)
    assert [p["label"] for p in predictions] == [str(i) for i in expected.argmax(1)]
    np.testing.assert_allclose([p["confidence"] for p in predictions], expected.max(1), rtol=0, atol=1e-5)
