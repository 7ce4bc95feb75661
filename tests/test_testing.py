"""kxform.testing and kxform's pytest plugin: MockPredictor, TransformerRunner, ServeClient, the fixtures' options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kxform
from kxform.errors import KxformError
from kxform.predictor import load_model_spec
from kxform.testing import MockPredictor, ReplyError, ServerProcess, TransformerRunner

CIFAR10 = kxform.ModelSpec(
    "cifar10",
    "1",
    (kxform.TensorSpec("INPUT__0", "FP32", (3, 32, 32)),),
    (kxform.TensorSpec("OUTPUT__0", "FP32", (10,)),),
    8,
    {"OUTPUT__0": tuple(f"label-{i}" for i in range(10))},
)


def first_ten(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    batch = inputs["INPUT__0"]
    return {"OUTPUT__0": batch.reshape(len(batch), -1)[:, :10].tolist()}  # lists: the mock casts them


def nested(rows: int) -> list[Any]:
    return np.arange(rows * 3 * 32 * 32, dtype=np.float32).reshape(rows, 3, 32, 32).tolist()


async def test_kxform_reads_the_mocks_spec_back_as_it_reads_tritons() -> None:
    assert await load_model_spec(MockPredictor(CIFAR10, first_ten), "cifar10") == CIFAR10


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        pytest.param({"INPUT": np.zeros((1, 3, 32, 32), np.float32)}, "expects inputs ['INPUT__0']", id="name"),
        pytest.param({"INPUT__0": np.zeros((1, 3, 32, 32), np.float64)}, "dtype float64, expected FP32", id="dtype"),
        pytest.param({"INPUT__0": np.zeros((1, 3, 16, 16), np.float32)}, "shape [3, 16, 16]", id="shape"),
        pytest.param({"INPUT__0": np.zeros((9, 3, 32, 32), np.float32)}, "max_batch_size is 8", id="batch"),
    ],
)
async def test_the_mock_refuses_what_triton_would_refuse(inputs: dict[str, np.ndarray], fragment: str) -> None:
    mock = MockPredictor(CIFAR10, first_ten)

    with pytest.raises(kxform.RequestError) as caught:
        await mock.infer("cifar10", inputs, ["OUTPUT__0"])

    assert fragment in caught.value.message
    assert mock.calls == []


async def test_the_mock_casts_outputs_to_their_datatype_and_names_a_missing_one() -> None:
    batch = np.ones((2, 3, 32, 32), np.float32)

    outputs = await MockPredictor(CIFAR10, first_ten).infer("cifar10", {"INPUT__0": batch}, ["OUTPUT__0"])

    assert outputs["OUTPUT__0"].dtype == np.float32
    assert outputs["OUTPUT__0"].shape == (2, 10)
    with pytest.raises(KxformError, match="returned no output 'OUTPUT__0'"):
        await MockPredictor(CIFAR10, lambda inputs: {}).infer("cifar10", {"INPUT__0": batch}, ["OUTPUT__0"])


async def test_an_async_handler_and_a_predictor_that_is_down() -> None:
    async def later(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        return first_ten(inputs)

    mock = MockPredictor(CIFAR10, later)
    outputs = await mock.infer("cifar10", {"INPUT__0": np.ones((1, 3, 32, 32), np.float32)}, ["OUTPUT__0"])
    mock.ready = False

    assert outputs["OUTPUT__0"].shape == (1, 10)
    assert not await mock.model_ready("cifar10")
    assert not await mock.server_ready()


async def test_the_runner_goes_through_kxforms_request_path_v1_and_v2() -> None:
    mock = MockPredictor(CIFAR10, first_ten)
    runner = TransformerRunner("test-tensor", mock)  # tests/plugins: nested lists of the model's input

    predictions = await runner.v1(nested(11))  # more rows than max_batch_size: split, then joined
    outputs = await runner.v2({"INPUT__0": np.asarray(nested(2), np.float32)})

    assert [len(call["INPUT__0"]) for call in mock.calls] == [8, 3, 2]
    np.testing.assert_allclose(predictions, np.asarray(nested(11)).reshape(11, -1)[:, :10])
    assert outputs["OUTPUT__0"].shape == (2, 10)


async def test_the_runner_raises_the_400_the_server_would_answer() -> None:
    with pytest.raises(kxform.RequestError) as caught:
        await TransformerRunner("test-tensor", MockPredictor(CIFAR10, first_ten)).v1([[1.0, 2.0]])

    assert caught.value.http_status == 400
    assert "INPUT__0" in caught.value.message


@pytest.mark.integration
@pytest.mark.parametrize(
    "flags", [pytest.param((), id="http"), pytest.param(("--predictor_protocol=grpc-v2",), id="grpc")]
)
def test_serve_client_v1_v2_and_grpc_get_the_same_answer(kxform_serve: Any, flags: tuple[str, ...]) -> None:
    server = kxform_serve("test-tensor", *flags)
    batch = np.asarray(nested(2), np.float32) / 3072

    v1 = server.v1(batch.tolist()).predictions
    v2 = server.v2({"INPUT__0": batch})
    grpc = server.grpc({"INPUT__0": batch})

    np.testing.assert_allclose(v2["OUTPUT__0"], v1, rtol=1e-6)
    np.testing.assert_allclose(grpc["OUTPUT__0"], v1, rtol=1e-6)


@pytest.mark.integration
def test_serve_client_errors_carry_their_status(kxform_serve: Any) -> None:
    server = kxform_serve("test-tensor")

    reply = server.v1([[1.0, 2.0]])
    with pytest.raises(ReplyError) as rest:
        server.v2({"INPUT__0": np.zeros((1, 2), np.float32)})
    with pytest.raises(ReplyError) as grpc:
        server.grpc({"INPUT__0": np.zeros((1, 2), np.float32)})

    assert reply.status == 400
    assert "INPUT__0" in reply.json["error"]
    assert rest.value.status == 400
    assert grpc.value.status == "INVALID_ARGUMENT"


@pytest.mark.integration
def test_the_triton_fixture_is_shared_by_the_session(triton: ServerProcess, kxform_serve: Any) -> None:
    assert triton.http_address in " ".join(kxform_serve("test-tensor").server.command)


REPOSITORY_PROBE = textwrap.dedent(
    """
    def test_probe(kxform_model_repository):
        print("REPOSITORY", kxform_model_repository)
    """
)


def _model_dir(root: Path) -> Path:
    (root / "m").mkdir(parents=True)
    (root / "m" / "config.pbtxt").write_text('name: "m"\n')
    return root


def _probe(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(REPOSITORY_PROBE)
    command = [sys.executable, "-m", "pytest", "-p", "kxform.pytest_plugin", "-p", "no:cacheprovider", "-s", *args]
    environment = {k: v for k, v in os.environ.items() if k != "KXFORM_MODEL_REPOSITORY"}
    return subprocess.run(
        [*command, "test_probe.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment | (env or {}),
    )


def test_the_model_repository_comes_from_the_option_then_the_environment_then_the_ini(tmp_path: Path) -> None:
    ini, env, option = (_model_dir(tmp_path / name) for name in ("from-ini", "from-env", "from-option"))
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nkxform_model_repository = "from-ini"\n')

    outputs = [
        _probe(tmp_path).stdout,
        _probe(tmp_path, env={"KXFORM_MODEL_REPOSITORY": str(env)}).stdout,
        _probe(tmp_path, f"--kxform-model-repository={option}", env={"KXFORM_MODEL_REPOSITORY": str(env)}).stdout,
    ]

    assert [f"REPOSITORY {path}" in output for output, path in zip(outputs, (ini, env, option), strict=True)] == [
        True,
        True,
        True,
    ], outputs


def test_no_model_repository_fails_saying_how_to_give_one(tmp_path: Path) -> None:
    done = _probe(tmp_path)

    assert done.returncode == 1
    assert "pass --kxform-model-repository DIR, set $KXFORM_MODEL_REPOSITORY" in done.stdout


def test_the_pytest_plugin_and_kxform_testing_import_no_torch_and_no_tritonclient() -> None:
    code = (
        "import sys, kxform.pytest_plugin, kxform.testing; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tritonclient', 'kserve'))))"
    )
    done = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
