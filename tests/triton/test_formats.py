"""The adapter's loaders in this process (no Triton): the PyTorch backend's parameters honoured or rejected by
name, a ``.pt2``'s call spec against the config's names, an ONNX model against its config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kxform.triton.formats import LoadError, TorchOptions, load_runner, torch_parameters


def entries(*names: str, dims: list[int] | None = None) -> list[dict[str, Any]]:
    return [{"name": name, "data_type": "TYPE_FP32", "dims": dims or [16]} for name in names]


def aoti_config(inputs: list[str], outputs: list[str], max_batch_size: int = 1) -> dict[str, Any]:
    return {"max_batch_size": max_batch_size, "input": entries(*inputs), "output": entries(*outputs)}


SEED_INPUTS = ["ARGS[0]", "ARGS[1]", "ARGS[2][keyA]", "ARGS[2][key2]", "KWARGS[kwarg1]", "KWARGS[kw_arg2]"]


@pytest.fixture(scope="module")
def pt2(model_repository: Path) -> str:
    return str(model_repository / "aoti_example" / "1" / "model.pt2")


def test_torchscript_parameters_are_read_as_the_pytorch_backend_reads_them() -> None:
    options = torch_parameters(
        {
            "INFERENCE_MODE": "false",
            "DISABLE_OPTIMIZED_EXECUTION": "true",
            "ENABLE_JIT_EXECUTOR": "false",
            "ENABLE_JIT_PROFILING": "true",
            "NUM_THREADS": "2",
            "NUM_INTEROP_THREADS": "3",
            "ENABLE_CACHE_CLEANING": "true",  # CUDA only: nothing to clean on the CPU, as in Triton
            "ENABLE_WEIGHT_SHARING": "false",
            "TORCH_COMPILE_OPTIONAL_PARAMETERS": '{"disable": true}',
        },
        "torchscript",
    )

    assert options == TorchOptions(
        inference_mode=False,
        optimized_execution=False,
        jit_executor=False,
        jit_profiling=True,
        intra_op_threads=2,
        inter_op_threads=3,
    )


@pytest.mark.parametrize("enabled", [True, False])
def test_the_jit_switches_are_set_when_a_torchscript_model_loads(model_repository: Path, enabled: bool) -> None:
    config = {"max_batch_size": 8, "input": entries("INPUT__0", dims=[3, 32, 32]), "output": entries("OUTPUT__0")}
    flag = "true" if enabled else "false"
    before = (torch._C._jit_set_profiling_executor(True), torch._C._jit_set_profiling_mode(True))
    try:
        parameters = {"ENABLE_JIT_EXECUTOR": flag, "ENABLE_JIT_PROFILING": flag}
        load_runner("torchscript", str(model_repository / "cifar10" / "1" / "model.pt"), config, parameters)
        # Each setter returns the value it replaces: what the load left.
        assert torch._C._jit_set_profiling_executor(True) is enabled
        assert torch._C._jit_set_profiling_mode(True) is enabled
    finally:
        torch._C._jit_set_profiling_executor(before[0])
        torch._C._jit_set_profiling_mode(before[1])


@pytest.mark.parametrize(
    ("parameters", "model_format", "fragment"),
    [
        pytest.param({"ENABLE_WEIGHT_SHARING": "true"}, "torchscript", "ENABLE_WEIGHT_SHARING is true", id="sharing"),
        pytest.param(
            {"TORCH_COMPILE_OPTIONAL_PARAMETERS": '{"mode": "max-autotune"}'},
            "torchscript",
            "does not apply to a TorchScript model",
            id="compile",
        ),
        pytest.param(
            {"TORCH_COMPILE_OPTIONAL_PARAMETERS": "{mode"}, "torchscript", "is not a JSON object", id="compile-json"
        ),
        pytest.param(
            {"INFERENCE_MODE": "maybe"}, "torchscript", "INFERENCE_MODE is 'maybe'; set it to \"true\"", id="bool"
        ),
        pytest.param({"NUM_THREADS": "four"}, "torchscript", "NUM_THREADS is 'four'; set it to a number", id="count"),
        pytest.param({"NUM_THREADS": "2"}, "aoti", "NUM_THREADS applies to TorchScript models only", id="aoti-threads"),
        pytest.param(
            {"ENABLE_JIT_PROFILING": "true"}, "aoti", "ENABLE_JIT_PROFILING applies to TorchScript", id="aoti-jit"
        ),
    ],
)
def test_a_parameter_that_cannot_be_honoured_is_rejected_by_name(
    parameters: dict[str, str], model_format: str, fragment: str
) -> None:
    with pytest.raises(LoadError, match=fragment.replace("(", r"\(")):
        torch_parameters(parameters, model_format)


@pytest.mark.parametrize(
    "outputs",
    [
        pytest.param(["RESULT[ZZZ]", "RESULT[BBB][0]", "RESULT[DDD][KB]"], id="forward-based"),
        pytest.param(["OUTPUT__1", "OUTPUT__2", "OUTPUT__7"], id="ordinal"),
    ],
)
def test_a_pt2_runs_by_either_naming_as_in_process(pt2: str, outputs: list[str]) -> None:
    inputs = SEED_INPUTS if outputs[0].startswith("RESULT") else [f"INPUT__{i}" for i in range(6)]
    runner = load_runner("aoti", pt2, aoti_config(inputs[::-1], outputs), {})
    arrays = [np.random.default_rng(i).random((1, 16), dtype=np.float32) for i in range(6)]

    values = runner.run(arrays[::-1])

    tensors = [torch.from_numpy(a) for a in arrays]
    expected = torch._inductor.aoti_load_package(pt2)(
        tensors[0], tensors[1], {"keyA": tensors[2], "key2": tensors[3]}, kwarg1=tensors[4], kw_arg2=tensors[5]
    )
    wanted = [expected["ZZZ"], expected["BBB"][0], expected["DDD"]["KB"]]
    for value, tensor in zip(values, wanted, strict=True):
        np.testing.assert_array_equal(value.numpy(), tensor.numpy())
    assert not runner.batches


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            aoti_config(["ARGS[0]", "ARGS[1]", "ARGS[3]"], ["RESULT[AAA]"]),
            "input 'ARGS[3]' is not in the model's call spec (it has ARGS[0], ARGS[1], ARGS[2][keyA], ARGS[2][key2], "
            "KWARGS[kwarg1], KWARGS[kw_arg2])",
            id="unknown-input",
        ),
        pytest.param(
            aoti_config(SEED_INPUTS, ["RESULT[QQQ]"]),
            "output 'RESULT[QQQ]' is not in the model's call spec",
            id="output",
        ),
        pytest.param(
            {"max_batch_size": 1, "input": entries(*SEED_INPUTS)},
            "the config declares no output; the model's call spec has OUTPUT__0 or RESULT[AAA], OUTPUT__1 or "
            "RESULT[ZZZ], OUTPUT__2 or RESULT[BBB][0]",
            id="no-outputs",
        ),
        pytest.param(
            {"max_batch_size": 1, "output": entries("RESULT[AAA]")},
            "takes input ARGS[0] (INPUT__0), ARGS[1] (INPUT__1)",
            id="no-inputs",
        ),
        pytest.param(
            aoti_config([f"INPUT__{i}" for i in range(7)], ["OUTPUT__0"]),
            "input 'INPUT__6' is not in the model's call spec",
            id="ordinal-out-of-range",
        ),
        pytest.param(
            aoti_config(SEED_INPUTS[:5], ["RESULT[AAA]"]),
            "takes input KWARGS[kw_arg2] (INPUT__5), which the config does not declare",
            id="undeclared",
        ),
        pytest.param(
            aoti_config([*SEED_INPUTS, "INPUT__0"], ["RESULT[AAA]"]),
            "input 'INPUT__0' names ARGS[0], which another input of the config names too",
            id="twice",
        ),
        pytest.param(
            {
                **aoti_config(SEED_INPUTS, ["RESULT[AAA]"]),
                "input": [*entries(*SEED_INPUTS[:5]), *entries("KWARGS[kw_arg2]", dims=[8])],
            },
            "input 'KWARGS[kw_arg2]' (TYPE_FP32, dims [8] after the batch dimension) is not what the model was "
            "compiled for: unmatched dim value at 1, expected: 16, but got: 8",
            id="dims",
        ),
        pytest.param(
            {
                **aoti_config(SEED_INPUTS, ["RESULT[AAA]"]),
                "input": [{"name": "ARGS[0]", "data_type": "TYPE_FP64", "dims": [16]}, *entries(*SEED_INPUTS[1:])],
            },
            "input 'ARGS[0]' (TYPE_FP64, dims [16] after the batch dimension) is not what the model was compiled for: "
            "unmatched dtype",
            id="dtype",
        ),
        pytest.param(
            aoti_config(SEED_INPUTS, ["RESULT[AAA]"], max_batch_size=8),
            "max_batch_size is 8; Triton's PyTorch backend does not batch .pt2 models yet",
            id="batch",
        ),
    ],
)
def test_a_pt2_config_that_does_not_match_its_call_spec_fails_to_load(
    pt2: str, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(LoadError) as caught:
        load_runner("aoti", pt2, config, {})

    assert message in str(caught.value)


def onnx_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "max_batch_size": 8,
        "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [3, 32, 32]}],
        "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [10]}],
    }
    return {**config, **changes}


def test_an_onnx_model_runs_batches_as_in_process(model_repository: Path) -> None:
    import onnxruntime

    path = str(model_repository / "cifar10_onnx" / "1" / "model.onnx")
    runner = load_runner("onnx", path, onnx_config(), {"intra_op_thread_count": "1"})
    batch = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)

    (logits,) = runner.run([batch])

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(logits, session.run(None, {"INPUT__0": batch})[0])
    assert runner.batches


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"input": [{"name": "image", "data_type": "TYPE_FP32", "dims": [3, 32, 32]}]},
            "input 'image' is not in the model (it has INPUT__0)",
            id="name",
        ),
        pytest.param(
            {"input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [3, 224, 224]}]},
            "input 'INPUT__0': the model's shape is [-1, 3, 32, 32], the config's is [-1, 3, 224, 224]",
            id="dims",
        ),
        pytest.param(
            {"max_batch_size": 0}, "the model's shape is [-1, 3, 32, 32], the config's is [3, 32, 32]", id="batch"
        ),
        pytest.param(
            {"output": [{"name": "OUTPUT__0", "data_type": "TYPE_INT64", "dims": [10]}]},
            "output 'OUTPUT__0' is TYPE_INT64 in the config, but the model's is tensor(float)",
            id="dtype",
        ),
    ],
)
def test_an_onnx_config_that_does_not_match_the_model_fails_to_load(
    model_repository: Path, changes: dict[str, Any], message: str
) -> None:
    path = str(model_repository / "cifar10_onnx" / "1" / "model.onnx")

    with pytest.raises(LoadError) as caught:
        load_runner("onnx", path, onnx_config(**changes), {})

    assert message in str(caught.value)
