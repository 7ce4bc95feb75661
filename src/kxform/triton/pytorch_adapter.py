"""Triton Python-backend model that serves a PyTorch model the way Triton's own backend for it would.

``kxform triton`` copies this file as ``<model>/<version>/model.py`` of a derived repository; it runs
inside Triton's Python stub, never inside kxform. The model file and its format come from the
parameters ``repository.py`` adds: a TorchScript ``model.pt`` (PyTorch backend), an AOT Inductor
``model.pt2`` (PyTorch backend, ``torch_aoti``) or a ``model.onnx`` exported from PyTorch (ONNX Runtime
backend); ``kxform.triton.formats`` loads each, once per model instance, and knows its naming rules.

Here is what they share: requests that Triton's dynamic batcher hands over together run as one batch
where the model can batch (TorchScript and ONNX with ``max_batch_size`` > 0: rows stacked, strings
included, as the PyTorch backend passes every request's strings as one list), else one by one;
``BYTES`` inputs reach a TorchScript model as one ``List[str]`` (all elements, row-major: a batch of
``[N, 1]`` strings is a list of N) and a returned ``List[str]`` goes back as ``BYTES`` shaped
``[N, *dims]`` (or ``dims`` for an unbatched model). A request the model cannot take is answered with
Triton's INVALID_ARG; a model that cannot be loaded fails with the loader's message.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

if TYPE_CHECKING:
    from kxform.triton.formats import Runner

# torch 2.14 deprecates TorchScript in favour of torch.export, but TorchScript is what users upload to
# Triton's PyTorch backend; the warning would repeat in every stub's log and says nothing actionable.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)

Array = npt.NDArray[Any]


# Where ``kxform triton`` found kxform (formats.KXFORM_PATH_PARAMETER; repository.py writes it): Triton's stub
# embeds Python isolated from PYTHONPATH, so it could otherwise import another kxform than the one that
# derived this model (an editable install of another checkout, say).
KXFORM_PATH_PARAMETER = "KXFORM_PYTHON_PATH"


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def _formats(parameters: dict[str, str]) -> Any:
    path = parameters.get(KXFORM_PATH_PARAMETER)
    if path and path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("kxform.triton.formats")


class TritonPythonModel:
    """One instance per ``instance_group`` member; each loads its own copy of the model."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = _parameters(config)
        formats = _formats(parameters)
        self.input_error: type[Exception] = formats.InputError
        filename = parameters.get(formats.MODEL_FILE_PARAMETER, "model.pt")
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"model file {path} does not exist")
        model_format = parameters.get(formats.MODEL_FORMAT_PARAMETER, "torchscript")
        try:
            self.runner: Runner = formats.load_runner(model_format, path, config, parameters)
        except formats.LoadError as exc:
            # Triton logs this as "failed to load 'NAME' version V: ..."; kxform triton prints it.
            raise pb_utils.TritonModelException(str(exc)) from None
        self.batched = config.get("max_batch_size", 0) > 0

    def execute(self, requests: list[Any]) -> list[Any]:
        batch = [self._read_inputs(request) for request in requests]
        if len(batch) > 1 and self.batched and self.runner.batches and self._stackable(batch):
            try:
                return self._run_stacked(batch)
            except Exception:
                pass  # one of them is at fault: run each alone, so only it gets the error
        return [self._run_one(arrays) for arrays in batch]

    def _read_inputs(self, request: Any) -> list[Array]:
        return [pb_utils.get_input_tensor_by_name(request, spec["name"]).as_numpy() for spec in self.runner.inputs]

    def _stackable(self, batch: list[list[Array]]) -> bool:
        # BYTES (object) arrays concatenate like any other: their rows become one longer List[str].
        first = batch[0]
        return all(a.shape[1:] == f.shape[1:] for arrays in batch for a, f in zip(arrays, first, strict=True))

    def _run_stacked(self, batch: list[list[Array]]) -> list[Any]:
        sizes = [arrays[0].shape[0] for arrays in batch]
        stacked = [np.concatenate(column) for column in zip(*batch, strict=True)]
        outputs = self._forward(stacked)
        bounds = np.cumsum([0, *sizes])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(n, o[lo:hi]) for n, o in outputs])
            for lo, hi in itertools.pairwise(bounds)
        ]

    def _run_one(self, arrays: list[Array]) -> Any:
        try:
            outputs = self._forward(arrays)
        except Exception as exc:
            if isinstance(exc, self.input_error):  # the request's fault: Triton answers 400 / INVALID_ARGUMENT
                return pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                )
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
        return pb_utils.InferenceResponse([pb_utils.Tensor(name, value) for name, value in outputs])

    def _forward(self, arrays: list[Array]) -> list[tuple[str, Array]]:
        values = self.runner.run(arrays)
        batch = arrays[0].shape[0] if self.batched and arrays else None
        return [
            (spec["name"], _to_numpy(value, spec, batch))
            for spec, value in zip(self.runner.outputs, values, strict=True)
        ]


def _to_numpy(value: Any, spec: dict[str, Any], batch: int | None) -> Array:
    dtype = pb_utils.triton_string_to_numpy(spec["data_type"])
    if isinstance(value, np.ndarray):
        return value.astype(dtype, copy=False)
    if hasattr(value, "detach"):  # a torch.Tensor (torch is not imported for an ONNX model)
        return np.asarray(value.detach().cpu().numpy()).astype(dtype, copy=False)
    if isinstance(value, list | tuple):  # List[str] back as BYTES, shaped as the config says
        strings = np.array([str(v).encode("utf-8") for v in value], dtype=np.object_)
        return _shaped(strings, spec, batch)
    raise TypeError(f"output {spec['name']}: cannot convert {type(value).__name__} to a tensor")


def _shaped(strings: Array, spec: dict[str, Any], batch: int | None) -> Array:
    """The flat list of strings a model returned as ``[batch, *dims]``; one -1 in dims takes the rest."""
    dims = [int(d) for d in spec.get("dims", [])]
    shape = [batch, *dims] if batch is not None else dims
    try:
        return strings.reshape(shape)
    except ValueError:
        raise ValueError(
            f"output {spec['name']}: the model returned {len(strings)} strings, which do not fill "
            f"dims {dims}{f' for a batch of {batch}' if batch is not None else ''}"
        ) from None
