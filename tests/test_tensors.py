"""Naming, casting, checking, splitting and joining the predictor's tensors (no server)."""

from __future__ import annotations

import numpy as np
import pytest

from kxform.errors import PredictorError, RequestError
from kxform.predictor.metadata import model_spec_from_triton
from kxform.spec import ModelSpec, TensorSpec
from kxform.tensors import assemble_inputs, join_batches, shape_outputs, split_batches

CIFAR = ModelSpec(
    "cifar10", "1", (TensorSpec("INPUT__0", "FP32", (3, 32, 32)),), (TensorSpec("OUTPUT__0", "FP32", (10,)),), 8
)
TWO_INPUTS = ModelSpec(
    "pair",
    "1",
    (TensorSpec("INPUT__0", "FP32", (4,)), TensorSpec("INPUT__1", "INT64", (-1,))),
    (TensorSpec("OUTPUT__0", "FP32", (2,)),),
    4,
)


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(np.zeros((2, 3, 32, 32)), id="bare-array-float64"),
        pytest.param({"INPUT__0": np.zeros((2, 3, 32, 32), np.float32)}, id="by-name"),
        pytest.param({0: np.zeros((2, 3, 32, 32), np.float32)}, id="by-ordinal"),
        pytest.param([np.zeros((3, 32, 32)), np.zeros((3, 32, 32))], id="list-of-instances"),
    ],
)
def test_assemble_inputs_names_casts_and_stacks(result: object) -> None:
    inputs = assemble_inputs(result, CIFAR)

    assert list(inputs) == ["INPUT__0"]
    assert inputs["INPUT__0"].dtype == np.float32
    assert inputs["INPUT__0"].shape == (2, 3, 32, 32)


def test_assemble_inputs_adds_the_batch_axis_to_a_single_instance() -> None:
    assert assemble_inputs(np.zeros((3, 32, 32), np.float32), CIFAR)["INPUT__0"].shape == (1, 3, 32, 32)


def test_assemble_inputs_accepts_dynamic_dims_and_ordinals_for_several_inputs() -> None:
    inputs = assemble_inputs({0: np.ones((2, 4), np.float32), "INPUT__1": np.arange(10).reshape(2, 5)}, TWO_INPUTS)

    assert inputs["INPUT__1"].dtype == np.int64
    assert inputs["INPUT__1"].shape == (2, 5)


@pytest.mark.parametrize(
    ("result", "model", "fragments"),
    [
        pytest.param(
            np.zeros((2, 3, 31, 32)), CIFAR, ["input 'INPUT__0'", "[2, 3, 31, 32]", "[batch, 3, 32, 32]"], id="shape"
        ),
        pytest.param(
            np.array([[1.5] * 4] * 2),
            TWO_INPUTS,
            ["has 2 inputs", "dict keyed by input name or ordinal"],
            id="bare-array-for-two-inputs",
        ),
        pytest.param({"INPUT__0": np.ones((2, 4))}, TWO_INPUTS, ["no tensor for input(s) INPUT__1"], id="missing"),
        pytest.param(
            {"nope": np.ones((2, 4))}, TWO_INPUTS, ["has no input 'nope'", "INPUT__0, INPUT__1"], id="unknown-name"
        ),
        pytest.param(
            {0: np.ones((2, 4)), 1: np.full((2, 3), 1.5)}, TWO_INPUTS, ["INPUT__1", "INT64"], id="float-to-int"
        ),
        pytest.param(
            {0: np.ones((2, 4)), 1: np.ones((3, 3), np.int64)},
            TWO_INPUTS,
            ["disagree on the batch size"],
            id="batch-sizes",
        ),
    ],
)
def test_assemble_inputs_rejects_mismatches_naming_input_got_and_expected(
    result: object, model: ModelSpec, fragments: list[str]
) -> None:
    with pytest.raises(RequestError) as caught:
        assemble_inputs(result, model)

    assert caught.value.http_status == 400
    for fragment in fragments:
        assert fragment in caught.value.message


def test_split_and_join_keep_the_order_of_thirty_rows() -> None:
    inputs = {"INPUT__0": np.arange(30 * 3, dtype=np.float32).reshape(30, 3)}

    chunks = split_batches(inputs, 8)
    joined = join_batches([{"OUTPUT__0": chunk["INPUT__0"] * 2} for chunk in chunks])

    assert [len(c["INPUT__0"]) for c in chunks] == [8, 8, 8, 6]
    assert all(np.shares_memory(c["INPUT__0"], inputs["INPUT__0"]) for c in chunks)  # views, no copies
    np.testing.assert_array_equal(joined["OUTPUT__0"], inputs["INPUT__0"] * 2)


@pytest.mark.parametrize("max_batch_size", [0, 30, 64])
def test_split_batches_leaves_small_or_unbatched_requests_whole(max_batch_size: int) -> None:
    assert len(split_batches({"x": np.zeros((30, 2))}, max_batch_size)) == 1


def test_shape_outputs_reshapes_flat_outputs_and_rejects_impossible_ones() -> None:
    shaped = shape_outputs({"OUTPUT__0": np.arange(20, dtype=np.float32)}, CIFAR, batch=2)

    assert shaped["OUTPUT__0"].shape == (2, 10)
    with pytest.raises(PredictorError, match="cannot be \\[2, 10\\]"):
        shape_outputs({"OUTPUT__0": np.arange(21, dtype=np.float32)}, CIFAR, batch=2)


def test_model_spec_reads_http_and_grpc_json_alike() -> None:
    http = model_spec_from_triton(
        {
            "name": "m",
            "versions": ["1"],
            "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 3]}],
            "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 2]}],
        },
        {"max_batch_size": 8},
    )
    grpc = model_spec_from_triton(
        {
            "name": "m",
            "versions": ["1"],
            "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": ["-1", "3"]}],
            "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": ["-1", "2"]}],
        },
        {"max_batch_size": "8"},
    )

    assert http == grpc
    assert http.inputs[0].shape == (3,)
    assert http.input(0).name == "INPUT__0"
