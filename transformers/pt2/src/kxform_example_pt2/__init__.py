"""JSON documents shaped like a model's ``forward`` arguments -> ``kxform.Call`` -> ``aoti_example``.

``aoti_example`` (``make models``) is an AOT Inductor ``.pt2`` whose ``forward(hdata, vdata, options,
*, kwarg1, kw_arg2)`` takes a dict among its arguments and returns nested dicts and a tuple, like the
seed's ``ExampleAotiModel``. Its config names the tensors by the call spec (``ARGS[2][keyA]``,
``RESULT[BBB][0]``). This plugin hands the client's structure to kxform as it is: the documents'
``options`` become the dict argument and every other key a keyword argument, so a key the model lacks
or misses is reported by kxform with its path (``ARGS[2][key2] missing``), and the answer is the
model's own structure, one per instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

import kxform

__all__ = ["Pt2Example"]

Array = npt.NDArray[Any]
POSITIONAL = ("hdata", "vdata", "options")  # forward's positional arguments, in order


class Pt2Example(kxform.Transformer):
    """V1: each instance is ``{"hdata": [16 numbers], "vdata": [...], "options": {"keyA": [...], "key2": [...]},
    "kwarg1": [...], "kw_arg2": [...]}``; each answer is the model's result for it, ``{"AAA": [...],
    "BBB": [[...], [...]], "CCC": {...}, "DDD": {...}, "ZZZ": [...]}``.

    V2: one BYTES input ``instance``, each element such a document as JSON text; the outputs are the
    model's tensors under its own names (``RESULT[AAA]``, ``RESULT[BBB][0]``, ...), FP32 ``[N, 16]``.
    """

    predictor_model = "aoti_example"
    inputs = (kxform.TensorSpec("instance", "BYTES", ()),)

    def example_request(self) -> dict[str, Any]:
        """One document (``example.json`` beside this package's README is the same)."""
        up = [round(0.1 * i, 1) for i in range(16)]
        down = [round(-0.05 * i, 2) for i in range(16)]
        document = {"hdata": up, "vdata": down, "options": {"keyA": up, "key2": down}, "kwarg1": up, "kw_arg2": down}
        return {"instances": [document]}

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> kxform.Call:
        documents = [_document(instance, index) for index, instance in enumerate(instances)]
        first = documents[0]
        missing = [name for name in POSITIONAL if name not in first]
        if missing:
            raise kxform.RequestError(f"instances[0] has no {', '.join(missing)}; send {', '.join(POSITIONAL)}")
        args = tuple(_stack(documents, (name,)) for name in POSITIONAL)
        kwargs = {key: _stack(documents, (key,)) for key in first if key not in POSITIONAL}
        return kxform.Call(args=args, kwargs=kwargs)

    def postprocess(self, outputs: kxform.Outputs, ctx: kxform.Context) -> Any:
        if ctx.protocol == "v2":
            return dict(outputs)  # flat, under the model's forward-based names
        return outputs.rows()  # the model's own structure, one per instance


def _document(instance: Any, index: int) -> Mapping[str, Any]:
    if isinstance(instance, bytes | str | np.bytes_):  # a V2 BYTES element: the document as JSON text
        try:
            instance = orjson.loads(instance)
        except orjson.JSONDecodeError as exc:
            raise kxform.RequestError(
                f"instances[{index}] is not JSON ({exc}); send one JSON object per element"
            ) from exc
    if not isinstance(instance, Mapping):
        raise kxform.RequestError(f"instances[{index}] is {type(instance).__name__}; send a JSON object")
    return instance


def _stack(documents: list[Mapping[str, Any]], path: tuple[str, ...]) -> Any:
    """The value at ``path`` of every document, stacked: dicts key by key (the first document's keys), else
    rows of numbers as one FP32 array [N, ...]."""
    values = [_at(document, path, index) for index, document in enumerate(documents)]
    if isinstance(values[0], Mapping):
        return {key: _stack(documents, (*path, key)) for key in values[0]}
    try:
        return np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise kxform.RequestError(
            f"instances[*].{'.'.join(path)} are not rows of numbers of one length ({exc}); send 16 numbers each"
        ) from exc


def _at(document: Mapping[str, Any], path: tuple[str, ...], index: int) -> Any:
    value: Any = document
    for depth, key in enumerate(path):
        if not isinstance(value, Mapping) or key not in value:
            where = ".".join(path[: depth + 1])
            raise kxform.RequestError(f"instances[{index}] has no {where}, which instances[0] has; send the same keys")
        value = value[key]
    return value
