"""Triton Python-backend model that serves a TorchScript ``model.pt`` the way the PyTorch backend does.

``kxform triton`` copies this file as ``<model>/<version>/model.py`` of a derived repository; it runs
inside Triton's Python stub, never inside kxform. It follows the PyTorch backend's contract:
inputs are passed to ``forward`` in ordinal order (``INPUT__0``, ``INPUT__1``, ...; else by
``forward``'s argument names; else in config order), the i-th returned value is ``OUTPUT__i``,
``BYTES`` inputs arrive as one ``List[str]`` (all elements, row-major: a batch of ``[N, 1]`` strings
is a list of N) and a returned ``List[str]`` goes back as ``BYTES`` shaped ``[N, *dims]`` (or ``dims``
for an unbatched model). The parameters ``INFERENCE_MODE``, ``DISABLE_OPTIMIZED_EXECUTION``,
``INTRA_OP_THREAD_COUNT`` (alias ``NUM_THREADS``) and ``INTER_OP_THREAD_COUNT`` mean what they mean there.
Requests that Triton's dynamic batcher hands over together run as one batch, strings included: the
PyTorch backend, too, passes the strings of every request of a batch as one list, in request order.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import triton_python_backend_utils as pb_utils

# torch 2.14 deprecates TorchScript in favour of torch.export, but TorchScript is what users upload to
# Triton's PyTorch backend; the warning would repeat in every stub's log and says nothing actionable.
Array = npt.NDArray[Any]

warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)

_ORDINAL = re.compile(r"__(\d+)$")
_TRUE = {"true", "1", "yes", "on"}


def _ordered(entries: list[dict[str, Any]], argument_names: list[str]) -> list[dict[str, Any]]:
    """Order config inputs/outputs as TorchScript positions, following the PyTorch backend's rules."""
    ordinals = [_ORDINAL.search(entry["name"]) for entry in entries]
    if all(ordinals):
        positions = [int(m[1]) for m in ordinals if m]
        return [entry for _, entry in sorted(zip(positions, entries, strict=True), key=lambda p: p[0])]
    if argument_names and {e["name"] for e in entries} <= set(argument_names):
        return sorted(entries, key=lambda entry: argument_names.index(entry["name"]))
    return entries


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def _configure_threads(parameters: dict[str, str]) -> None:
    intra = parameters.get("INTRA_OP_THREAD_COUNT") or parameters.get("NUM_THREADS")
    if intra and int(intra) > 0:
        torch.set_num_threads(int(intra))
    inter = parameters.get("INTER_OP_THREAD_COUNT")
    if inter and int(inter) > 0:
        # Allowed once per process, before any inter-op work; a second model in the stub keeps the first.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(int(inter))


class InputError(ValueError):
    """A request's input cannot be handed to the model (e.g. a BYTES element that is not UTF-8)."""


class TritonPythonModel:
    """One instance per ``instance_group`` member; each loads its own copy of the TorchScript module."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = _parameters(config)
        _configure_threads(parameters)
        self.inference_mode = parameters.get("INFERENCE_MODE", "true").lower() in _TRUE
        self.optimized = parameters.get("DISABLE_OPTIMIZED_EXECUTION", "false").lower() not in _TRUE
        filename = parameters.get("KXFORM_TORCHSCRIPT_FILE", "model.pt")
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"TorchScript file {path} does not exist")
        self.module = torch.jit.load(path, map_location="cpu")  # type: ignore[no-untyped-call]
        self.module.eval()
        arguments = [a.name for a in self.module.forward.schema.arguments][1:]  # [0] is self
        self.inputs = _ordered(config["input"], arguments)
        self.outputs = _ordered(config["output"], [])
        self.batched = config.get("max_batch_size", 0) > 0

    def execute(self, requests: list[Any]) -> list[Any]:
        batch = [self._read_inputs(request) for request in requests]
        if len(batch) > 1 and self.batched and self._stackable(batch):
            try:
                return self._run_stacked(batch)
            except Exception:
                pass
        return [self._run_one(arrays) for arrays in batch]

    def _read_inputs(self, request: Any) -> list[Array]:
        return [pb_utils.get_input_tensor_by_name(request, spec["name"]).as_numpy() for spec in self.inputs]

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
        except InputError as exc:  # the request's fault: Triton answers 400 / INVALID_ARGUMENT
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        except Exception as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
        return pb_utils.InferenceResponse([pb_utils.Tensor(name, value) for name, value in outputs])

    def _forward(self, arrays: list[Array]) -> list[tuple[str, Array]]:
        arguments = [_to_torch(array, spec) for array, spec in zip(arrays, self.inputs, strict=True)]
        grad = torch.inference_mode() if self.inference_mode else torch.no_grad()
        with grad, torch.jit.optimized_execution(self.optimized):  # type: ignore[attr-defined]
            result = self.module(*arguments)
        values = list(result) if isinstance(result, tuple) else [result]
        if len(values) < len(self.outputs):
            raise ValueError(f"model returned {len(values)} values, config declares {len(self.outputs)} outputs")
        batch = arrays[0].shape[0] if self.batched and arrays else None
        return [
            (spec["name"], _to_numpy(value, spec, batch)) for spec, value in zip(self.outputs, values, strict=False)
        ]


def _to_torch(array: Array, spec: dict[str, Any]) -> Any:
    if array.dtype != np.object_:
        return torch.from_numpy(np.ascontiguousarray(array))
    strings = []  # BYTES: TorchScript string models take List[str], and TorchScript strings are UTF-8
    for index, value in enumerate(array.reshape(-1)):
        try:
            strings.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError as exc:
            raise InputError(f"input {spec['name']}: element {index} is not UTF-8 text ({exc.reason})") from exc
    return strings


def _to_numpy(value: Any, spec: dict[str, Any], batch: int | None) -> Array:
    if isinstance(value, torch.Tensor):
        dtype = pb_utils.triton_string_to_numpy(spec["data_type"])
        return value.detach().cpu().numpy().astype(dtype, copy=False)
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
