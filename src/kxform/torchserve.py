"""TorchServe handlers as kxform plugins: the handler's own preprocess and postprocess here, its model on Triton.

    kxform preprocess hook   instances -> TorchServe's request rows ([{"data": ...}] or [{"body": ...}])
                             -> handler.preprocess(rows) -> tensor(s) -> the predictor model's input(s)
    kxform's own path        assemble, batch with concurrent requests, shared memory, Triton, errors, traces
    kxform postprocess hook  Triton's output(s) -> handler.inference(tensor), whose ``self.model`` answers
                             with them -> handler.postprocess(...) -> one result per row: the predictions

The handler runs unchanged: TorchServe's ``BaseHandler.handle`` does preprocess -> inference ->
postprocess; kxform does the same, with the model call between them made by kxform's predictor (async,
batched) instead of in the handler. ``initialize`` runs as TorchServe runs it, with TorchServe's own
``Context`` (manifest, ``model_dir`` with the archive's extra files such as ``index_to_name.json``, request
headers, metrics); its model loaders return a stand-in for the model (``TritonModel``), so no model
file is needed. A handler that uses the model object itself (its layers, its device, or calls it with
anything but what its preprocess returned) gets a plugin error that says so.

Register a handler with a one-line subclass (an entry point of ``kxform.transformers``)::

    class Resnet(kxform.torchserve.Handler):
        handler = CustomImageHandler
        predictor_model = "resnet50"
        model_dir = "resnet"          # holds index_to_name.json (relative to this module's file)

or serve a ``.mar`` as it is: ``kxform serve --torchserve_mar resnet.mar[=TRITON_MODEL]`` (``load_archive``).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from kxform import limits
from kxform.codecs.image import b64decode, image_bytes, looks_like_image, open_image
from kxform.errors import DecodeError, KxformError, LimitError, PluginBugError, PluginError, RequestError
from kxform.offload import INLINE_MAX_PIXELS, require_worker
from kxform.plugins import PluginInfo
from kxform.spec import ModelSpec, TensorSpec
from kxform.torchserve_archive import ArchiveReference, MarArchive
from kxform.transformer import Context, Transformer

# TorchServe's base handler logs, at import, which optional accelerators it lacks (OpenVINO, TensorRT, ONNX):
# none of them matters here, where the model runs on Triton; the lines would only alarm.
_IMPORT_LOGGER = logging.getLogger("ts.torch_handler.base_handler")
_IMPORT_LEVEL = _IMPORT_LOGGER.level
_IMPORT_LOGGER.setLevel(logging.ERROR)
try:
    import torch
    import ts
    from ts.context import Context as TorchServeContext
    from ts.context import RequestProcessor
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
    from ts.torch_handler.base_handler import BaseHandler
    from ts.torch_handler.vision_handler import VisionHandler
    from ts.utils.util import get_yaml_config, list_classes_from_module
except ImportError as exc:  # torch, torchvision, captum and TorchServe come with the extra
    raise ImportError(
        f"kxform.torchserve needs TorchServe's handler classes ({exc}); pip install 'kxform[torchserve]'"
    ) from exc
finally:
    _IMPORT_LOGGER.setLevel(_IMPORT_LEVEL)

__all__ = ["Handler", "ModelOnTritonError", "TritonModel", "load_archive", "request_rows"]

logger = logging.getLogger(__name__)
_STATE = "kxform.torchserve"  # ctx.state key: what preprocess leaves for postprocess
# What a handler's preprocess raises for bad input: kxform's input faults (as for any plugin: binascii.Error is
# a ValueError), Pillow's errors for what is not an image; OSError and EOFError are also Pillow's for a
# truncated file, but a handler's own I/O raises them too: they count only when a row is found at fault.
_INPUT_FAULTS = (ValueError, TypeError, KeyError, IndexError, Image.DecompressionBombError)
_IMAGE_FAULTS = (UnidentifiedImageError,)
_READ_FAULTS = (OSError, EOFError)
_SEND = 'send {"data": "<base64 of the PNG/JPEG>"} per instance, the image as the body, or V2 BYTES elements'


class ModelOnTritonError(Exception):
    """The handler used its model object itself; the model lives on Triton."""


@dataclass(frozen=True, slots=True)
class _Call:
    """One inference: what preprocess returned (sent to Triton) and what Triton answered."""

    inputs: list[torch.Tensor]
    outputs: Any


class TritonModel:
    """The handler's ``self.model`` under kxform: calling it with what preprocess returned gives Triton's answer.

    By the time the handler's ``inference`` runs, kxform has sent preprocess's tensor to the predictor
    model; ``inference`` (BaseHandler's, or the handler's own) calls ``self.model(tensor)`` and gets the
    outputs back. ``eval()`` and ``to()`` (what ``BaseHandler.initialize`` calls) do nothing; anything else
    is the model object itself, which is not here: ``ModelOnTritonError``.
    """

    def __init__(self, handler_name: str, predictor_model: str) -> None:
        self._handler_name = handler_name
        self._predictor_model = predictor_model
        self._call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("torchserve_call", default=None)

    @contextlib.contextmanager
    def answering(self, inputs: Any, outputs: Any) -> Iterator[None]:
        token = self._call.set(_Call(_tensors(inputs), outputs))
        try:
            yield
        finally:
            self._call.reset(token)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = self._call.get()
        if call is None:
            raise ModelOnTritonError(self._misuse("calls self.model outside inference"))
        given = _tensors([*args, *kwargs.values()])
        if not _same_tensors(given, call.inputs):
            raise ModelOnTritonError(
                self._misuse(
                    f"calls self.model with {_shapes(given)}, not with what its preprocess returned "
                    f"({_shapes(call.inputs)}, already sent to Triton); move that change into preprocess"
                )
            )
        return call.outputs

    def eval(self) -> TritonModel:
        return self

    def to(self, *args: Any, **kwargs: Any) -> TritonModel:
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # protocol probes (copy, pickle, hasattr(...)) find nothing, as on any object
            raise AttributeError(name)
        raise ModelOnTritonError(self._misuse(f"uses self.model.{name}"))

    def _misuse(self, what: str) -> str:
        return (
            f"TorchServe handler {self._handler_name} {what}, but under kxform the model lives on Triton "
            f"(predictor model '{self._predictor_model}') and self.model only forwards preprocess's tensor to "
            "it: keep inference to `self.model(data)` (as BaseHandler.inference does) and do the rest in "
            "preprocess or postprocess"
        )


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of a preprocess result or of a model call's arguments, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for item in value.values() for t in _tensors(item)]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []


def _same_tensors(given: list[torch.Tensor], sent: list[torch.Tensor]) -> bool:
    if len(given) != len(sent):
        return False
    pairs = zip(given, sent, strict=True)
    return all(a is b or (a.shape == b.shape and torch.equal(a.cpu(), b.cpu())) for a, b in pairs)


def _shapes(tensors: list[torch.Tensor]) -> str:
    return ", ".join(f"a tensor of shape {list(t.shape)}" for t in tensors) or "no tensor"


@dataclass(frozen=True, slots=True)
class _Request:
    """What TorchServe's Context tells a handler about the request being served: headers and ids per row."""

    processors: list[RequestProcessor]
    request_ids: dict[int, str]


class _RequestContext(TorchServeContext):  # type: ignore[misc]  # TorchServe ships no type information
    """TorchServe's ``Context``, whose per-request parts are those of the request this thread or task serves.

    TorchServe's worker serves one batch at a time and sets them on its one Context; kxform serves requests
    concurrently (preprocess may run on worker threads), so they live in a context variable.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._request: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
            "torchserve_request", default=None
        )
        super().__init__(*args, **kwargs)

    def _current(self) -> _Request:
        return self._request.get() or _Request([], {})

    # TorchServe's Context reads and writes ``_request_processor`` itself (get_request_header, ...).
    @property
    def _request_processor(self) -> list[RequestProcessor]:
        return self._current().processors

    @_request_processor.setter
    def _request_processor(self, processors: list[RequestProcessor] | None) -> None:
        self._request.set(_Request(processors or [], self._current().request_ids))

    @property
    def request_ids(self) -> dict[int, str]:
        return self._current().request_ids

    @request_ids.setter
    def request_ids(self, ids: dict[int, str] | None) -> None:
        self._request.set(_Request(self._current().processors, ids or {}))

    @contextlib.contextmanager
    def serving(self, request: _Request) -> Iterator[None]:
        token = self._request.set(request)
        try:
            yield
        finally:
            self._request.reset(token)


@dataclass(frozen=True, slots=True)
class _Row:
    """One instance as TorchServe hands it to a handler, and where it came from (for error messages)."""

    data: Any
    field: str


def request_rows(instances: Sequence[Any], protocol: str) -> list[dict[str, Any]]:
    """The rows TorchServe's handler would get for these kxform instances (see ``docs/torchserve.md``)."""
    return [row.data for row in _rows(instances, protocol)]


def _rows(instances: Sequence[Any], protocol: str) -> list[_Row]:
    if protocol == "v2":  # the elements of the V2 BYTES input; base64 text of an image (V2 JSON) decoded
        fields = [f"V2 input 'data' element {i}" for i in range(len(instances))]
        return [
            _Row({"data": image_bytes(bytes(item), field)}, field)
            for item, field in zip(instances, fields, strict=True)
        ]
    return [_v1_row(item, f"instances[{i}]") for i, item in enumerate(instances)]


def _v1_row(instance: Any, field: str) -> _Row:
    if isinstance(instance, bytes | bytearray):  # the image was the whole body: TorchServe's "body"
        return _Row({"body": bytes(instance)}, "the request body")
    if isinstance(instance, Mapping):
        if "b64" in instance and len(instance) == 1:  # KServe V1's binary convention, {"b64": ...}
            return _Row({"data": b64decode(instance["b64"], f"{field}.b64", _SEND)}, f"{field}.b64")
        for key in ("data", "body"):
            value = instance.get(key)
            if isinstance(value, Mapping) and "b64" in value:
                where = f"{field}.{key}.b64"
                return _Row({**instance, key: b64decode(value["b64"], where, _SEND)}, where)
            if key in instance:
                return _Row(dict(instance), f"{field}.{key}")
        return _Row(dict(instance), field)  # TorchServe's KServe envelope passes V1 instances as they are
    return _Row({"data": instance}, field)  # a base64 string or nested lists: what row["data"] holds


def _payload(row: _Row) -> Any:
    data = row.data
    return (data.get("data") or data.get("body")) if isinstance(data, Mapping) else None


def _check_image_header(row: _Row, base64_text: bool) -> None:
    """kxform's image limits (``--max_image_pixels``, aspect ratio) from the header, before the handler decodes;
    a large image met on the event loop moves the request to the worker pool."""
    payload = _payload(row)
    if isinstance(payload, str) and base64_text:
        with contextlib.suppress(DecodeError):  # not base64: the handler meets it, its error mapped to this row
            payload = b64decode(payload, row.field, _SEND)
    if not isinstance(payload, bytes | bytearray) or not looks_like_image(bytes(payload)):
        return
    try:
        with Image.open(io.BytesIO(payload)) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise LimitError(f"{row.field} has too many pixels (--max_image_pixels; {exc}); send a smaller image") from exc
    except (OSError, ValueError, EOFError):
        return  # not readable: the handler meets it, and its error is mapped to this row
    limits.current().check_image(width, height, row.field)
    require_worker(width * height, INLINE_MAX_PIXELS)


def _culprit(rows: list[_Row]) -> KxformError | None:
    """The first row whose image cannot be read, as the error that names it (after the handler failed)."""
    for row in rows:
        payload = _payload(row)
        try:
            if isinstance(payload, str):
                payload = b64decode(payload, row.field, _SEND)
            if isinstance(payload, bytes | bytearray):
                open_image(bytes(payload), row.field)
        except KxformError as error:
            return error
    return None


class Handler(Transformer):
    """A kxform plugin serving a TorchServe handler class; subclass it with ``handler = YourHandler``.

    ``predictor_model`` is the Triton model its inference goes to. ``model_dir`` is what TorchServe's
    ``model_dir`` held (the archive's extra files: ``index_to_name.json``, ...), relative to the subclass's
    module; ``index_to_name`` names the label mapping file alone. ``manifest`` is the archive's
    ``MAR-INF/MANIFEST.json`` (default: one naming the handler). Clients send what TorchServe's KServe
    integration takes: V1 instances ``{"data": "<base64>"}`` (also ``{"b64": ...}``), an image as the body,
    or V2 BYTES elements; the predictions are the handler's postprocess result, one per instance (V2: one
    BYTES output ``predictions``, each element that result as JSON).
    """

    handler: ClassVar[type[Any]]
    model_dir: ClassVar[str | os.PathLike[str] | None] = None
    index_to_name: ClassVar[str | os.PathLike[str] | None] = None
    manifest: ClassVar[Mapping[str, Any] | None] = None

    # A handler's preprocess is torchvision/torch work kxform's codecs cannot see (seed 004's on a 640x480 JPEG:
    # 22-35 ms, against 7 ms for kxform's own ImagePipeline); on a worker thread it leaves the event loop free.
    offload_hooks: ClassVar[bool] = True

    inputs: ClassVar[tuple[TensorSpec, ...]] = (TensorSpec("data", "BYTES", ()),)
    outputs: ClassVar[tuple[TensorSpec, ...]] = (TensorSpec("predictions", "BYTES", ()),)

    def __init__(self) -> None:
        cls = type(self)
        handler_class: type[Any] = getattr(cls, "handler", None)  # type: ignore[assignment]  # checked next
        self._handler_name = _check_handler_class(cls, handler_class)
        self._model_dir = _model_dir(cls)
        manifest = _handler_manifest(cls, self._handler_name)
        self._model = TritonModel(self._handler_name, cls.predictor_model or manifest["model"]["modelName"])
        self._context = _torchserve_context(manifest, self._model_dir)
        self._handler = _initialized_handler(handler_class, self._context, self._model, self._handler_name)
        self._vision = isinstance(self._handler, VisionHandler)

    def setup(self, model: ModelSpec) -> None:
        self._context.system_properties["batch_size"] = model.max_batch_size

    def preprocess(self, instances: list[Any], ctx: Context) -> Any:
        rows = _rows(instances, ctx.protocol)
        for row in rows:
            _check_image_header(row, self._vision)
        request = _request_of(len(rows), ctx)
        with self._context.serving(request):
            try:
                tensor = self._handler.preprocess([row.data for row in rows])
            except Exception as exc:
                raise self._preprocess_error(exc, rows) from exc
        ctx.state[_STATE] = (request, tensor, len(rows))
        return _model_inputs(tensor)

    def postprocess(self, outputs: dict[str, Any], ctx: Context) -> Any:
        request, tensor, count = ctx.state[_STATE]
        answer = _model_outputs(outputs, ctx.model)
        with self._context.serving(request), self._model.answering(tensor, answer):
            try:
                results = self._handler.postprocess(self._handler.inference(tensor))
            except ModelOnTritonError as exc:
                raise PluginBugError(str(exc)) from exc
        if not isinstance(results, list) or len(results) != count:
            got = f"{len(results)} results" if isinstance(results, list) else type(results).__name__
            raise PluginBugError(
                f"TorchServe handler {self._handler_name}.postprocess returned {got} for {count} instances; "
                "TorchServe needs a list with one result per request row too"
            )
        return _v2_predictions(results) if ctx.protocol == "v2" else results

    def _preprocess_error(self, exc: Exception, rows: list[_Row]) -> Exception:
        """What the handler's preprocess raised, as kxform's answer: a 4xx naming the row where one is at fault."""
        if isinstance(exc, KxformError):
            return exc
        if isinstance(exc, ModelOnTritonError):
            return PluginBugError(str(exc))
        if not isinstance(exc, _INPUT_FAULTS + _READ_FAULTS):
            return exc  # a bug of the handler's: kxform's 500 naming the plugin, the traceback in the log
        culprit = _culprit(rows) if self._vision or isinstance(exc, _READ_FAULTS) else None
        if culprit is not None:
            return culprit
        if isinstance(exc, _READ_FAULTS) and not isinstance(exc, _IMAGE_FAULTS):
            return exc  # an OSError no row explains is the handler's own (reading a file of its own, ...)
        shapes = "; ".join(f"{row.field} has keys {sorted(row.data)}" for row in rows if _payload(row) is None)
        return RequestError(
            f"TorchServe handler {self._handler_name}.preprocess rejected the instances "
            f"({type(exc).__name__}: {exc}){'; ' + shapes if shapes else ''}; {_SEND}"
        )


def _check_handler_class(cls: type[Handler], handler_class: Any) -> str:
    """The handler's name, once it is known to be a BaseHandler subclass whose flow kxform can run."""
    # TorchServe would call handle() on any class; kxform runs preprocess/inference/postprocess: BaseHandler's.
    if not (isinstance(handler_class, type) and issubclass(handler_class, BaseHandler)):
        raise PluginError(
            f"{cls.__name__}.handler must be a TorchServe handler class (a subclass of "
            f"ts.torch_handler.base_handler.BaseHandler), got {handler_class!r}"
        )
    name = f"{handler_class.__module__}.{handler_class.__qualname__}"
    if getattr(handler_class, "handle", None) is not BaseHandler.handle:
        raise PluginError(
            f"TorchServe handler {name} overrides handle(), which kxform does not run: kxform runs "
            "BaseHandler.handle's flow itself (preprocess -> inference on Triton -> postprocess); move what "
            "its handle adds into preprocess or postprocess"
        )
    return name


def _model_dir(cls: type[Handler]) -> Path:
    """TorchServe's ``model_dir``: the subclass's, or a private one holding ``index_to_name`` (and its files)."""
    here = Path(sys.modules[cls.__module__].__file__ or ".").parent
    given = here / cls.model_dir if cls.model_dir is not None else None
    if given is not None and not given.is_dir():
        raise PluginError(f"{cls.__name__}.model_dir: {given} is not a directory")
    if cls.index_to_name is None and given is not None:
        return given
    directory = Path(tempfile.mkdtemp(prefix="kxform-torchserve-"))
    _remove_at_exit(directory)
    for entry in given.iterdir() if given is not None else ():
        (directory / entry.name).symlink_to(entry.resolve())
    if cls.index_to_name is not None:
        mapping = here / cls.index_to_name
        if not mapping.is_file():
            raise PluginError(f"{cls.__name__}.index_to_name: {mapping} is not a file")
        target = directory / "index_to_name.json"
        target.unlink(missing_ok=True)
        target.symlink_to(mapping.resolve())
    return directory


def _remove_at_exit(directory: Path) -> None:
    import atexit

    atexit.register(shutil.rmtree, directory, ignore_errors=True)


def _handler_manifest(cls: type[Handler], handler_name: str) -> dict[str, Any]:
    """The manifest the handler sees; its model is given a serialized file so that BaseHandler.initialize
    reaches the loaders kxform replaces (it raises "No model weights could be loaded" without one)."""
    manifest: dict[str, Any] = json.loads(json.dumps(cls.manifest)) if cls.manifest is not None else {}
    model: dict[str, Any] = manifest.setdefault("model", {})
    model.setdefault("modelName", cls.predictor_model or cls.__name__.lower())
    model.setdefault("handler", handler_name)
    serialized = str(model.get("serializedFile", ""))
    if not model.get("modelFile") and not serialized.endswith(".pt"):
        model["serializedFile"] = "model.pt"  # the model is on Triton; the TorchScript loader is replaced
    return manifest


def _torchserve_context(manifest: dict[str, Any], model_dir: Path) -> _RequestContext:
    model = manifest["model"]
    config_file = model.get("configFile")
    config = get_yaml_config(str(model_dir / config_file)) if config_file else {}
    metrics = MetricsCacheYamlImpl(config_file_path=str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    metrics.initialize_cache()
    metrics.model_name = model["modelName"]
    return _RequestContext(
        model["modelName"],
        str(model_dir),
        manifest,
        1,  # TorchServe's batch_size; the predictor's max_batch_size once known (setup)
        None,  # gpu_id: the handler's own tensors stay on the CPU, the model runs on Triton
        ts.__version__,
        True,  # limit_max_image_pixels: keep Pillow's limit; kxform checks --max_image_pixels first
        metrics,
        config or {},
    )


def _initialized_handler(handler_class: type[Any], context: _RequestContext, model: TritonModel, name: str) -> Any:
    handler = handler_class()
    # BaseHandler.initialize loads the model through these; under kxform the model lives on Triton.
    for loader in ("_load_torchscript_model", "_load_pickled_model", "_load_torch_export_aot_compile"):
        setattr(handler, loader, lambda *args, **kwargs: model)
    try:
        handler.initialize(context)
    except ModelOnTritonError as exc:
        raise PluginError(str(exc)) from exc
    except Exception as exc:
        raise PluginError(
            f"TorchServe handler {name}.initialize failed ({type(exc).__name__}: {exc}); kxform skips loading "
            "the model (it lives on Triton): BaseHandler.initialize gets a stand-in from its loaders, but an "
            "initialize that loads the model itself cannot run here; leave model loading to BaseHandler"
        ) from exc
    handler.context = context  # as BaseHandler.handle sets it, once: its per-request parts follow the request
    return handler


def _request_of(count: int, ctx: Context) -> _Request:
    headers = dict(ctx.headers)
    return _Request([RequestProcessor(headers) for _ in range(count)], dict.fromkeys(range(count), ctx.request_id))


def _model_inputs(value: Any) -> Any:
    """preprocess's result for kxform: a tensor -> the single input; a list/tuple -> by ordinal; a dict -> by name."""
    if isinstance(value, Mapping):
        return {name: _array(tensor) for name, tensor in value.items()}
    if isinstance(value, list | tuple) and value and all(isinstance(item, torch.Tensor) for item in value):
        return {index: _array(tensor) for index, tensor in enumerate(value)}
    return _array(value)


def _array(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _model_outputs(outputs: dict[str, Any], spec: ModelSpec) -> Any:
    """Triton's outputs as the TorchScript model returns them: one tensor, or a tuple in the model's order."""
    tensors = tuple(torch.from_numpy(_writable(outputs[output.name])) for output in spec.outputs)
    return tensors[0] if len(tensors) == 1 else tensors


def _writable(array: Any) -> Any:
    return array if array.flags.writeable else array.copy()  # torch warns on read-only memory (shared memory)


def _v2_predictions(results: list[Any]) -> dict[str, Any]:
    column = [
        r if isinstance(r, bytes) else r.encode() if isinstance(r, str) else json.dumps(r).encode() for r in results
    ]
    return {"predictions": np.array(column, dtype=np.object_)}


def load_archive(reference: ArchiveReference) -> tuple[PluginInfo, type[Handler]]:
    """A ``.mar``'s handler as a ``Handler`` subclass (unpacked, its handler module imported), and who it is."""
    archive = MarArchive.open(reference.path)
    model_dir = archive.unpack()
    handler_class = _archive_handler(archive, model_dir)
    plugin = type(
        f"TorchServeArchive_{handler_class.__name__}",
        (Handler,),
        {
            "handler": handler_class,
            "predictor_model": reference.predictor_model,
            "model_dir": model_dir,
            "manifest": archive.manifest,
            "__module__": __name__,
        },
    )
    info = PluginInfo(
        reference.name, archive.handler, f"TorchServe archive {archive.path}", archive.version, source="handler"
    )
    return info, plugin


def _archive_handler(archive: MarArchive, model_dir: Path) -> type[Any]:
    where = f"TorchServe archive {archive.path}"
    handler = archive.handler
    if ":" in handler:
        raise PluginError(
            f"{where}: handler '{handler}' names a function; kxform serves handler classes (BaseHandler "
            "subclasses), whose preprocess and postprocess it runs around the Triton call"
        )
    module = _handler_module(handler.removesuffix(".py"), model_dir, where)
    classes = list_classes_from_module(module)
    if len(classes) != 1:  # TorchServe's own rule for a handler file
        raise PluginError(
            f"{where}: handler module {module.__name__} defines {len(classes)} classes; it must define one"
        )
    handler_class: type[Any] = classes[0]
    return handler_class


def _handler_module(name: str, model_dir: Path, where: str) -> ModuleType:
    """The handler file of the archive (its directory on sys.path, as TorchServe's worker has it), else
    TorchServe's default handler of that name (``image_classifier``)."""
    path = model_dir / f"{name}.py"
    try:
        if not path.is_file():
            return importlib.import_module(f"ts.torch_handler.{name}")
        sys.path.insert(0, str(model_dir))  # the handler may import its sibling extra files
        module_name = name if name not in sys.modules else f"kxform_torchserve_{model_dir.name}_{name}"
        spec = importlib.util.spec_from_file_location(module_name.replace("-", "_"), path)
        if spec is None or spec.loader is None:
            raise ImportError(f"{path} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    except Exception as exc:
        raise PluginError(f"{where}: handler '{name}' failed to import: {type(exc).__name__}: {exc}") from exc
