"""From what ``preprocess`` returns to the predictor's named, typed, batched inputs — and back.

A plugin returns one array (the model's single input), a list of per-instance arrays (stacked),
``{input name or ordinal: array}``, or a ``kxform.Call`` (the model's ``forward`` arguments, named by
``kxform.call`` as the predictor's config names them: ``ARGS[2][keyA]`` or ``INPUT__2``). Each is cast
to the declared datatype where that cannot lose information (see ``kxform.codecs.dtypes.lossless_cast``)
and checked against the declared shape; a request larger than ``max_batch_size`` is split into views,
and the outputs joined into ``Outputs``: flat by name, and rebuilt as the model returned them
(``outputs.result``) when the config uses forward-based output names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from kxform.call import Call, flatten_call, is_forward_name, rebuild, rows
from kxform.codecs.dtypes import lossless_cast
from kxform.errors import KxformError, PredictorError, RequestError
from kxform.spec import ModelSpec, TensorSpec

__all__ = ["Outputs", "assemble_inputs", "join_batches", "shape_outputs", "split_batches"]

Array = npt.NDArray[Any]


class Outputs(dict[str, Array]):
    """What ``postprocess`` receives: ``{output name: array [batch, *dims]}``, and ``result``, the same
    arrays in the structure the model returned (``outputs.result["BBB"][0]`` for ``RESULT[BBB][0]``)."""

    def __init__(self, arrays: Mapping[str, Array], model: str = "") -> None:
        super().__init__(arrays)
        self.model = model

    @cached_property
    def result(self) -> Any:
        """The model's return value rebuilt from forward-based names (``RESULT``, ``RESULT[key][0]``, ...)."""
        ordinal = [name for name in self if not is_forward_name(name)]
        if ordinal:
            raise KxformError(
                f"outputs.result needs the predictor's outputs named after the model's result (RESULT, "
                f"RESULT[key], RESULT[key][0], ...); predictor model '{self.model}' names them "
                f"{', '.join(ordinal)}: read them by name, or rename them in its config.pbtxt"
            )
        return rebuild(self)

    def rows(self) -> list[Any]:
        """``result`` split per instance: one structure of rows for each instance of the request."""
        return rows(self.result)


def _as_array(value: Any, spec: TensorSpec) -> Array:
    if isinstance(value, list | tuple) and value and isinstance(value[0], np.ndarray):
        return np.stack(value)  # one array per instance
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise RequestError(f"input '{spec.name}': preprocess returned {type(value).__name__}: {exc}") from exc


def _from_call(call: Call, model: ModelSpec) -> dict[str, Any]:
    """A ``Call``'s leaves under the predictor's input names: forward-based by name, ordinals by position."""
    leaves = flatten_call(call)
    positions = {name: index for index, (name, _) in enumerate(leaves)}
    named: dict[str, Any] = {}
    used: set[int] = set()
    for position, spec in enumerate(model.inputs):
        if is_forward_name(spec.name):
            index = positions.get(spec.name)
        else:
            ordinal = spec.ordinal(position)
            index = ordinal if ordinal < len(leaves) else None
        if index is not None:
            named[spec.name] = leaves[index][1]
            used.add(index)
    _check_call(model, leaves, named, used)
    return named


def _check_call(model: ModelSpec, leaves: list[tuple[str, Any]], named: dict[str, Any], used: set[int]) -> None:
    problems = [f"{spec.name} missing" for spec in model.inputs if spec.name not in named]
    problems += [f"{name} is not an input of the model" for i, (name, _) in enumerate(leaves) if i not in used]
    if problems:
        takes = ", ".join(spec.name for spec in model.inputs)
        raise RequestError(
            f"preprocess returned a Call that does not fit predictor model '{model.name}': "
            f"{'; '.join(problems)} (it takes {takes})"
        )


def _by_name(result: Any, model: ModelSpec) -> dict[str, Any]:
    if isinstance(result, Call):
        return _from_call(result, model)
    if isinstance(result, Mapping):
        named = {model.input(key).name: value for key, value in result.items()}
        missing = [spec.name for spec in model.inputs if spec.name not in named]
        if missing:
            raise RequestError(
                f"preprocess gave no tensor for input(s) {', '.join(missing)} of predictor model '{model.name}'"
            )
        return named
    if len(model.inputs) != 1:
        names = ", ".join(spec.name for spec in model.inputs)
        raise RequestError(
            f"predictor model '{model.name}' has {len(model.inputs)} inputs ({names}); "
            "preprocess must return a dict keyed by input name or ordinal"
        )
    return {model.inputs[0].name: result}


def _check_shape(array: Array, spec: TensorSpec, model: ModelSpec) -> Array:
    if not model.batched:
        if not spec.accepts(array.shape):
            raise RequestError(
                f"input '{spec.name}' has shape {list(array.shape)}; the model expects {spec.describe()}"
            )
        return array
    if array.ndim == len(spec.shape) and spec.accepts(array.shape):
        array = array[np.newaxis]  # a single instance without its batch axis
    if not spec.accepts(array.shape[1:]):
        raise RequestError(
            f"input '{spec.name}' has shape {list(array.shape)} (batch first); "
            f"the model expects [batch, {', '.join(map(str, spec.shape))}] of {spec.datatype}"
        )
    return array


def assemble_inputs(result: Any, model: ModelSpec) -> dict[str, Array]:
    """Name, cast and check the tensors ``preprocess`` returned; all share one batch size."""
    inputs = {}
    for name, value in _by_name(result, model).items():
        spec = model.input(name)
        array = lossless_cast(_as_array(value, spec), spec.datatype, f"input '{name}'")
        inputs[name] = _check_shape(array, spec, model)
    if model.batched:
        sizes = {name: array.shape[0] for name, array in inputs.items()}
        if len(set(sizes.values())) > 1:
            raise RequestError(f"inputs disagree on the batch size: {sizes}")
    return inputs


def batch_size(inputs: Mapping[str, Array]) -> int:
    return int(next(iter(inputs.values())).shape[0])


def split_batches(inputs: Mapping[str, Array], max_batch_size: int) -> list[dict[str, Array]]:
    """Views of at most ``max_batch_size`` rows each (0: no batch axis, one call)."""
    if max_batch_size <= 0 or batch_size(inputs) <= max_batch_size:
        return [dict(inputs)]
    total = batch_size(inputs)
    return [
        {name: array[start : start + max_batch_size] for name, array in inputs.items()}
        for start in range(0, total, max_batch_size)
    ]


def join_batches(parts: Sequence[Mapping[str, Array]]) -> dict[str, Array]:
    if len(parts) == 1:
        return dict(parts[0])
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def shape_outputs(outputs: Mapping[str, Array], model: ModelSpec, batch: int) -> Outputs:
    """Give every output its ``[batch, *dims]`` shape (predictors may return them flat)."""
    shaped = {}
    for name, array in outputs.items():
        dims = model.output(name).shape
        if model.batched and -1 not in dims and array.shape != (batch, *dims):
            if array.size != batch * int(np.prod(dims)):
                raise PredictorError(
                    f"output '{name}' of '{model.name}' has shape {list(array.shape)}, "
                    f"which cannot be [{batch}, {', '.join(map(str, dims))}]"
                )
            array = array.reshape(batch, *dims)
        shaped[name] = array
    return Outputs(shaped, model.name)
