"""One loader per model format the Python-backend adapter serves: TorchScript, AOT Inductor ``.pt2``, ONNX.

Runs inside Triton's Python stub (imported by ``pytorch_adapter.py``), never in ``kxform serve``. Each
loader reads the user's file and the model config and returns a ``Runner``: the config's inputs in the
order it takes them, its outputs in the order it returns them, whether requests can be stacked into
one batch, and ``run``. Everything that makes a model unloadable is found here and raised as
``LoadError`` whose message is what ``kxform triton`` prints after ``model 'NAME' failed to load:``.
The PyTorch backend's parameters are honoured on the CPU or rejected by name (``torch_parameters``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kxform.call import flatten
from kxform.codecs.dtypes import V2_DATATYPES, numpy_dtype

__all__ = [
    "KXFORM_PATH_PARAMETER",
    "MODEL_FILE_PARAMETER",
    "MODEL_FORMAT_PARAMETER",
    "InputError",
    "LoadError",
    "Runner",
    "TorchOptions",
    "describe_pt2",
    "load_runner",
    "ordered",
    "torch_parameters",
]

Array = npt.NDArray[Any]
Spec = dict[str, Any]  # one config input or output, as the Python backend hands it over (JSON)

# What kxform.triton.repository tells the adapter in the derived config: the user's file and its format.
MODEL_FILE_PARAMETER = "KXFORM_MODEL_FILE"
MODEL_FORMAT_PARAMETER = "KXFORM_MODEL_FORMAT"
# Where kxform triton found kxform; the adapter reads it before it can import this module (so it spells it too).
KXFORM_PATH_PARAMETER = "KXFORM_PYTHON_PATH"
_ORDINAL = re.compile(r"__(\d+)$")
_INPUT_ORDINAL = re.compile(r"^INPUT__(\d+)$")
_OUTPUT_ORDINAL = re.compile(r"^OUTPUT__(\d+)$")


class LoadError(Exception):
    """The model cannot be served as configured; the message names what and how to fix it."""


@dataclass(frozen=True, slots=True)
class Runner:
    """A loaded model: ``run(arrays in inputs order) -> values in outputs order``."""

    inputs: list[Spec]
    outputs: list[Spec]
    batches: bool  # requests Triton hands over together may be stacked into one call
    run: Callable[[list[Array]], list[Any]]


# --- parameters ----------------------------------------------------------------------------------

_TRUE, _FALSE = {"true", "1", "on", "yes"}, {"false", "0", "off", "no"}
_TORCHSCRIPT_ONLY = (
    "DISABLE_OPTIMIZED_EXECUTION",
    "ENABLE_JIT_EXECUTOR",
    "ENABLE_JIT_PROFILING",
    "NUM_THREADS",
    "NUM_INTEROP_THREADS",
    "TORCH_COMPILE_OPTIONAL_PARAMETERS",
)


@dataclass(frozen=True, slots=True)
class TorchOptions:
    """The PyTorch backend's parameters, as they apply on this CPU-only Triton."""

    inference_mode: bool = True
    optimized_execution: bool = True
    jit_executor: bool | None = None  # None: torch's default
    jit_profiling: bool | None = None
    intra_op_threads: int = 0  # 0: torch's default
    inter_op_threads: int = 0


def _flag(parameters: Mapping[str, str], key: str) -> bool | None:
    if key not in parameters:
        return None
    value = parameters[key].strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise LoadError(f'parameter {key} is {parameters[key]!r}; set it to "true" or "false"')


def _count(parameters: Mapping[str, str], *keys: str) -> int:
    for key in keys:
        if key in parameters:
            try:
                return max(int(parameters[key]), 0)
            except ValueError:
                raise LoadError(f"parameter {key} is {parameters[key]!r}; set it to a number of threads") from None
    return 0


def _check_compile_parameters(raw: str) -> None:
    # Triton's PyTorch backend gives these to torch.compile for PyTorch 2 Python models (model.py). A
    # TorchScript module is compiled by the JIT, not by torch.compile: only "do not compile" is true here.
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise LoadError(f"parameter TORCH_COMPILE_OPTIONAL_PARAMETERS is not a JSON object ({exc})") from None
    if not isinstance(options, dict):
        raise LoadError('parameter TORCH_COMPILE_OPTIONAL_PARAMETERS must be a JSON object, e.g. {"disable": true}')
    if options.get("disable") is not True:
        raise LoadError(
            f"parameter TORCH_COMPILE_OPTIONAL_PARAMETERS {raw} asks for torch.compile, which does not apply to a "
            'TorchScript model (it is compiled by the TorchScript JIT); remove it or set {"disable": true}, or '
            'export the model with torch.export and serve it as a .pt2 (platform "torch_aoti")'
        )


def torch_parameters(parameters: Mapping[str, str], model_format: str) -> TorchOptions:
    """Read the PyTorch backend's parameters; raise ``LoadError`` naming one this Triton cannot honour."""
    if _flag(parameters, "ENABLE_WEIGHT_SHARING"):
        raise LoadError(
            "parameter ENABLE_WEIGHT_SHARING is true, but kxform triton runs each model instance in its own "
            "Python-backend process, where instances cannot share weights; remove it or set it to false here "
            "(answers are the same without it)"
        )
    _flag(parameters, "ENABLE_CACHE_CLEANING")  # empties the CUDA cache: nothing to do on the CPU, as in Triton
    _flag(parameters, "DISABLE_CUDNN")  # cuDNN is GPU-only: nothing to turn off on the CPU
    if model_format != "torchscript":
        for key in _TORCHSCRIPT_ONLY:
            if key in parameters:
                raise LoadError(
                    f'parameter {key} applies to TorchScript models only (platform "pytorch_libtorch"); '
                    "remove it from this model's config (INTRA_OP_THREAD_COUNT and INTER_OP_THREAD_COUNT apply)"
                )
    elif "TORCH_COMPILE_OPTIONAL_PARAMETERS" in parameters:
        _check_compile_parameters(parameters["TORCH_COMPILE_OPTIONAL_PARAMETERS"])
    inference = _flag(parameters, "INFERENCE_MODE")
    disable_optimized = _flag(parameters, "DISABLE_OPTIMIZED_EXECUTION")
    return TorchOptions(
        inference_mode=True if inference is None else inference,
        optimized_execution=not disable_optimized,
        jit_executor=_flag(parameters, "ENABLE_JIT_EXECUTOR"),
        jit_profiling=_flag(parameters, "ENABLE_JIT_PROFILING"),
        intra_op_threads=_count(parameters, "INTRA_OP_THREAD_COUNT", "NUM_THREADS"),
        inter_op_threads=_count(parameters, "INTER_OP_THREAD_COUNT", "NUM_INTEROP_THREADS"),
    )


def _apply_torch_options(options: TorchOptions) -> None:
    import torch

    if options.intra_op_threads:
        torch.set_num_threads(options.intra_op_threads)
    if options.inter_op_threads:
        # Allowed once per process, before any inter-op work; each instance is a process of its own here.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(options.inter_op_threads)
    # The PyTorch backend sets the same two switches of the TorchScript JIT (getExecutorMode, getProfilingMode).
    if options.jit_executor is not None:
        torch._C._jit_set_profiling_executor(options.jit_executor)
    if options.jit_profiling is not None:
        torch._C._jit_set_profiling_mode(options.jit_profiling)


# --- TorchScript -----------------------------------------------------------------------------------


def ordered(entries: list[Spec], argument_names: Sequence[str]) -> list[Spec]:
    """Order config inputs/outputs as TorchScript positions, following the PyTorch backend's rules:
    by ordinal suffix (``INPUT__0``), else by ``forward``'s argument names, else in config order."""
    ordinals = [_ORDINAL.search(entry["name"]) for entry in entries]
    if all(ordinals):
        positions = [int(m[1]) for m in ordinals if m]
        return [entry for _, entry in sorted(zip(positions, entries, strict=True), key=lambda p: p[0])]
    if argument_names and {e["name"] for e in entries} <= set(argument_names):
        return sorted(entries, key=lambda entry: list(argument_names).index(entry["name"]))
    return entries


def _to_torch(array: Array, spec: Spec) -> Any:
    import torch

    if array.dtype != np.object_:
        return torch.from_numpy(np.ascontiguousarray(array))
    strings = []  # BYTES: TorchScript string models take List[str], and TorchScript strings are UTF-8
    for index, value in enumerate(array.reshape(-1)):
        try:
            strings.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError as exc:
            raise InputError(f"input {spec['name']}: element {index} is not UTF-8 text ({exc.reason})") from exc
    return strings


class InputError(ValueError):
    """A request's input cannot be handed to the model (e.g. a BYTES element that is not UTF-8)."""


def _grad_mode(options: TorchOptions) -> Any:
    import torch

    return torch.inference_mode() if options.inference_mode else torch.no_grad()


def load_torchscript(path: str, config: Mapping[str, Any], parameters: Mapping[str, str]) -> Runner:
    import torch

    options = torch_parameters(parameters, "torchscript")
    _apply_torch_options(options)
    try:
        module = torch.jit.load(path, map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise LoadError(f"{path} is not a loadable TorchScript archive ({type(exc).__name__}: {exc})") from None
    module.eval()
    arguments = [a.name for a in module.forward.schema.arguments][1:]  # [0] is self
    inputs, outputs = ordered(config.get("input", []), arguments), ordered(config.get("output", []), [])

    def run(arrays: list[Array]) -> list[Any]:
        tensors = [_to_torch(array, spec) for array, spec in zip(arrays, inputs, strict=True)]
        with _grad_mode(options), torch.jit.optimized_execution(options.optimized_execution):  # type: ignore[attr-defined]
            result = module(*tensors)
        values = list(result) if isinstance(result, tuple) else [result]
        if len(values) < len(outputs):
            raise ValueError(f"model returned {len(values)} values, config declares {len(outputs)} outputs")
        return values[: len(outputs)]

    return Runner(inputs, outputs, batches=config.get("max_batch_size", 0) > 0, run=run)


# --- AOT Inductor .pt2 -----------------------------------------------------------------------------


def _leaf_names(spec: Any, roots: Sequence[str] | None) -> list[str]:
    """Forward-based names of a pytree spec's leaves, in order (``roots``: the spec is (args, kwargs))."""
    from torch.utils import _pytree as pytree

    tree = pytree.tree_unflatten(list(range(spec.num_leaves)), spec)
    try:
        if roots is None:
            names = [name for name, _ in flatten(tree, "RESULT")]
        else:
            args, kwargs = tree
            names = [name for name, _ in flatten(tuple(args), "ARGS") + flatten(kwargs, "KWARGS")]
    except Exception as exc:  # a key Triton cannot name: kxform.call says which
        raise LoadError(f"the model's call spec cannot be named: {exc}") from None
    if len(names) != spec.num_leaves:
        raise LoadError(
            "the model's call spec holds containers other than dict, tuple and list; Triton names only those, "
            "with tensors as leaves"
        )
    return names


def _resolve(entries: list[Spec], names: list[str], kind: str, ordinal: re.Pattern[str]) -> list[int]:
    """The leaf index of each config entry, by forward-based name or by ordinal."""
    indices = []
    for entry in entries:
        name = entry["name"]
        match = ordinal.match(name)
        index = int(match[1]) if match else names.index(name) if name in names else None
        if index is None or index >= len(names):
            raise LoadError(f"{kind} '{name}' is not in the model's call spec (it has {', '.join(names)})")
        if index in indices:
            raise LoadError(f"{kind} '{name}' names {names[index]}, which another {kind} of the config names too")
        indices.append(index)
    return indices


def _call_spec(package: Any) -> tuple[Any, Any]:
    """The (inputs, outputs) pytree specs an AOT Inductor package records for its ``forward``."""
    from torch.utils import _pytree as pytree

    in_text, out_text = package.loader.get_call_spec()
    return pytree.treespec_loads(in_text), pytree.treespec_loads(out_text)


def describe_pt2(path: str) -> str:
    """The tensor names Triton gives a ``.pt2``'s inputs and outputs, both ways, for writing its config."""
    import torch._inductor

    in_spec, out_spec = _call_spec(torch._inductor.aoti_load_package(path))
    lines = [f"input  INPUT__{i}: {name}" for i, name in enumerate(_leaf_names(in_spec, ("ARGS", "KWARGS")))]
    lines += [f"output OUTPUT__{i}: {name}" for i, name in enumerate(_leaf_names(out_spec, None))]
    return "\n".join(lines)


def load_aoti(path: str, config: Mapping[str, Any], parameters: Mapping[str, str]) -> Runner:
    import torch
    import torch._inductor
    from torch.utils import _pytree as pytree

    if config.get("max_batch_size", 0) > 1:
        raise LoadError(
            f"max_batch_size is {config['max_batch_size']}; Triton's PyTorch backend does not batch .pt2 models "
            "yet (its README, AOT Inductor Support): set max_batch_size to 0 or 1 (kxform serve then sends one "
            "instance per call)"
        )
    options = torch_parameters(parameters, "aoti")
    _apply_torch_options(options)
    # The package's own checks of each input's dtype and sizes (off unless asked; read at its first run):
    # without them a tensor of another dtype or shape than it was compiled for is read as if it were one.
    os.environ.setdefault("AOTI_RUNTIME_CHECK_INPUTS", "1")
    try:
        package = torch._inductor.aoti_load_package(path)
    except Exception as exc:
        raise LoadError(f"{path} is not a loadable AOT Inductor package ({type(exc).__name__}: {exc})") from None
    in_spec, out_spec = _call_spec(package)
    in_names, out_names = _leaf_names(in_spec, ("ARGS", "KWARGS")), _leaf_names(out_spec, None)
    inputs, outputs = list(config.get("input", [])), list(config.get("output", []))
    if not outputs:
        names = ", ".join(f"OUTPUT__{i} or {name}" for i, name in enumerate(out_names))
        raise LoadError(f"the config declares no output; the model's call spec has {names}")
    in_leaves = _resolve(inputs, in_names, "input", _INPUT_ORDINAL)
    out_leaves = _resolve(outputs, out_names, "output", _OUTPUT_ORDINAL)
    undeclared = [f"{name} (INPUT__{i})" for i, name in enumerate(in_names) if i not in in_leaves]
    if undeclared:
        raise LoadError(f"the model's call spec takes input {', '.join(undeclared)}, which the config does not declare")

    def run(arrays: list[Array]) -> list[Any]:
        leaves: list[Any] = [None] * len(in_names)
        for index, array, spec in zip(in_leaves, arrays, inputs, strict=True):
            leaves[index] = _to_torch(array, spec)
        args, kwargs = pytree.tree_unflatten(leaves, in_spec)
        with _grad_mode(options):
            result = package(*args, **kwargs)
        values = pytree.tree_leaves(result)
        return [values[index] for index in out_leaves]

    _probe(run, inputs, in_leaves, config.get("max_batch_size", 0) > 0)
    return Runner(inputs, outputs, batches=False, run=run)


_UNMATCHED = re.compile(r"input_handles\[(\d+)\]: (unmatched [^\n]*)")


def _probe(run: Callable[[list[Array]], list[Any]], inputs: list[Spec], leaves: list[int], batched: bool) -> None:
    """Run the package once on zeros shaped and typed as the config says: a config that does not match what
    the package was compiled for fails the load, naming the input, instead of every request."""
    arrays = []
    for entry in inputs:
        datatype = entry["data_type"].removeprefix("TYPE_")  # TYPE_STRING is no V2 datatype: refused with the rest
        if datatype not in V2_DATATYPES or datatype == "BF16":  # numpy has no bfloat16 without ml_dtypes
            raise LoadError(f"input '{entry['name']}' is {entry['data_type']}; a .pt2 takes numeric tensors only")
        dims = [int(d) if int(d) > 0 else 1 for d in entry.get("dims", [])]
        arrays.append(np.zeros([1, *dims] if batched else dims, numpy_dtype(datatype)))
    try:
        run(arrays)
    except Exception as exc:
        match = _UNMATCHED.search(str(exc))
        if match is None:
            raise LoadError(
                f"the model fails on zeros shaped as the config says ({type(exc).__name__}: {exc})"
            ) from None
        entry = inputs[leaves.index(int(match[1]))]
        raise LoadError(
            f"input '{entry['name']}' ({entry['data_type']}, dims {list(entry.get('dims', []))}"
            f"{' after the batch dimension' if batched else ''}) is not what the model was compiled for: "
            f"{match[2].strip()}; use the dtype and shape of the example inputs it was exported with"
        ) from None


# --- ONNX ------------------------------------------------------------------------------------------

# Triton's data types and the element types onnxruntime reports for them.
_ONNX_TYPES = {
    "TYPE_BOOL": "tensor(bool)",
    "TYPE_UINT8": "tensor(uint8)",
    "TYPE_UINT16": "tensor(uint16)",
    "TYPE_UINT32": "tensor(uint32)",
    "TYPE_UINT64": "tensor(uint64)",
    "TYPE_INT8": "tensor(int8)",
    "TYPE_INT16": "tensor(int16)",
    "TYPE_INT32": "tensor(int32)",
    "TYPE_INT64": "tensor(int64)",
    "TYPE_FP16": "tensor(float16)",
    "TYPE_FP32": "tensor(float)",
    "TYPE_FP64": "tensor(double)",
    "TYPE_STRING": "tensor(string)",
}


def _check_onnx_tensor(entry: Spec, declared: Any, kind: str, batched: bool) -> None:
    name, data_type = entry["name"], entry["data_type"]
    if _ONNX_TYPES.get(data_type) != declared.type:
        raise LoadError(f"{kind} '{name}' is {data_type} in the config, but the model's is {declared.type}")
    model_dims = [d if isinstance(d, int) else -1 for d in declared.shape]  # a named or unknown dim: any size
    dims = [int(d) for d in entry.get("dims", [])]
    expected = [-1, *dims] if batched else dims
    fits = len(model_dims) == len(expected) and all(
        m in (-1, e) or e == -1 for m, e in zip(model_dims, expected, strict=True)
    )
    if not fits:
        batch = " (max_batch_size > 0 adds the batch dimension first)" if batched else ""
        raise LoadError(
            f"{kind} '{name}': the model's shape is {model_dims}, the config's is {expected}{batch}; "
            "make dims match the model"
        )


def _onnx_threads(parameters: Mapping[str, str], key: str) -> int:
    return _count(parameters, key)


def load_onnx(path: str, config: Mapping[str, Any], parameters: Mapping[str, str]) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # The keys Triton's ONNX Runtime backend reads for the same two thread pools.
    options.intra_op_num_threads = _onnx_threads(parameters, "intra_op_thread_count")
    options.inter_op_num_threads = _onnx_threads(parameters, "inter_op_thread_count")
    try:
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise LoadError(f"{path} is not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
    batched = config.get("max_batch_size", 0) > 0
    inputs, outputs = list(config.get("input", [])), list(config.get("output", []))
    if not outputs:
        names = ", ".join(tensor.name for tensor in session.get_outputs())
        raise LoadError(f"the config declares no output; the model has {names}")
    for entries, declared, kind in (
        (inputs, session.get_inputs(), "input"),
        (outputs, session.get_outputs(), "output"),
    ):
        by_name = {tensor.name: tensor for tensor in declared}
        for entry in entries:
            if entry["name"] not in by_name:
                raise LoadError(f"{kind} '{entry['name']}' is not in the model (it has {', '.join(by_name)})")
            _check_onnx_tensor(entry, by_name[entry["name"]], kind, batched)
    missing = [t.name for t in session.get_inputs() if t.name not in {e["name"] for e in inputs}]
    if missing:
        raise LoadError(f"the model takes input {', '.join(missing)}, which the config does not declare")
    output_names = [entry["name"] for entry in outputs]

    def run(arrays: list[Array]) -> list[Any]:
        feed = {spec["name"]: array for spec, array in zip(inputs, arrays, strict=True)}
        return list(session.run(output_names, feed))

    return Runner(inputs, outputs, batches=batched, run=run)


_LOADERS: dict[str, Callable[[str, Mapping[str, Any], Mapping[str, str]], Runner]] = {
    "torchscript": load_torchscript,
    "aoti": load_aoti,
    "onnx": load_onnx,
}


def load_runner(model_format: str, path: str, config: Mapping[str, Any], parameters: Mapping[str, str]) -> Runner:
    """Load ``path`` (a file of ``model_format``) as the config describes it."""
    if model_format not in _LOADERS:
        raise LoadError(f"model format {model_format!r} is not one of {', '.join(_LOADERS)}")
    return _LOADERS[model_format](path, config, parameters)
