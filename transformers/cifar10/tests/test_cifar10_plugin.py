"""The cifar10 example plugin: the seeds' preprocessing without torch, served against the real Triton."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.transforms as transforms
import tritonclient.http as triton_http
from PIL import Image

import kxform
from kxform.model import TransformerModel
from kxform.plugins import load_plugin
from kxform.predictor import PredictorClient
from kxform.testing import ServerProcess, readme_curl_lines, run_readme_curl, start_serve

README = Path(__file__).resolve().parents[1] / "README.md"
SAMPLE_PNG = Path(__file__).resolve().parents[3] / "deploy" / "requests" / "cifar10-image.png"
SPEC = kxform.ModelSpec(  # what Triton says of models/cifar10, for the tests that need no server
    "cifar10",
    "1",
    (kxform.TensorSpec("INPUT__0", "FP32", (3, 32, 32)),),
    (kxform.TensorSpec("OUTPUT__0", "FP32", (10,)),),
    8,
)


def encode(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def random_image(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Seed 000's transformer code, verbatim: the reference both preprocessing paths must reproduce.
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])


def image_transform(instance: dict[str, Any]) -> Any:
    byte_array = base64.b64decode(instance["image_bytes"]["b64"])
    image = Image.open(io.BytesIO(byte_array))
    a = np.asarray(image)
    im = Image.fromarray(a)
    res = transform(im)
    return res.tolist()


def seed_tensors(images: list[bytes]) -> np.ndarray:
    return np.asarray([image_transform({"image_bytes": {"b64": b64(image)}}) for image in images], dtype=np.float32)


def cifar10_in_process(model_repository: Path, batch: np.ndarray) -> np.ndarray:
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
def test_both_entry_points_reproduce_the_seeds_tensor(make_image: Any, name: str) -> None:
    image = make_image()
    plugin = load_plugin(name)

    tensor = plugin.transformer.preprocess([{"image_bytes": {"b64": b64(image)}}], kxform.Context(SPEC))

    assert tensor.shape == (1, 3, 32, 32)
    assert tensor.dtype == np.float32
    np.testing.assert_allclose(tensor, seed_tensors([image]), rtol=0, atol=1e-6)


TORCH_FREE = textwrap.dedent(
    """
    import base64, sys
    from importlib.metadata import entry_points
    import kxform
    from kxform.model import TransformerModel  # the serving side too: kserve, tritonclient
    from kxform.plugins import load_plugin
    spec = kxform.ModelSpec("cifar10", "1", (kxform.TensorSpec("INPUT__0", "FP32", (3, 32, 32)),),
                            (kxform.TensorSpec("OUTPUT__0", "FP32", (10,)),), 8, {"OUTPUT__0": tuple("abcdefghij")})
    plugin = load_plugin("cifar10")
    ctx = kxform.Context(spec)
    batch = plugin.transformer.preprocess([{"image": {"b64": base64.b64encode(open(sys.argv[1], "rb").read())}}], ctx)
    (reply,) = plugin.transformer.postprocess({"OUTPUT__0": batch.reshape(1, -1)[:, :10]}, ctx)
    assert batch.shape == (1, 3, 32, 32) and len(reply["logits"]) == 10, (batch.shape, reply)
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
    from kxform.plugins import load_plugin
    from kxform.errors import PluginError
    try:
        load_plugin("cifar10-torchvision")
    except PluginError as exc:
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
    predictor: PredictorClient, model_repository: Path, key: str
) -> None:
    model = TransformerModel("cifar10", load_plugin("cifar10"), predictor)
    images = [encode(random_image(seed), "PNG" if seed % 2 else "JPEG") for seed in range(11)]  # > max_batch_size

    reply, _ = await model({"instances": [{key: {"b64": b64(image)}} for image in images]}, {})

    expected = cifar10_in_process(model_repository, seed_tensors(images))
    predictions = reply["predictions"]
    np.testing.assert_allclose([p["logits"] for p in predictions], expected, rtol=0, atol=1e-5)
    assert [p["class"] for p in predictions] == [labels(model_repository)[i] for i in expected.argmax(1)]


@pytest.mark.integration
async def test_torchvision_entry_point_replies_as_the_default_one(predictor: PredictorClient) -> None:
    body = {"instances": [{"image_bytes": {"b64": b64(encode(random_image(seed)))}} for seed in range(3)]}
    default = TransformerModel("cifar10", load_plugin("cifar10"), predictor)
    seed_style = TransformerModel("cifar10-torchvision", load_plugin("cifar10-torchvision"), predictor)

    (expected, _), (reply, _) = await default(body, {}), await seed_style(body, {})

    assert [p["class"] for p in reply["predictions"]] == [p["class"] for p in expected["predictions"]]
    np.testing.assert_allclose(
        [p["logits"] for p in reply["predictions"]], [p["logits"] for p in expected["predictions"]], atol=1e-5
    )


BAD_INSTANCES = [
    pytest.param({"image_bytes": {"b64": b64(encode(random_image(3, 64)))}}, "64x64", id="wrong-size"),
    pytest.param({"image": {"b64": "%%%"}}, "not valid base64", id="bad-base64"),
    pytest.param({"image_bytes": {"b64": b64(b"plain text")}}, "not an image", id="not-an-image"),
    pytest.param({"picture": "x"}, "no image", id="unknown-key"),
]


@pytest.mark.integration
@pytest.mark.parametrize("name", ["cifar10", "cifar10-torchvision"])
@pytest.mark.parametrize(("bad", "fragment"), BAD_INSTANCES)
async def test_a_bad_instance_is_a_400_naming_it(
    predictor: PredictorClient, name: str, bad: dict[str, Any], fragment: str
) -> None:
    model = TransformerModel(name, load_plugin(name), predictor)
    good = {"image_bytes": {"b64": b64(encode(random_image(4)))}}

    with pytest.raises(kxform.RequestError) as caught:
        await model({"instances": [good, bad]}, {})

    assert caught.value.http_status == 400
    assert "instances[1]" in caught.value.message
    if name == "cifar10":  # the seeds' code has its own words for what is wrong
        assert fragment in caught.value.message


@pytest.fixture(scope="module")
def serve(triton: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_serve(["cifar10"], f"127.0.0.1:{triton.ports['http']}", tmp_path_factory.mktemp("cifar10"))
    yield server
    server.stop()


@pytest.mark.integration
@pytest.mark.parametrize("line", readme_curl_lines(README))
def test_readme_curl_line_works_as_printed(
    line: str, serve: ServerProcess, model_repository: Path, pytestconfig: pytest.Config
) -> None:
    stdout = run_readme_curl(line, serve, pytestconfig.rootpath, timeout=60)

    (prediction,) = json.loads(stdout)["predictions"]
    expected = cifar10_in_process(model_repository, seed_tensors([SAMPLE_PNG.read_bytes()]))[0]
    np.testing.assert_allclose(prediction["logits"], expected, rtol=0, atol=1e-5)
    assert prediction["class"] == labels(model_repository)[int(expected.argmax())]


@pytest.mark.integration
def test_v2_binary_request_gets_logits_and_class_tensors(serve: ServerProcess, model_repository: Path) -> None:
    images = [encode(random_image(seed)) for seed in (5, 6, 7)]
    client = triton_http.InferenceServerClient(f"127.0.0.1:{serve.ports['http']}")
    tensor = triton_http.InferInput("image", [3], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)

    result = client.infer("cifar10", [tensor])

    expected = cifar10_in_process(model_repository, seed_tensors(images))
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=0, atol=1e-5)
    assert [c.decode() for c in result.as_numpy("class")] == [labels(model_repository)[i] for i in expected.argmax(1)]
