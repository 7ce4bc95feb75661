"""Derive a Triton model repository this machine can serve from one users upload to KServe.

Triton here has the Python backend only. A PyTorch model — TorchScript (``platform: "pytorch_libtorch"``
or ``backend: "pytorch"``, ``model.pt``), AOT Inductor (``platform: "torch_aoti"``, ``model.pt2``) or
exported to ONNX (``platform: "onnxruntime_onnx"`` or ``backend: "onnxruntime"``, ``model.onnx``) — is
rewritten into a Python-backend model whose ``model.py`` is ``pytorch_adapter.py``: it loads the user's
unchanged file (``default_model_filename`` honoured) with the loader of its format. The rewritten
config keeps names, dtypes, dims, ``max_batch_size``, batching, instance counts, label files and
parameters; every other model is linked through untouched.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import Message

import kxform
from kxform.errors import TritonServerError
from kxform.model_config import model_config_pb2
from kxform.triton.formats import KXFORM_PATH_PARAMETER, MODEL_FILE_PARAMETER, MODEL_FORMAT_PARAMETER

__all__ = ["DerivedModel", "derive_repository", "read_model_config"]

ADAPTER_SOURCE = Path(__file__).with_name("pytorch_adapter.py")
# platform -> (format of kxform.triton.formats, Triton's default file name)
_PLATFORMS = {
    "pytorch_libtorch": ("torchscript", "model.pt"),
    "torch_aoti": ("aoti", "model.pt2"),
    "onnxruntime_onnx": ("onnx", "model.onnx"),
}
_BACKENDS = {"pytorch": "pytorch_libtorch", "onnxruntime": "onnxruntime_onnx"}  # backend alone -> its platform


@dataclass(frozen=True, slots=True)
class DerivedModel:
    """One model of the source repository and how it is served."""

    name: str
    source: Path
    adapted: bool  # True when served by the Python-backend adapter
    model_format: str = ""  # torchscript, aoti or onnx when adapted

    def describe(self) -> str:
        """How Triton serves it, for ``kxform triton``'s start-up lines."""
        return _DESCRIPTIONS[self.model_format] if self.adapted else "as configured"


_DESCRIPTIONS = {
    "torchscript": "TorchScript via torch.jit.load",
    "aoti": "AOT Inductor .pt2 via torch._inductor.aoti_load_package",
    "onnx": "ONNX via onnxruntime on the CPU",
}


def _model_config_pb2() -> Any:
    return model_config_pb2()


def read_model_config(path: Path) -> Message:
    """Parse a ``config.pbtxt`` with protobuf's text-format parser into Triton's ``ModelConfig``."""
    config = _model_config_pb2().ModelConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    except text_format.ParseError as exc:
        hint = " (the field is default_model_filename)" if "default_model_name" in str(exc) else ""
        raise TritonServerError(f"{path} is not a valid Triton model config: {exc}{hint}") from exc
    return config


def _platform(config: Message) -> str | None:
    """The adapted platform of ``config``, or None for a model passed through."""
    if config.platform in _PLATFORMS:
        return str(config.platform)
    if not config.platform and config.backend in _BACKENDS:
        return _BACKENDS[config.backend]
    return None


def _adapt_config(config: Message, name: str, platform: str) -> Message:
    """Return the Python-backend config serving the same model."""
    pb2 = _model_config_pb2()
    adapted = pb2.ModelConfig()
    adapted.CopyFrom(config)
    adapted.name = name
    adapted.platform = ""
    adapted.backend = "python"
    model_format, default_file = _PLATFORMS[platform]
    filename = config.default_model_filename or default_file
    adapted.default_model_filename = ""  # the Python backend would read it as the name of model.py
    adapted.parameters[MODEL_FILE_PARAMETER].string_value = filename
    adapted.parameters[MODEL_FORMAT_PARAMETER].string_value = model_format
    adapted.parameters[KXFORM_PATH_PARAMETER].string_value = str(Path(kxform.__file__).resolve().parent.parent)
    for group in adapted.instance_group:
        # No GPU here: the adapter runs on the CPU whatever kind the user asked for.
        group.kind = pb2.ModelInstanceGroup.Kind.KIND_CPU
        del group.gpus[:]
    return adapted


def _version_dirs(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _adapt_model(source: Path, target: Path, config: Message, platform: str) -> None:
    adapted = _adapt_config(config, source.name, platform)
    filename = adapted.parameters[MODEL_FILE_PARAMETER].string_value
    target.mkdir()
    (target / "config.pbtxt").write_text(text_format.MessageToString(adapted), encoding="utf-8")
    for entry in source.iterdir():
        if entry.is_dir() and entry.name.isdigit():
            continue
        if entry.name != "config.pbtxt":
            (target / entry.name).symlink_to(entry.resolve())  # label files and anything else the user ships
    for version in _version_dirs(source):
        (target / version.name).mkdir()
        shutil.copyfile(ADAPTER_SOURCE, target / version.name / "model.py")
        weights = version / filename
        if weights.exists():
            (target / version.name / filename).symlink_to(weights.resolve())
        # A missing file is left for Triton to report: it names the model and the path.


def derive_repository(source: Path, target: Path) -> list[DerivedModel]:
    """Fill the empty directory ``target`` with a repository serving every model of ``source``."""
    if not source.is_dir():
        raise TritonServerError(f"model repository {source} does not exist or is not a directory")
    models = []
    for model_dir in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        config_path = model_dir / "config.pbtxt"
        config = read_model_config(config_path) if config_path.exists() else None
        platform = _platform(config) if config is not None else None
        if config is not None and platform is not None:
            _adapt_model(model_dir, target / model_dir.name, config, platform)
            models.append(DerivedModel(model_dir.name, model_dir, adapted=True, model_format=_PLATFORMS[platform][0]))
        else:
            (target / model_dir.name).symlink_to(model_dir.resolve())
            models.append(DerivedModel(model_dir.name, model_dir, adapted=False))
    if not models:
        raise TritonServerError(f"model repository {source} holds no model directories")
    return models
