"""The bench's Triton ensembles (``benchmarks/ensemble/``) compute what kxform's plugins compute.

``triton-ensemble`` is an anchor for kxform only if its Python-backend preprocessing reproduces the
plugins' normalisation: for the same encoded images, each ensemble's logits must equal those Triton's
model returns for the tensor the plugin's pipeline makes. One real Triton serves the bench's derived
repository (``benchmarks/repository.py``: ``models/`` plus the ensembles) for the module, and the
requests are the bench's own payloads, so a wrong shape or name in them fails here too.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from benchmarks.images import encoded_images
from benchmarks.loadgen import send_once
from benchmarks.payloads import Payload, decode_reply, tensor_binary_payload, triton_images_payload
from benchmarks.repository import build_repository
from kxform_example_cifar10 import PIPELINE as CIFAR10_PIPELINE
from kxform_example_imagenet import PIPELINE as IMAGENET_PIPELINE
from PIL import Image

from kxform.codecs import ImagePipeline
from kxform.testing import ServerProcess, start_triton

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bench_triton(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = build_repository(model_repository, tmp_path_factory.mktemp("bench-models"))
    server = start_triton(repository, tmp_path_factory.mktemp("bench-triton"))
    yield server
    server.stop()


def logits(server: ServerProcess, payload: Payload) -> npt.NDArray[np.float32]:
    """The first output of a V2 binary request, shaped as Triton says."""
    reply = send_once(server.http_url, payload)
    assert reply.status == 200, reply.body[:500]
    output = decode_reply(reply.body, reply.header_length)["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def ensemble_and_direct(
    server: ServerProcess, ensemble: str, model: str, images: list[bytes], pipeline: ImagePipeline
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The ensemble's logits for ``images`` and the model's for the plugin pipeline's tensor of them."""
    from_bytes = logits(server, triton_images_payload(ensemble, "IMAGE", images, "OUTPUT__0"))
    from_tensor = logits(server, tensor_binary_payload(model, "INPUT__0", pipeline.batch(images), "OUTPUT__0"))
    return from_bytes, from_tensor


def test_cifar10_ensemble_equals_the_cifar10_plugin_preprocessing(bench_triton: ServerProcess) -> None:
    images = encoded_images(4, 32, "PNG")
    from_bytes, from_tensor = ensemble_and_direct(bench_triton, "cifar10_ensemble", "cifar10", images, CIFAR10_PIPELINE)
    assert from_bytes.shape == (4, 10)
    assert len({row.tobytes() for row in from_tensor}) == 4  # distinct images: a mix-up of rows would show
    assert np.allclose(from_bytes, from_tensor, rtol=1e-5, atol=1e-5), np.abs(from_bytes - from_tensor).max()


def landscape_jpeg(width: int, height: int) -> bytes:
    """A ``width`` x ``height`` JPEG (wider than high) cut from the bench's synthetic images."""
    image = Image.open(io.BytesIO(encoded_images(1, width, "PNG")[0])).crop((0, 0, width, height))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_resnet50_ensemble_equals_the_imagenet_plugin_preprocessing(bench_triton: ServerProcess) -> None:
    # 249x240: Resize(256) makes it 265x256 (265.6 truncated) and CenterCrop(224) starts at x = 20
    # (round(20.5), half to even): the resize arithmetic and the crop's rounding must both be
    # torchvision's. One image: resnet50 takes a while on 2 cores.
    images = [landscape_jpeg(249, 240)]
    from_bytes, from_tensor = ensemble_and_direct(
        bench_triton, "resnet50_ensemble", "resnet50", images, IMAGENET_PIPELINE
    )
    assert from_bytes.shape == (1, 1000)
    assert np.allclose(from_bytes, from_tensor, rtol=1e-5, atol=1e-4), np.abs(from_bytes - from_tensor).max()
