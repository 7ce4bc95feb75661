"""deploy/requests/: the sample bodies docs/deploy.md sends are what make_requests.py makes, and agree."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.deploy.manifests import DEPLOY, REPO

REQUESTS = DEPLOY / "requests"
MADE = ("cifar10-image.png", "cifar10-image.json", "cifar10-v2.json", "cifar10-v2-grpc.json")


def _load(name: str) -> dict[str, object]:
    return json.loads((REQUESTS / name).read_text())


def test_committed_requests_are_what_the_script_makes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REQUESTS / "make_requests.py"), str(tmp_path)], check=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(MADE)
    for name in MADE:
        assert (tmp_path / name).read_bytes() == (REQUESTS / name).read_bytes(), name


def _image_tensor() -> np.ndarray:
    body = _load("cifar10-image.json")
    (instance,) = body["instances"]  # type: ignore[misc]
    image = Image.open(io.BytesIO(base64.b64decode(instance["image_bytes"]["b64"], validate=True)))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (32, 32))
    # The seeds' transform: ToTensor, Normalize(0.5, 0.5): CHW in [-1, 1].
    return (np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0)[None]


def _triton_input() -> tuple[str, str, list[int]]:
    config = (REPO / "models" / "cifar10" / "config.pbtxt").read_text()
    block = config[config.index("input") :]
    name = re.search(r'name: "([^"]+)"', block)
    dtype = re.search(r"data_type: TYPE_(\w+)", block)
    dims = re.search(r"dims: \[([^\]]+)\]", block)
    assert name, config
    assert dtype, config
    assert dims, config
    return name.group(1), dtype.group(1), [int(d) for d in dims.group(1).split(",")]


def test_v2_body_is_the_image_as_tritons_input() -> None:
    (tensor,) = _load("cifar10-v2.json")["inputs"]  # type: ignore[misc]
    name, dtype, dims = _triton_input()
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == (name, dtype, [1, *dims])
    data = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    np.testing.assert_allclose(data, _image_tensor(), atol=1e-6)


def test_grpc_body_carries_the_same_tensor_raw() -> None:
    body = _load("cifar10-v2-grpc.json")
    (tensor,) = body["inputs"]  # type: ignore[misc]
    (raw,) = body["raw_input_contents"]  # type: ignore[misc]
    assert body["model_name"] == "cifar10"
    data = np.frombuffer(base64.b64decode(raw, validate=True), dtype="<f4").reshape(tensor["shape"])
    np.testing.assert_allclose(data, _image_tensor(), atol=1e-6)


def test_png_file_is_the_image_in_the_v1_body() -> None:
    (instance,) = _load("cifar10-image.json")["instances"]  # type: ignore[misc]
    assert base64.b64decode(instance["image_bytes"]["b64"]) == (REQUESTS / "cifar10-image.png").read_bytes()
