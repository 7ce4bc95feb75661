"""PyTorch 2 models through ``kxform triton`` (the real Triton): AOT Inductor ``.pt2`` by forward-based and
ordinal names against ``aoti_load_package`` in this process, one classifier as TorchScript, ``.pt2`` and ONNX,
and the load errors a user sees."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as triton_http

from kxform.testing import ServerProcess, free_port, kxform_command
from tests.triton.test_server import grpc_infer

pytestmark = pytest.mark.integration

SEED_INPUTS = ["ARGS[0]", "ARGS[1]", "ARGS[2][keyA]", "ARGS[2][key2]", "KWARGS[kwarg1]", "KWARGS[kw_arg2]"]
# The call spec's order of aoti_example's result: {"AAA", "ZZZ", "BBB": (0, 1), "CCC": {keyA, key2}, "DDD": {KA, KB}}
RESULT_LEAVES = [
    ("AAA",),
    ("ZZZ",),
    ("BBB", 0),
    ("BBB", 1),
    ("CCC", "keyA"),
    ("CCC", "key2"),
    ("DDD", "KA"),
    ("DDD", "KB"),
]


def http_client(triton: ServerProcess) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(f"127.0.0.1:{triton.ports['http']}", network_timeout=60)


def infer(
    triton: ServerProcess, model: str, inputs: dict[str, np.ndarray], outputs: list[str]
) -> dict[str, np.ndarray]:
    tensors = []
    for name, array in inputs.items():
        tensor = triton_http.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array, binary_data=True)
        tensors.append(tensor)
    wanted = [triton_http.InferRequestedOutput(name, binary_data=True) for name in outputs]
    result = http_client(triton).infer(model, tensors, outputs=wanted)
    return {name: result.as_numpy(name) for name in outputs}


def seed_arrays(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(1, 16)).astype(np.float32) for _ in SEED_INPUTS]


def in_process(model_repository: Path, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """aoti_example's result leaves, in call spec order, from the package loaded here."""
    package = torch._inductor.aoti_load_package(str(model_repository / "aoti_example" / "1" / "model.pt2"))
    h, v, a, b, k1, k2 = (torch.from_numpy(x) for x in arrays)
    result = package(h, v, {"keyA": a, "key2": b}, kwarg1=k1, kw_arg2=k2)
    leaves = []
    for path in RESULT_LEAVES:
        value = result
        for key in path:
            value = value[key]
        leaves.append(value.numpy())
    return leaves


def forward_name(path: tuple[str | int, ...]) -> str:
    return "RESULT" + "".join(f"[{key}]" for key in path)


def test_pt2_by_forward_based_names_equals_aoti_load_package(triton: ServerProcess, model_repository: Path) -> None:
    arrays = seed_arrays(0)
    names = [forward_name(path) for path in RESULT_LEAVES]

    outputs = infer(triton, "aoti_example", dict(zip(SEED_INPUTS, arrays, strict=True)), names)

    for name, expected in zip(names, in_process(model_repository, arrays), strict=True):
        np.testing.assert_array_equal(outputs[name], expected, err_msg=name)


def test_pt2_by_ordinal_names_follows_the_call_spec_order(triton: ServerProcess, model_repository: Path) -> None:
    arrays = seed_arrays(1)
    names = [f"OUTPUT__{i}" for i in range(len(RESULT_LEAVES))]
    inputs = {f"INPUT__{i}": array for i, array in enumerate(arrays)}

    outputs = infer(triton, "aoti_example_ordinal", inputs, names)

    expected = in_process(model_repository, arrays)
    for name, leaf in zip(names, expected, strict=True):
        np.testing.assert_array_equal(outputs[name], leaf, err_msg=name)
    np.testing.assert_array_equal(outputs["OUTPUT__1"], arrays[0] - arrays[1])  # RESULT[ZZZ], second in the dict


def test_one_classifier_as_torchscript_pt2_and_onnx_gives_the_same_logits(triton: ServerProcess) -> None:
    images = np.random.default_rng(2).random((4, 3, 32, 32), dtype=np.float32)

    torchscript = infer(triton, "cifar10", {"INPUT__0": images}, ["OUTPUT__0"])["OUTPUT__0"]
    onnx = infer(triton, "cifar10_onnx", {"INPUT__0": images}, ["OUTPUT__0"])["OUTPUT__0"]
    # cifar10_pt2 takes one image per call (max_batch_size 1, as Triton allows for .pt2 models).
    pt2 = np.concatenate(
        [infer(triton, "cifar10_pt2", {"INPUT__0": x[None]}, ["OUTPUT__0"])["OUTPUT__0"] for x in images]
    )

    assert torchscript.shape == onnx.shape == pt2.shape == (4, 10)
    assert np.abs(torchscript).max() > 1e-3  # real logits, not zeros
    np.testing.assert_allclose(pt2, torchscript, rtol=0, atol=1e-5)
    np.testing.assert_allclose(onnx, torchscript, rtol=0, atol=1e-5)


async def test_onnx_dynamic_batching_keeps_each_request_its_own_rows(triton: ServerProcess) -> None:
    batches = [np.random.default_rng(i).random((1 + i % 3, 3, 32, 32), dtype=np.float32) for i in range(12)]

    onnx = await asyncio.gather(*(grpc_infer(triton.grpc_url, "cifar10_onnx", "INPUT__0", b) for b in batches))
    script = await asyncio.gather(*(grpc_infer(triton.grpc_url, "cifar10", "INPUT__0", b) for b in batches))

    for batch, got, expected in zip(batches, onnx, script, strict=True):
        assert got.shape == (len(batch), 10)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_config_names_the_call_spec_lacks_fail_the_load_with_their_name(tmp_path: Path, model_repository: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "aoti_example", repo / "bad_names")
    config = repo / "bad_names" / "config.pbtxt"
    config.write_text(config.read_text().replace('"aoti_example"', '"bad_names"').replace("ARGS[2][key2]", "ARGS[3]"))
    shutil.copytree(model_repository / "cifar10", repo / "compiled")
    config = repo / "compiled" / "config.pbtxt"
    compile_options = 'value: { string_value: "{\\"mode\\": \\"default\\"}" }'
    config.write_text(
        config.read_text().replace('"cifar10"', '"compiled"')
        + f'parameters: {{ key: "TORCH_COMPILE_OPTIONAL_PARAMETERS" {compile_options} }}\n'
    )
    ports = [f"--{kind}-port={free_port()}" for kind in ("http", "grpc", "metrics")]

    done = subprocess.run(
        kxform_command("triton", f"--model-repository={repo}", *ports), capture_output=True, text=True, timeout=180
    )

    assert done.returncode == 1
    last_line = done.stderr.strip().splitlines()[-1]
    failures = last_line.removeprefix("kxform triton: error: ").split("; model ")
    assert failures[0] == (
        "model 'bad_names' failed to load: input 'ARGS[3]' is not in the model's call spec (it has ARGS[0], ARGS[1], "
        "ARGS[2][keyA], ARGS[2][key2], KWARGS[kwarg1], KWARGS[kw_arg2])"
    )
    assert failures[1].startswith("'compiled' failed to load: parameter TORCH_COMPILE_OPTIONAL_PARAMETERS")
    assert "does not apply to a TorchScript model" in failures[1]
