"""``kxform.call``: a model's call structure, its forward-based names and back; a plugin's ``Call`` to the
predictor's inputs (``kxform.tensors``), and the outputs rebuilt for ``postprocess``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kxform
from kxform.call import flatten, flatten_call, parse_name, rebuild, rows
from kxform.errors import KxformError, RequestError
from kxform.spec import ModelSpec, TensorSpec
from kxform.tensors import assemble_inputs, shape_outputs

SEED_CALL_NAMES = ["ARGS[0]", "ARGS[1]", "ARGS[2][keyA]", "ARGS[2][key2]", "KWARGS[kwarg1]", "KWARGS[kw_arg2]"]


def seed_call(batch: int = 2, **options: Any) -> kxform.Call:
    """The seed's ExampleAotiModel arguments; leaf i holds the value i everywhere."""

    def leaf(i: int) -> np.ndarray:
        return np.full((batch, 16), i, np.float32)

    opts = options or {"keyA": leaf(2), "key2": leaf(3)}
    return kxform.Call(args=(leaf(0), leaf(1), opts), kwargs={"kwarg1": leaf(4), "kw_arg2": leaf(5)})


def model(names: list[str], outputs: tuple[str, ...] = ("RESULT",)) -> ModelSpec:
    return ModelSpec(
        "aoti_example",
        "1",
        tuple(TensorSpec(n, "FP32", (16,)) for n in names),
        tuple(TensorSpec(n, "FP32", (16,)) for n in outputs),
        max_batch_size=1,
    )


def test_flatten_call_names_the_seeds_example_in_call_spec_order() -> None:
    names = [name for name, _ in flatten_call(seed_call())]

    assert names == SEED_CALL_NAMES


def test_a_call_reaches_the_predictor_by_forward_based_names_in_any_config_order() -> None:
    inputs = assemble_inputs(seed_call(), model(list(reversed(SEED_CALL_NAMES))))

    assert {name: int(array[0, 0]) for name, array in inputs.items()} == {n: i for i, n in enumerate(SEED_CALL_NAMES)}


def test_a_call_reaches_the_predictor_by_ordinal_in_call_spec_order() -> None:
    inputs = assemble_inputs(seed_call(), model([f"INPUT__{i}" for i in (5, 0, 3, 1, 2, 4)]))

    assert {name: int(array[0, 0]) for name, array in inputs.items()} == {f"INPUT__{i}": i for i in range(6)}


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        pytest.param(seed_call(keyA=np.zeros((2, 16), np.float32)), "ARGS[2][key2] missing", id="missing-key"),
        pytest.param(
            seed_call(keyA=np.zeros((2, 16)), key2=np.zeros((2, 16)), key3=np.zeros((2, 16))),
            "ARGS[2][key3] is not an input of the model",
            id="extra-key",
        ),
        pytest.param(
            kxform.Call(args=seed_call().args, kwargs={"kwarg1": np.zeros((2, 16))}),
            "KWARGS[kw_arg2] missing",
            id="missing-kwarg",
        ),
    ],
)
def test_a_call_that_does_not_fit_the_model_is_a_400_naming_the_path(call: kxform.Call, fragment: str) -> None:
    with pytest.raises(RequestError) as caught:
        assemble_inputs(call, model(SEED_CALL_NAMES))

    assert caught.value.http_status == 400
    assert fragment in str(caught.value)
    assert "predictor model 'aoti_example'" in str(caught.value)


def test_a_call_with_more_leaves_than_ordinals_is_a_400() -> None:
    with pytest.raises(RequestError, match=r"KWARGS\[kw_arg2\] is not an input of the model"):
        assemble_inputs(seed_call(), model([f"INPUT__{i}" for i in range(5)]))


@pytest.mark.parametrize("key", ["two words", "a[0]", 'quo"te', "", 7])
def test_a_key_triton_cannot_name_is_a_400_saying_why(key: Any) -> None:
    with pytest.raises(RequestError, match="keys of a model's call must be non-empty printable strings"):
        flatten_call(kxform.Call(args=({key: np.zeros(1)},)))


def test_outputs_result_rebuilds_the_seeds_nested_result_and_stays_flat_by_name() -> None:
    names = ["RESULT[AAA]", "RESULT[BBB][0]", "RESULT[BBB][1]", "RESULT[CCC][keyA]", "RESULT[ZZZ]"]
    arrays = {name: np.full((1, 16), i, np.float32) for i, name in enumerate(names)}

    outputs = shape_outputs(arrays, model(SEED_CALL_NAMES, tuple(names)), batch=1)

    assert outputs["RESULT[BBB][1]"] is arrays["RESULT[BBB][1]"]
    result = outputs.result
    assert list(result) == ["AAA", "BBB", "CCC", "ZZZ"]
    assert isinstance(result["BBB"], tuple)
    assert result["BBB"][1] is arrays["RESULT[BBB][1]"]
    assert result["CCC"]["keyA"] is arrays["RESULT[CCC][keyA]"]


def test_outputs_result_of_ordinal_outputs_says_how_to_get_the_structure() -> None:
    outputs = shape_outputs({"OUTPUT__0": np.zeros((1, 16))}, model(["INPUT__0"], ("OUTPUT__0",)), batch=1)

    with pytest.raises(KxformError, match=r"names them OUTPUT__0: read them by name, or rename them"):
        _ = outputs.result
    assert outputs["OUTPUT__0"].shape == (1, 16)


def test_a_single_tensor_result_is_the_tensor() -> None:
    assert rebuild({"RESULT": 5}) == 5


@pytest.mark.parametrize(
    ("flat", "fragment"),
    [
        pytest.param({"RESULT": 1, "RESULT[a]": 2}, "single tensor", id="leaf-and-container"),
        pytest.param({"RESULT[a]": 1, "RESULT[a][0]": 2}, "clash", id="leaf-inside-leaf"),
        pytest.param({"ARGS[0]": 1}, "not part of the model's RESULT", id="input-name"),
        pytest.param({"OUTPUT__0": 1}, "not a forward-based name", id="ordinal"),
    ],
)
def test_rebuild_names_the_tensor_that_does_not_fit(flat: dict[str, Any], fragment: str) -> None:
    with pytest.raises(KxformError, match=fragment):
        rebuild(flat)


def test_parse_name_keeps_segments_as_text() -> None:
    assert parse_name("RESULT[BBB][0]") == ("RESULT", ("BBB", "0"))
    assert parse_name("KWARGS[kw_arg2]") == ("KWARGS", ("kw_arg2",))


def test_rows_gives_one_structure_per_instance_with_lists() -> None:
    tree = {"a": np.arange(4).reshape(2, 2), "b": (np.array([[1.0], [2.0]]),)}

    assert rows(tree) == [{"a": [0, 1], "b": [[1.0]]}, {"a": [2, 3], "b": [[2.0]]}]


# Keys Triton can name (no ", [, ] or whitespace); a tree of dicts, tuples and integer leaves.
KEYS = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='[]"'), min_size=1)
TREES = st.recursive(
    st.integers(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=4).map(tuple),
        st.dictionaries(KEYS, children, min_size=1, max_size=4),
    ),
    max_leaves=12,
)


def _normalised(tree: Any) -> Any:
    """What rebuild can know of a tree: a dict keyed 0..n-1 reads as a tuple, lists as tuples."""
    if isinstance(tree, dict):
        children = {key: _normalised(value) for key, value in tree.items()}
        if set(children) == {str(i) for i in range(len(children))}:
            return tuple(children[str(i)] for i in range(len(children)))
        return children
    if isinstance(tree, tuple | list):
        return tuple(_normalised(value) for value in tree)
    return tree


@given(TREES)
def test_flatten_then_rebuild_gives_the_structure_back(tree: Any) -> None:
    flat = dict(flatten(tree, "RESULT"))

    assert len(flat) == len(flatten(tree, "RESULT"))  # every leaf has a name of its own
    assert rebuild(flat) == _normalised(tree)


@given(TREES, TREES)
def test_a_calls_names_are_unique_and_ordinals_follow_args_then_kwargs(args: Any, kwargs: Any) -> None:
    call = kxform.Call(args=(args,), kwargs={"k": kwargs})
    leaves = flatten_call(call)

    names = [name for name, _ in leaves]
    assert len(set(names)) == len(names)
    separately = flatten((args,), "ARGS") + flatten({"k": kwargs}, "KWARGS")
    assert [leaf for _, leaf in leaves] == [leaf for _, leaf in separately]
    assert all(n.startswith("ARGS[0]") for n in names[: len(flatten(args, "x"))])
