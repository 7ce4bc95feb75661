"""An FP32 image tensor passed through unchanged -> ``pooled`` -> its 10 logits.

Nothing is decoded or computed here: what this transformer costs is kxform's own path, and above
all moving the tensor (602 kB per [3, 224, 224] image) in from the client and out to Triton. That
makes it ``make bench``'s transport-bound plugin (``tensor-8``: 8 images, 4.8 MB per request),
where the predictor's transport (HTTP binary, gRPC, shared memory) decides the cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

import kxform

__all__ = ["TensorPassthrough", "rows_as_batch"]

Array = npt.NDArray[Any]


class TensorPassthrough(kxform.Transformer):
    """V2: one FP32 input ``[N, 3, 224, 224]`` -> the output ``logits`` FP32 ``[N, 10]``.

    V1: each instance is one image as nested lists ``[3][224][224]`` of numbers; each gets its
    10 logits as a list.
    """

    predictor_model = "pooled"
    inputs = (kxform.TensorSpec("input", "FP32", (3, 224, 224)),)
    outputs = (kxform.TensorSpec("logits", "FP32", (10,)),)

    def example_request(self) -> dict[str, Any]:
        """One image whose three channels are flat 0.1, 0.5 and 0.9 (``kxform dev`` writes it to a file)."""
        return {"instances": [[[[value] * 224] * 224 for value in (0.1, 0.5, 0.9)]]}

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        if ctx.protocol == "v2":
            return rows_as_batch(instances)  # kxform checks the dtype and shape against the model
        try:
            return np.asarray(instances, dtype=np.float32)
        except (ValueError, TypeError) as exc:
            shape = ", ".join(map(str, ctx.model.input(0).shape))
            raise kxform.RequestError(
                f"instances are not images of one shape made of numbers ({exc}); "
                f"send each instance as nested lists of shape [{shape}]"
            ) from exc

    def postprocess(self, outputs: dict[str, npt.NDArray[Any]], ctx: kxform.Context) -> Any:
        logits = outputs["OUTPUT__0"]
        return {"logits": logits} if ctx.protocol == "v2" else logits.tolist()


def rows_as_batch(rows: list[Array]) -> Array:
    """The rows as one read-only ``[N, *row.shape]`` array: a view when they lie one after another in
    one buffer, as the rows of a V2 request's tensor do, else a stacked copy.

    kxform hands ``preprocess`` a V2 tensor as its rows; stacking them would copy the megabytes whose
    moving this plugin is there to measure.
    """
    first = rows[0]
    if not all(_follows(first, index, row) for index, row in enumerate(rows)):
        return np.stack(rows)
    shape, strides = (len(rows), *first.shape), (first.nbytes, *first.strides)
    return np.lib.stride_tricks.as_strided(first, shape=shape, strides=strides, writeable=False)


def _follows(first: Array, index: int, row: Array) -> bool:
    """Whether ``row`` is ``first``'s ``index``-th successor in the same C-contiguous buffer."""
    return (
        isinstance(row, np.ndarray)
        and row.flags.c_contiguous
        and (row.dtype, row.shape) == (first.dtype, first.shape)
        and row.base is not None
        and row.base is first.base
        and row.ctypes.data == first.ctypes.data + index * first.nbytes
    )
