"""The imagenet example plugin: real photos in every mode, against torchvision and resnet50 in-process.

Unit tests run it through kxform's request path on ``kxform.testing.MockPredictor`` (no Triton); the torchvision
comparisons import torch where they need it; integration tests use kxform's pytest fixtures on the real Triton.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kxform_example_imagenet import IMAGENET_MEAN, IMAGENET_STD, PIPELINE
from PIL import Image, ImageOps
from sklearn.datasets import load_sample_images

import kxform
from kxform.testing import MockPredictor, TransformerRunner, readme_curl_lines, run_readme_curl

README = Path(__file__).resolve().parents[1] / "README.md"
PHOTOS = {Path(name).stem: Path(name) for name in load_sample_images().filenames}  # china.jpg, flower.jpg
ORIENTATION = 0x0112  # the EXIF tag; 6: the stored pixels must turn 90 degrees clockwise to stand upright

CLASSES = tuple(f"class {i}" for i in range(1000))
SPEC = kxform.ModelSpec(  # what Triton says of models/resnet50
    "resnet50",
    "1",
    (kxform.TensorSpec("INPUT__0", "FP32", (3, 224, 224)),),
    (kxform.TensorSpec("OUTPUT__0", "FP32", (1000,)),),
    8,
    {"OUTPUT__0": CLASSES},
)


def pixel_logits(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A stand-in for resnet50: logit k of an image is its k-th value (of 150,528), so every image has its own top 5."""
    return {"OUTPUT__0": inputs["INPUT__0"].reshape(len(inputs["INPUT__0"]), -1)[:, :1000]}


@cache
def torchvision_transform() -> Any:
    transforms = pytest.importorskip(
        "torchvision.transforms", reason="torchvision's ImageNet transform is the reference"
    )
    return transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def encode(image: Image.Image, image_format: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


@cache
def photo(name: str) -> Image.Image:
    with Image.open(PHOTOS[name]) as image:
        return image.convert("RGB")


def with_alpha(name: str) -> bytes:
    image = photo(name).copy()
    image.putalpha(Image.linear_gradient("L").resize(image.size))
    return encode(image, "PNG")


def exif_rotated(name: str, image_format: str) -> bytes:
    """The photo stored lying on its side, with the EXIF orientation that stands it up again."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return encode(photo(name).transpose(Image.Transpose.ROTATE_90), image_format, exif=exif)


# Every size and mode users send; torchvision is given each decoded, stood upright and made RGB.
VARIANTS: dict[str, Callable[[], bytes]] = {
    "china-jpeg": lambda: PHOTOS["china"].read_bytes(),
    "flower-jpeg": lambda: PHOTOS["flower"].read_bytes(),
    "flower-rgba-png": lambda: with_alpha("flower"),
    "china-grayscale-jpeg": lambda: encode(photo("china").convert("L"), "JPEG", quality=90),
    "flower-palette-png": lambda: encode(photo("flower").quantize(256), "PNG"),
    "china-exif-rotated-png": lambda: exif_rotated("china", "PNG"),
    "flower-exif-rotated-jpeg": lambda: exif_rotated("flower", "JPEG"),
    "china-small-png": lambda: encode(photo("china").resize((150, 100)), "PNG"),
    "flower-tall-crop-jpeg": lambda: encode(photo("flower").crop((100, 0, 300, 427)), "JPEG"),
}


def upright_rgb(data: bytes) -> Image.Image:
    """What users hand torchvision: the decoded file, EXIF orientation applied, as RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def torchvision_tensor(data: bytes) -> np.ndarray:
    return np.asarray(torchvision_transform()(upright_rgb(data)).numpy())


@pytest.mark.parametrize("variant", VARIANTS)
def test_tensor_equals_torchvisions_imagenet_transform(variant: str) -> None:
    data = VARIANTS[variant]()

    tensor = PIPELINE(data)

    assert tensor.shape == (3, 224, 224)
    np.testing.assert_allclose(tensor, torchvision_tensor(data), rtol=0, atol=1e-5)


def test_exif_rotation_stands_the_photo_up() -> None:
    # PNG keeps the pixels exactly: the rotated file must give the upright photo's tensor.
    rotated, upright = exif_rotated("china", "PNG"), encode(photo("china"), "PNG")

    assert Image.open(io.BytesIO(rotated)).size == photo("china").size[::-1]
    np.testing.assert_array_equal(PIPELINE(rotated), PIPELINE(upright))


def resnet50_in_process(model_repository: Path, batch: np.ndarray) -> np.ndarray:
    import torch  # the reference: the TorchScript model that Triton serves

    module = torch.jit.load(str(model_repository / "resnet50" / "1" / "model.pt"))
    with torch.inference_mode():
        return np.asarray(module(torch.from_numpy(batch)).numpy())


@pytest.fixture(scope="module")
def files() -> list[bytes]:
    return [make() for make in VARIANTS.values()]


@pytest.fixture(scope="module")
def expected_logits(files: list[bytes], model_repository: Path) -> np.ndarray:
    """resnet50 run here, on torchvision's tensors of the files."""
    return resnet50_in_process(model_repository, np.stack([torchvision_tensor(data) for data in files]))


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    return np.asarray(exponentials / exponentials.sum(axis=1, keepdims=True))


# Logits agree to 1e-4, so probabilities to 2e-4 (|dp| <= 2 p max|dlogit|): top 5 ties within that may swap.
PROBABILITY_TOLERANCE = 2e-4


def assert_top5(predictions: list[list[dict[str, Any]]], logits: np.ndarray, classes: list[str]) -> None:
    """Each reply is the top 5 of the in-process probabilities, most likely first."""
    reference = softmax(logits)
    assert len(predictions) == len(reference)
    for top, probabilities in zip(predictions, reference, strict=True):
        assert len(top) == 5
        scores = [entry["probability"] for entry in top]
        assert scores == sorted(scores, reverse=True)
        expected = [float(probabilities[classes.index(entry["class"])]) for entry in top]
        np.testing.assert_allclose(scores, expected, rtol=0, atol=PROBABILITY_TOLERANCE)
        assert min(scores) >= np.sort(probabilities)[-6] - PROBABILITY_TOLERANCE  # nothing left out scores higher


def resnet50_labels(model_repository: Path) -> list[str]:
    return (model_repository / "resnet50" / "labels.txt").read_text().splitlines()


async def test_every_photo_reaches_the_model_as_the_pipelines_tensor_and_gets_its_top5(files: list[bytes]) -> None:
    mock = MockPredictor(SPEC, pixel_logits)
    instances = [{"image_bytes": {"b64": base64.b64encode(data).decode()}} for data in files]  # 9: two calls of 8

    predictions = await TransformerRunner("imagenet", mock).v1(instances)

    assert [len(call["INPUT__0"]) for call in mock.calls] == [8, 1]
    tensors = np.concatenate([call["INPUT__0"] for call in mock.calls])
    np.testing.assert_array_equal(tensors, np.stack([PIPELINE(data) for data in files]))
    assert_top5(predictions, pixel_logits({"INPUT__0": tensors})["OUTPUT__0"], list(CLASSES))


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        pytest.param(
            base64.b64encode(b"\xff\xd8\xff\xe0 a JPEG header and nothing else").decode(), "truncated", id="broken"
        ),
        pytest.param({"url": "https://example.com/cat.jpg"}, "no image", id="a-url"),
    ],
)
async def test_a_bad_instance_is_a_400_naming_it(bad: Any, fragment: str) -> None:
    mock = MockPredictor(SPEC, pixel_logits)
    good = base64.b64encode(VARIANTS["china-small-png"]()).decode()

    with pytest.raises(kxform.RequestError) as caught:
        await TransformerRunner("imagenet", mock).v1([good, bad])

    assert caught.value.http_status == 400
    assert caught.value.message.startswith("instances[1]")
    assert fragment in caught.value.message
    assert mock.calls == []


@pytest.mark.integration
async def test_plugin_tensors_give_resnet50_the_logits_of_torchvisions(
    predictor: Any, files: list[bytes], expected_logits: np.ndarray
) -> None:
    batch = np.stack([PIPELINE(data) for data in files])

    parts = [await predictor.infer("resnet50", {"INPUT__0": batch[i : i + 8]}, ["OUTPUT__0"]) for i in (0, 8)]

    logits = np.concatenate([part["OUTPUT__0"] for part in parts])  # max_batch_size is 8
    np.testing.assert_allclose(logits, expected_logits, rtol=0, atol=1e-4)


@pytest.mark.integration
async def test_every_photo_gets_the_top5_of_resnet50_in_process(
    predictor: Any, files: list[bytes], expected_logits: np.ndarray, model_repository: Path
) -> None:
    instances = [{"image_bytes": {"b64": base64.b64encode(data).decode()}} for data in files]  # 9: two calls of 8

    predictions = await TransformerRunner("imagenet", predictor).v1(instances)

    assert_top5(predictions, expected_logits, resnet50_labels(model_repository))


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["v2", "grpc"])
def test_v2_request_gets_class_and_probability_tensors(
    kxform_serve: Any, files: list[bytes], expected_logits: np.ndarray, model_repository: Path, protocol: str
) -> None:
    outputs = getattr(kxform_serve("imagenet"), protocol)({"image": np.array(files[:2], dtype=np.object_)})

    classes, scores = outputs["class"], outputs["probability"]
    assert classes.shape == scores.shape == (2, 5)
    assert scores.dtype == np.float32
    top = [
        [{"class": c.decode(), "probability": float(p)} for c, p in zip(row_c, row_p, strict=True)]
        for row_c, row_p in zip(classes, scores, strict=True)
    ]
    assert_top5(top, expected_logits[:2], resnet50_labels(model_repository))


@pytest.mark.integration
@pytest.mark.parametrize("line", readme_curl_lines(README))
def test_readme_curl_line_works_as_printed(
    line: str, kxform_serve: Any, model_repository: Path, pytestconfig: pytest.Config
) -> None:
    stdout = run_readme_curl(line, kxform_serve("imagenet"), pytestconfig.rootpath, timeout=120)

    sent = PHOTOS["flower"].read_bytes()  # the README sends the flower photo scikit-learn ships
    logits = resnet50_in_process(model_repository, torchvision_tensor(sent)[np.newaxis])
    assert_top5(json.loads(stdout)["predictions"], logits, resnet50_labels(model_repository))
