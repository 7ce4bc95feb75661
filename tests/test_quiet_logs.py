"""No alarming lines in normal use: Triton's CUDA start-up warnings on a machine without a GPU, and the deprecation
warning kserve's REST app printed on every request of ``kxform serve --server kserve``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kxform.testing import ServeClient, ServerProcess, start_serve, start_triton

pytestmark = pytest.mark.integration

HANG_GUARD_SECONDS = 60  # not a speed bound: a test that waits this long has hung
CUDA_LINES = ("CudaDriverHelper has not been initialized", "CUDA driver version is insufficient")


def has_cuda_driver() -> bool:
    return Path("/proc/driver/nvidia/version").exists()


def test_kxform_triton_on_a_cpu_machine_says_so_once_instead_of_cudas_warnings(
    model_repository: Path, tmp_path: Path
) -> None:
    if has_cuda_driver():
        pytest.skip("this machine has an NVIDIA driver: Triton prints no CPU-only warnings to filter")
    server = start_triton(model_repository, tmp_path)
    try:
        deadline = time.monotonic() + HANG_GUARD_SECONDS  # Triton answers ready a moment before kxform says so
        while "kxform triton: ready on" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log()
    finally:
        server.stop()

    assert not [line for line in log.splitlines() if any(cuda in line for cuda in CUDA_LINES)]
    assert log.count("no usable CUDA driver here, so Triton serves the models on the CPU") == 1
    assert "kxform triton: ready on" in log


@pytest.mark.parametrize("server", ["kxform", "kserve"])
def test_serving_requests_logs_no_warning(triton: ServerProcess, tmp_path: Path, server: str) -> None:
    serve = start_serve(["test-tensor"], triton.http_address, tmp_path, extra=[f"--server={server}"])
    try:
        client = ServeClient("test-tensor", serve)
        for _ in range(3):
            assert client.v1([[[[0.0] * 32] * 32] * 3]).status == 200
            body = json.dumps(
                {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.0] * 3072}]}
            )
            assert (
                client.post("/v2/models/test-tensor/infer", body.encode(), {"content-type": "application/json"}).status
                == 200
            )
    finally:
        serve.stop()

    log = serve.log()
    assert "Warning" not in log, log
    assert "deprecated" not in log.lower(), log
