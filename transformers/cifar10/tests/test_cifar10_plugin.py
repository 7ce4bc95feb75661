"""The cifar10 example plugin: the seeds' preprocessing without torch, served against the real Triton.

Unit tests run the plugin through kxform's request path on ``kxform.testing.MockPredictor`` (no Triton, no torch);
the tests that compare with the seeds' torchvision code or the TorchScript model import torch where they need it;
the integration tests use kxform's pytest fixtures (``predictor``, ``kxform_serve``) on the real Triton.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import kxform
from kxform.testing import MockPredictor, TransformerRunner, readme_curl_lines, run_readme_curl

README = Path(__file__).resolve().parents[1] / "README.md"
SAMPLE_PNG = Path(__file__).resolve().parents[3] / "deploy" / "requests" / "cifar10-image.png"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPEC = kxform.ModelSpec(  # what Triton says of models/cifar10, for the tests that need no server
    "cifar10",
    "1",
    (kxform.TensorSpec("INPUT__0", "FP32", (3, 32, 32)),),
    (kxform.TensorSpec("OUTPUT__0", "FP32", (10,)),),
    8,
    {"OUTPUT__0": CLASSES},
)


def mean_logits(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A stand-in for the model: logit k of an image is the mean of its pixels times k, so the top class is known."""
    means = inputs["INPUT__0"].reshape(len(inputs["INPUT__0"]), -1).mean(axis=1, keepdims=True)
    return {"OUTPUT__0": means * np.arange(10, dtype=np.float32)}


def encode(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def random_image(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_transform(instance: dict[str, Any]) -> Any:
    # Seed 000's transformer code, verbatim: the reference both preprocessing paths must reproduce.
    transforms = pytest.importorskip("torchvision.transforms", reason="the seeds' torchvision code is the reference")
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    byte_array = base64.b64decode(instance["image_bytes"]["b64"])
    image = Image.open(io.BytesIO(byte_array))
    a = np.asarray(image)
    im = Image.fromarray(a)
    res = transform(im)
    return res.tolist()


def seed_tensors(images: list[bytes]) -> np.ndarray:
    return np.asarray([image_transform({"image_bytes": {"b64": b64(image)}}) for image in images], dtype=np.float32)


def cifar10_in_process(model_repository: Path, batch: np.ndarray) -> np.ndarray:
    import torch  # the reference: the TorchScript model that Triton serves, run here

    module = torch.jit.load(str(model_repository / "cifar10" / "1" / "model.pt"))
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(batch)).numpy())


def labels(model_repository: Path) -> list[str]:
    return (model_repository / "cifar10" / "labels.txt").read_text().split()


SAMPLES = [
    pytest.param(lambda: encode(random_image(1)), id="rgb-png"),
    pytest.param(lambda: encode(random_image(2), "JPEG"), id="rgb-jpeg"),
    pytest.param(lambda: SAMPLE_PNG.read_bytes(), id="deploy-sample"),
]


@pytest.mark.parametrize("make_image", SAMPLES)
@pytest.mark.parametrize("name", ["cifar10", "cifar10-torchvision"])
async def test_both_entry_points_send_the_model_the_seeds_tensor(make_image: Any, name: str) -> None:
    pytest.importorskip("torchvision", reason="the seeds' torchvision code is the reference")
    image = make_image()
    mock = MockPredictor(SPEC, mean_logits)

    await TransformerRunner(name, mock).v1([{"image_bytes": {"b64": b64(image)}}])

    (call,) = mock.calls
    assert call["INPUT__0"].shape == (1, 3, 32, 32)
    assert call["INPUT__0"].dtype == np.float32
    np.testing.assert_allclose(call["INPUT__0"], seed_tensors([image]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("key", ["image_bytes", "image"])
async def test_each_instance_gets_its_logits_and_the_name_of_the_top_class(key: str) -> None:
    images = [encode(random_image(seed)) for seed in range(11)]  # more than max_batch_size: two predictor calls
    mock = MockPredictor(SPEC, mean_logits)

    predictions = await TransformerRunner("cifar10", mock).v1([{key: {"b64": b64(image)}} for image in images])

    assert [len(call["INPUT__0"]) for call in mock.calls] == [8, 3]
    tensors = np.concatenate([call["INPUT__0"] for call in mock.calls])
    expected = mean_logits({"INPUT__0": tensors})["OUTPUT__0"]
    np.testing.assert_allclose([p["logits"] for p in predictions], expected, rtol=1e-6)
    assert [p["class"] for p in predictions] == [CLASSES[i] for i in expected.argmax(1)]


TORCH_FREE = textwrap.dedent(
    """
    import base64, sys
    from importlib.metadata import entry_points
    import kxform
    import asyncio
    import kxform
    from kxform.testing import MockPredictor, TransformerRunner  # the serving side too: kserve, tritonclient
    spec = kxform.ModelSpec("cifar10", "1", (kxform.TensorSpec("INPUT__0", "FP32", (3, 32, 32)),),
                            (kxform.TensorSpec("OUTPUT__0", "FP32", (10,)),), 8, {"OUTPUT__0": tuple("abcdefghij")})
    mock = MockPredictor(spec, lambda inputs: {"OUTPUT__0": inputs["INPUT__0"].reshape(1, -1)[:, :10]})
    image = {"image": {"b64": base64.b64encode(open(sys.argv[1], "rb").read()).decode()}}
    (reply,) = asyncio.run(TransformerRunner("cifar10", mock).v1([image]))
    assert len(reply["logits"]) == 10, reply
    for entry in entry_points(group="kxform.transformers"):  # as kxform plugins and the image check do
        if entry.dist.name == "kxform-example-cifar10":
            entry.load()
    print(sorted(name for name in sys.modules if name == "torch" or name.startswith(("torch.", "torchvision"))))
    """
)


def test_default_entry_point_never_imports_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(SAMPLE_PNG)], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "[]", done.stdout + done.stderr


WITHOUT_TORCH = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # what an environment without torch looks like to an import
    import kxform
    from kxform.testing import MockPredictor, TransformerRunner
    try:
        TransformerRunner("cifar10-torchvision", MockPredictor(kxform.ModelSpec("cifar10", "1", (), (), 0), dict))
    except kxform.KxformError as exc:
        print(exc.message)
    """
)


def test_torchvision_entry_point_without_torch_names_the_extra_to_install() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True, timeout=60, check=True)

    assert "entry point 'cifar10-torchvision" in done.stdout
    assert "pip install 'kxform-example-cifar10[torchvision]'" in done.stdout


@pytest.mark.integration
@pytest.mark.parametrize("key", ["image_bytes", "image"])
async def test_instances_get_the_seeds_logits_and_the_top_class_name(
    predictor: Any, model_repository: Path, key: str
) -> None:
    images = [encode(random_image(seed), "PNG" if seed % 2 else "JPEG") for seed in range(11)]  # > max_batch_size

    predictions = await TransformerRunner("cifar10", predictor).v1([{key: {"b64": b64(image)}} for image in images])

    expected = cifar10_in_process(model_repository, seed_tensors(images))
    np.testing.assert_allclose([p["logits"] for p in predictions], expected, rtol=0, atol=1e-5)
    assert [p["class"] for p in predictions] == [labels(model_repository)[i] for i in expected.argmax(1)]


@pytest.mark.integration
async def test_torchvision_entry_point_replies_as_the_default_one(predictor: Any) -> None:
    instances = [{"image_bytes": {"b64": b64(encode(random_image(seed)))}} for seed in range(3)]

    expected = await TransformerRunner("cifar10", predictor).v1(instances)
    reply = await TransformerRunner("cifar10-torchvision", predictor).v1(instances)

    assert [p["class"] for p in reply] == [p["class"] for p in expected]
    np.testing.assert_allclose([p["logits"] for p in reply], [p["logits"] for p in expected], atol=1e-5)


BAD_INSTANCES = [
    pytest.param({"image_bytes": {"b64": b64(encode(random_image(3, 64)))}}, "64x64", id="wrong-size"),
    pytest.param({"image": {"b64": "%%%"}}, "not valid base64", id="bad-base64"),
    pytest.param({"image_bytes": {"b64": b64(b"plain text")}}, "not an image", id="not-an-image"),
    pytest.param({"picture": "x"}, "no image", id="unknown-key"),
]


@pytest.mark.parametrize("name", ["cifar10", "cifar10-torchvision"])
@pytest.mark.parametrize(("bad", "fragment"), BAD_INSTANCES)
async def test_a_bad_instance_is_a_400_naming_it(name: str, bad: dict[str, Any], fragment: str) -> None:
    if name == "cifar10-torchvision":
        pytest.importorskip("torchvision", reason="the cifar10-torchvision entry point runs the seeds' torchvision")
    mock = MockPredictor(SPEC, mean_logits)
    good = {"image_bytes": {"b64": b64(encode(random_image(4)))}}

    with pytest.raises(kxform.RequestError) as caught:
        await TransformerRunner(name, mock).v1([good, bad])

    assert caught.value.http_status == 400
    assert "instances[1]" in caught.value.message
    if name == "cifar10":  # the seeds' code has its own words for what is wrong
        assert fragment in caught.value.message
    assert mock.calls == []  # rejected before anything reached the predictor


@pytest.mark.integration
@pytest.mark.parametrize("line", readme_curl_lines(README))
def test_readme_curl_line_works_as_printed(
    line: str, kxform_serve: Any, model_repository: Path, pytestconfig: pytest.Config
) -> None:
    stdout = run_readme_curl(line, kxform_serve("cifar10"), pytestconfig.rootpath, timeout=60)

    (prediction,) = json.loads(stdout)["predictions"]
    expected = cifar10_in_process(model_repository, seed_tensors([SAMPLE_PNG.read_bytes()]))[0]
    np.testing.assert_allclose(prediction["logits"], expected, rtol=0, atol=1e-5)
    assert prediction["class"] == labels(model_repository)[int(expected.argmax())]


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["v2", "grpc"])
def test_v2_request_gets_logits_and_class_tensors(kxform_serve: Any, model_repository: Path, protocol: str) -> None:
    images = [encode(random_image(seed)) for seed in (5, 6, 7)]

    outputs = getattr(kxform_serve("cifar10"), protocol)({"image": np.array(images, dtype=np.object_)})

    expected = cifar10_in_process(model_repository, seed_tensors(images))
    np.testing.assert_allclose(outputs["logits"], expected, rtol=0, atol=1e-5)
    assert [c.decode() for c in outputs["class"]] == [labels(model_repository)[i] for i in expected.argmax(1)]
