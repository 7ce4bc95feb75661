"""Tensors through Triton's system shared memory (``--predictor_shm``), against the real Triton.

Each protocol gets two ``kxform serve`` processes on the session's Triton, one with ``--predictor_shm
system`` and one with ``none``: the same requests must get the same answers. Triton's own
``/v2/systemsharedmemory/status`` and ``/dev/shm`` show which regions exist; the region names start
with ``kxform-<pid>-``, so each test looks only at the regions of its own server.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from PIL import Image

from kxform.testing import ServerProcess, start_serve, start_triton
from tests.test_resilience import PROTOCOLS, predictor_host, tritonserver_pid

pytestmark = pytest.mark.integration

TRANSFORMERS = ["test-cifar10", "imagenet", "text"]
SHM = Path("/dev/shm")


def image_b64(seed: int, size: int, image_format: str) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return base64.b64encode(buffer.getvalue()).decode()


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, payload, {"content-type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        connection.close()


def predict(server: ServerProcess, model: str, instances: list[Any]) -> tuple[int, Any]:
    return request(server.ports["http"], "POST", f"/v1/models/{model}:predict", {"instances": instances})


def pid_of(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def registered(triton: ServerProcess, server: ServerProcess) -> dict[str, str]:
    """The regions Triton knows of ``server``'s process: name -> key."""
    status, regions = request(triton.ports["http"], "GET", "/v2/systemsharedmemory/status")
    assert status == 200
    prefix = f"kxform-{pid_of(server)}-"
    return {region["name"]: region["key"] for region in regions if region["name"].startswith(prefix)}


def in_dev_shm(server: ServerProcess) -> set[str]:
    """``server``'s regions in /dev/shm (not its lock file)."""
    return {entry.name for entry in SHM.glob(f"kxform-{pid_of(server)}-*") if entry.suffix != ".lock"}


def lock_files(server: ServerProcess) -> list[Path]:
    """The lock ``server``'s process holds while it has regions (kxform.predictor.shm)."""
    return list(SHM.glob(f"kxform-{pid_of(server)}-*.lock"))


def predictions(reply: tuple[int, Any]) -> list[Any]:
    status, body = reply
    assert status == 200, body
    return list(body["predictions"])


def assert_same(got: Any, expected: Any) -> None:
    """The same labels and classes; the same scores up to float32 rounding (Triton may batch differently)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict)
        assert set(got) == set(expected)
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(got, list)
        assert len(got) == len(expected)
        for item, other in zip(got, expected, strict=True):
            assert_same(item, other)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    else:
        assert got == expected


REQUESTS = {
    "cifar10, one image": ("test-cifar10", [{"b64": image_b64(1, 32, "PNG")}]),
    # 20 images: split into calls of max_batch_size (8) rows, each in its own region
    "cifar10, split across batches": ("test-cifar10", [{"b64": image_b64(seed, 32, "PNG")} for seed in range(20)]),
    "imagenet, two photos": ("imagenet", [{"b64": image_b64(seed, 224, "JPEG")} for seed in range(2)]),
    # a BYTES input: it travels in the message, the FP32 output comes back through the region
    "text": ("text", ["a delightful, moving film", "dull and far too long"]),
}


@pytest.fixture(scope="module", params=PROTOCOLS)
def pair(
    request: pytest.FixtureRequest, triton: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """``kxform serve`` with shared memory and without, over the same predictor protocol."""
    protocol = request.param
    log_dir = tmp_path_factory.mktemp("shm")
    host = predictor_host(triton, protocol)
    common = [f"--predictor_protocol={protocol}", "--enable_grpc=false"]
    with_shm = start_serve(TRANSFORMERS, host, log_dir, extra=[*common, "--predictor_shm=system"])
    try:
        without = start_serve(TRANSFORMERS, host, log_dir, extra=[*common, "--predictor_shm=none"])
    except BaseException:
        with_shm.stop()
        raise
    yield with_shm, without
    without.stop()
    with_shm.stop()


@pytest.mark.parametrize("name", list(REQUESTS))
def test_answers_through_shared_memory_equal_answers_over_the_wire(
    pair: tuple[ServerProcess, ServerProcess], triton: ServerProcess, name: str
) -> None:
    with_shm, without = pair
    model, instances = REQUESTS[name]

    through_shm = predictions(predict(with_shm, model, instances))
    over_the_wire = predictions(predict(without, model, instances))

    assert len(through_shm) == len(instances)
    assert_same(through_shm, over_the_wire)
    assert registered(triton, with_shm), "the shared memory server registered no region with Triton"
    assert not registered(triton, without)


def test_the_regions_in_dev_shm_are_the_ones_triton_knows(
    pair: tuple[ServerProcess, ServerProcess], triton: ServerProcess
) -> None:
    with_shm, without = pair
    for model, instances in REQUESTS.values():
        predictions(predict(with_shm, model, instances))

    regions = registered(triton, with_shm)
    assert set(regions) == in_dev_shm(with_shm)
    assert all(key == f"/{name}" for name, key in regions.items())
    assert {name.split("-")[3] for name in regions} >= {"cifar10", "resnet50", "text"}
    assert not in_dev_shm(without)


def test_sigterm_unregisters_and_unlinks_every_region(triton: ServerProcess, tmp_path: Path) -> None:
    server = start_serve(["test-cifar10"], predictor_host(triton, "v2"), tmp_path, extra=["--predictor_shm=system"])
    try:
        predictions(predict(server, "test-cifar10", [{"b64": image_b64(seed, 32, "PNG")} for seed in range(12)]))
        assert registered(triton, server)
        assert in_dev_shm(server)
    finally:
        assert server.stop(signal.SIGTERM) == 0
    assert not registered(triton, server)
    assert not in_dev_shm(server)
    assert not lock_files(server)


def predict_once_triton_is_back(server: ServerProcess, instances: list[Any]) -> tuple[int, Any]:
    """The first answer that is not a 503 (kxform learns that Triton is back within a few calls)."""
    for _ in range(120):
        reply = predict(server, "test-cifar10", instances)
        if reply[0] != 503:
            return reply
        time.sleep(0.25)  # not a bound on anything: a pause between readiness probes
    return reply


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_after_triton_restarts_the_regions_are_registered_again_and_none_leaks(
    model_repository: Path, tmp_path: Path, protocol: str
) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "cifar10").symlink_to(model_repository / "cifar10")
    instances = [{"b64": image_b64(seed, 32, "PNG")} for seed in range(3)]
    predictor = start_triton(repository, tmp_path)
    server = start_serve(
        ["test-cifar10"],
        predictor_host(predictor, protocol),
        tmp_path,
        extra=[f"--predictor_protocol={protocol}", "--predictor_shm=system", "--enable_grpc=false"],
    )
    try:
        before = predictions(predict(server, "test-cifar10", instances))
        regions_before = registered(predictor, server)
        assert regions_before
        os.killpg(tritonserver_pid(predictor), signal.SIGKILL)  # Triton forgets every region it had
        predictor.stop()
        assert predict(server, "test-cifar10", instances)[0] == 503

        predictor = start_triton(repository, tmp_path, ports=predictor.ports)
        assert not registered(predictor, server)
        after = predict_once_triton_is_back(server, instances)

        assert_same(predictions(after), before)
        regions_after = registered(predictor, server)
        assert regions_after, "kxform fell back to the wire instead of registering its regions again"
        assert set(regions_after) == in_dev_shm(server)  # none left behind by the outage
    finally:
        server.stop()
        predictor.stop()
    assert not in_dev_shm(server)


def can_make_mount_namespaces() -> bool:
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs kx /dev/shm"]
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except OSError:
        return False


@pytest.fixture(scope="module")
def triton_with_its_own_dev_shm(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Triton in a mount namespace with a /dev/shm of its own: two containers of a pod without a shared one."""
    if not can_make_mount_namespaces():
        pytest.skip("needs unshare(1) and the right to make a mount namespace (root)")
    tmp_path = tmp_path_factory.mktemp("own-shm")
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "cifar10").symlink_to(model_repository / "cifar10")
    script = 'mount -t tmpfs own-shm /dev/shm && exec "$@"'
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    server = start_triton(repository, tmp_path, wrapper=wrapper)
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_triton_that_cannot_open_the_regions(
    triton_with_its_own_dev_shm: ServerProcess, tmp_path: Path, protocol: str
) -> None:
    host = predictor_host(triton_with_its_own_dev_shm, protocol)
    instances = [{"b64": image_b64(4, 32, "PNG")}]
    extra = [f"--predictor_protocol={protocol}", "--enable_grpc=false"]
    auto = start_serve(["test-cifar10"], host, tmp_path, extra=[*extra, "--predictor_shm=auto"])
    system = start_serve(["test-cifar10"], host, tmp_path, extra=[*extra, "--predictor_shm=system"])
    try:
        # auto: kxform notices, says so once, and sends the tensors in the messages
        assert len(predictions(predict(auto, "test-cifar10", instances))) == 1
        assert len(predictions(predict(auto, "test-cifar10", instances))) == 1
        assert auto.log().count("predictor shared memory: none") == 1
        # system: a 502 that names the flag and the fix, and the server keeps answering
        for _ in range(2):
            status, body = predict(system, "test-cifar10", instances)
            assert status == 502
            assert "--predictor_shm" in body["error"]
            assert "/dev/shm" in body["error"]
        assert request(system.ports["http"], "GET", "/v2/health/live")[0] == 200
    finally:
        auto.stop()
        system.stop()
    assert not in_dev_shm(auto)
    assert not in_dev_shm(system)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_regions_of_a_killed_kxform_are_removed_by_the_next_one(
    triton: ServerProcess, tmp_path: Path, protocol: str
) -> None:
    host = predictor_host(triton, protocol)
    extra = [f"--predictor_protocol={protocol}", "--predictor_shm=system", "--enable_grpc=false"]
    instances = [{"b64": image_b64(seed, 32, "PNG")} for seed in range(10)]
    first = start_serve(["test-cifar10"], host, tmp_path, extra=extra)
    predictions(predict(first, "test-cifar10", instances))
    regions = registered(triton, first)
    assert regions
    # The container is killed: the process and its helpers (Python's resource tracker) die at once.
    for child in psutil.Process(pid_of(first)).children(recursive=True):
        child.kill()
    first.stop(signal.SIGKILL)
    assert in_dev_shm(first) == set(regions)
    assert lock_files(first)

    second = start_serve(["test-cifar10"], host, tmp_path, extra=extra)
    try:
        predictions(predict(second, "test-cifar10", instances[:1]))
        assert not registered(triton, first)
        assert not in_dev_shm(first)
        assert not lock_files(first)
    finally:
        second.stop()
