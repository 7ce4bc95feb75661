"""``kxform triton`` against the real Triton binary: the seeds' request, gRPC, failures and clean stops."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest

from kxform.testing import ServerProcess, free_port, kxform_command, start_triton

pytestmark = pytest.mark.integration

SEED_REQUEST = Path(__file__).resolve().parent / "data" / "seed-input.json"  # the seeds' V2 request body


def seed_tensor() -> np.ndarray:
    (tensor,) = json.loads(SEED_REQUEST.read_text())["inputs"]
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def in_process(model_repository: Path, model: str, *inputs: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(model_repository / model / "1" / "model.pt"))
    with torch.no_grad():
        return np.asarray(module(*[torch.from_numpy(x) for x in inputs]).numpy())


def test_seed_curl_request_over_http_equals_model_in_process(triton: ServerProcess, model_repository: Path) -> None:
    # The seeds' command, as written: curl -H "Content-Type: application/json" .../infer -d @./input.json
    reply = subprocess.run(
        [
            "curl",
            "-sS",
            "-H",
            "Content-Type: application/json",
            f"{triton.http_url}/v2/models/cifar10/infer",
            "-d",
            f"@{SEED_REQUEST}",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    (output,) = json.loads(reply.stdout)["outputs"]

    assert (output["name"], output["datatype"], output["shape"]) == ("OUTPUT__0", "FP32", [1, 10])
    expected = in_process(model_repository, "cifar10", seed_tensor())
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(1, 10), expected, atol=1e-5)


# tritonclient.grpc and kserve define the same protobuf symbols and cannot share a process with kxform's
# tests; kserve's own gRPC client speaks the same V2 protocol to Triton.
async def grpc_infer(url: str, model: str, name: str, array: np.ndarray) -> np.ndarray:
    tensor = InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=True)
    client = InferenceGRPCClient(url, timeout=60, retries=0)
    try:
        response = await client.infer(InferRequest(model, [tensor]))
    finally:
        await client.close()
    return np.asarray(response.outputs[0].as_numpy())


async def test_seed_tensor_over_grpc_equals_model_in_process(triton: ServerProcess, model_repository: Path) -> None:
    result = await grpc_infer(triton.grpc_url, "cifar10", "INPUT__0", seed_tensor())

    np.testing.assert_allclose(result, in_process(model_repository, "cifar10", seed_tensor()), atol=1e-5)


async def test_dynamic_batching_keeps_each_request_its_own_rows(triton: ServerProcess, model_repository: Path) -> None:
    # Concurrent requests of 1-3 rows: Triton's dynamic batcher hands several to the adapter at once.
    batches = [np.random.default_rng(i).random((1 + i % 3, 3, 32, 32), dtype=np.float32) for i in range(24)]

    outputs = await asyncio.gather(*(grpc_infer(triton.grpc_url, "cifar10", "INPUT__0", b) for b in batches))

    for batch, output in zip(batches, outputs, strict=True):
        np.testing.assert_allclose(output, in_process(model_repository, "cifar10", batch), atol=1e-5)


def test_model_config_keeps_batching_instances_and_labels(triton: ServerProcess) -> None:
    with urllib.request.urlopen(f"{triton.http_url}/v2/models/digits/config", timeout=10) as reply:
        config = json.loads(reply.read())

    assert int(config["max_batch_size"]) == 64
    assert "dynamic_batching" in config
    assert [g["count"] for g in config["instance_group"]] == [1]
    assert config["output"][0]["label_filename"] == "labels.txt"


def write_probe_model(repo: Path, inference_mode: str) -> None:
    """A scripted model whose second output tells whether it ran under torch.inference_mode()."""

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = x * 2
            return y, torch.tensor([y.is_inference()], dtype=torch.bool).expand(x.shape[0], 1)

    (repo / "probe" / "1").mkdir(parents=True)
    torch.jit.script(Probe()).save(str(repo / "probe" / "1" / "model.pt"))
    (repo / "probe" / "config.pbtxt").write_text(
        'platform: "pytorch_libtorch"\nmax_batch_size: 4\n'
        'input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [2] } ]\n'
        'output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [2] },'
        ' { name: "OUTPUT__1" data_type: TYPE_BOOL dims: [1] } ]\n'
        "instance_group [ { count: 2 kind: KIND_CPU } ]\n"
        f'parameters: {{ key: "INFERENCE_MODE" value: {{ string_value: "{inference_mode}" }} }}\n'
        'parameters: { key: "NUM_THREADS" value: { string_value: "1" } }\n'
    )


def server_processes(server: ServerProcess) -> list[psutil.Process]:
    assert server.process is not None
    return psutil.Process(server.process.pid).children(recursive=True)


@pytest.mark.parametrize("inference_mode", ["true", "false"])
def test_inference_mode_parameter_is_honoured_and_sigint_leaves_nothing(tmp_path: Path, inference_mode: str) -> None:
    write_probe_model(tmp_path / "repo", inference_mode)
    server = start_triton(tmp_path / "repo", tmp_path)
    children = server_processes(server)
    derived = [
        Path(arg.split("=", 1)[1])
        for p in children
        if p.name() == "tritonserver"
        for arg in p.cmdline()
        if arg.startswith("--model-repository=")
    ]
    stubs = [p for p in children if p.name().startswith("triton_python")]
    body = {"inputs": [{"name": "INPUT__0", "shape": [3, 2], "datatype": "FP32", "data": [1.0] * 6}]}
    request = urllib.request.Request(f"{server.http_url}/v2/models/probe/infer", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as reply:
        outputs = {o["name"]: o["data"] for o in json.loads(reply.read())["outputs"]}
    status = server.stop(signal.SIGINT)

    assert outputs["OUTPUT__0"] == [2.0] * 6
    assert outputs["OUTPUT__1"] == [inference_mode == "true"] * 3
    assert len(stubs) == 2  # instance_group count: one stub process per instance
    assert status == 0
    assert [p.pid for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert derived
    assert not any(path.exists() for path in derived)  # the temporary repository is gone


def test_broken_model_is_reported_by_name_and_leaves_no_process(tmp_path: Path, model_repository: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "cifar10", repo / "broken")
    (repo / "broken" / "config.pbtxt").write_text(
        (repo / "broken" / "config.pbtxt").read_text().replace('name: "cifar10"', 'name: "broken"')
    )
    (repo / "broken" / "1" / "model.pt").write_bytes(b"this is not a TorchScript archive")
    ports = [f"--{kind}-port={free_port()}" for kind in ("http", "grpc", "metrics")]
    done = subprocess.run(
        kxform_command("triton", f"--model-repository={repo}", *ports),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("kxform triton: error: model 'broken' failed to load:"), last_line
    assert "model.pt" in last_line or "archive" in last_line
    # This run's processes only (other Tritons may run beside the test): the server by its port, the
    # stub by its model's name.
    left = [
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if (p.info["name"] == "tritonserver" and ports[0] in (p.info["cmdline"] or []))
        or (p.info["name"] == "triton_python_backend_stub" and "broken_0_0" in (p.info["cmdline"] or []))
    ]
    assert left == []


def test_a_killed_triton_leaves_none_of_its_python_backend_regions_in_dev_shm(
    tmp_path: Path, model_repository: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "cifar10").symlink_to(model_repository / "cifar10")
    server = start_triton(repo, tmp_path)
    try:
        assert server.process is not None
        [tritonserver] = [p for p in server_processes(server) if p.name() == "tritonserver"]
        prefix = f"kxform_triton_{server.process.pid}_{server.ports['http']}_"
        regions = list(Path("/dev/shm").glob(f"{prefix}*"))
        assert regions  # the Python backend's regions carry this Triton's prefix, not Triton's shared default

        tritonserver.kill()  # no clean shutdown: Triton cannot unlink them itself
        assert server.process.wait(timeout=60) != 0  # `kxform triton` exits with its server
    finally:
        server.stop(signal.SIGKILL)

    assert not [path for path in regions if path.exists()]
