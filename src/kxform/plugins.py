"""Transformer plugins: discovered from the ``kxform.transformers`` entry-point group, validated at load.

Listing reads distribution metadata only; a plugin's module is imported when it is selected.
A TorchServe archive (``kxform serve --torchserve_mar``) is one more source of a plugin: its reference
(``kxform.torchserve_archive``) stands where an entry-point name does, and ``kxform.torchserve`` loads it.
Whether each hook is ``async`` is decided here, once, not per request.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from kxform.errors import PluginError
from kxform.torchserve_archive import ArchiveReference, parse_archive_reference
from kxform.transformer import Transformer

__all__ = ["ENTRY_POINT_GROUP", "LoadedPlugin", "PluginInfo", "declared_predictor_model", "discover", "load_plugin"]

ENTRY_POINT_GROUP = "kxform.transformers"
_HOOKS = ("preprocess", "postprocess")


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One entry point of the group, as its distribution declares it (nothing imported)."""

    name: str
    target: str  # "module:attribute"
    distribution: str
    version: str
    source: str = "entry point"  # or "handler": a TorchServe archive's

    def describe(self) -> str:
        return f"{self.source} '{self.name} = {self.target}' of {self.distribution} {self.version}".rstrip()


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    """A validated plugin instance with its hooks normalised to coroutines."""

    info: PluginInfo
    transformer: Transformer
    preprocess: Callable[..., Awaitable[Any]]
    postprocess: Callable[..., Awaitable[Any]]

    @property
    def predictor_model(self) -> str:
        return self.transformer.predictor_model or self.info.name

    @property
    def async_preprocess(self) -> bool:
        """An ``async def preprocess`` runs on the event loop; a sync one inline or on the worker pool."""
        return inspect.iscoroutinefunction(self.transformer.preprocess)


def _info(entry: EntryPoint) -> PluginInfo:
    dist = entry.dist
    return PluginInfo(
        name=entry.name,
        target=entry.value,
        distribution=dist.metadata["Name"] if dist else "<unknown distribution>",
        version=dist.version if dist else "",
    )


def discover() -> dict[str, list[PluginInfo]]:
    """Every registered plugin name, with each distribution that registers it (more than one is a conflict)."""
    found: dict[str, list[PluginInfo]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        info = _info(entry)
        claims = found.setdefault(info.name, [])
        if info not in claims:  # the same distribution seen twice on sys.path is not a conflict
            claims.append(info)
    return dict(sorted(found.items()))


def _module_file(module: str) -> Path | None:
    # Locate the source without executing any package: find_spec of the top level only, then walk.
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin else None
    if not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def _assigned_model(node: ast.ClassDef) -> str | None:
    for statement in node.body:
        if isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            if any(isinstance(t, ast.Name) and t.id == "predictor_model" for t in targets):
                value = statement.value
                return str(value.value) if isinstance(value, ast.Constant) and value.value else "?"
    return None


def _model_of_class(classes: dict[str, ast.ClassDef], name: str, plugin: str) -> str:
    node = classes[name]
    model = _assigned_model(node)
    if model is not None:
        return model
    bases = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases]
    for base in bases:
        if base in classes:
            return _model_of_class(classes, base, plugin)
    return plugin if bases == ["Transformer"] else "?"  # kxform's default: the plugin's own name


def declared_predictor_model(info: PluginInfo) -> str:
    """The predictor model a plugin calls, read from its source (``predictor_model = "..."``), not imported."""
    module, _, attribute = info.target.partition(":")
    path = _module_file(module)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8")) if path else None
    except (OSError, SyntaxError, ValueError):
        tree = None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)} if tree else {}
    return _model_of_class(classes, attribute, info.name) if attribute in classes else "?"


def _select(name: str) -> PluginInfo:
    plugins = discover()
    if name not in plugins:
        known = ", ".join(plugins) or "none"
        raise PluginError(
            f"no transformer plugin named '{name}' in entry-point group '{ENTRY_POINT_GROUP}' "
            f"(installed: {known}); pip install the package that provides it"
        )
    claims = plugins[name]
    if len(claims) > 1:
        owners = "; ".join(info.describe() for info in claims)
        raise PluginError(f"transformer name '{name}' is registered by more than one distribution: {owners}")
    return claims[0]


def _import(info: PluginInfo) -> object:
    entry = EntryPoint(name=info.name, value=info.target, group=ENTRY_POINT_GROUP)
    try:
        return entry.load()
    except Exception as exc:
        raise PluginError(f"{info.describe()} failed to import: {type(exc).__name__}: {exc}") from exc


def _instantiate(info: PluginInfo, target: object) -> Transformer:
    if not (inspect.isclass(target) and issubclass(target, Transformer)):
        raise PluginError(f"{info.describe()} must name a subclass of kxform.Transformer, got {target!r}")
    if target.preprocess is Transformer.preprocess:
        raise PluginError(f"{info.describe()}: {target.__name__} does not implement preprocess(instances, ctx)")
    try:
        transformer = target()
    except Exception as exc:
        raise PluginError(f"{info.describe()}: {target.__name__}() failed: {type(exc).__name__}: {exc}") from exc
    transformer.name = info.name
    return transformer


def _as_coroutine(hook: Callable[..., Any], offload: bool) -> Callable[..., Awaitable[Any]]:
    if inspect.iscoroutinefunction(hook):
        return hook
    if offload:  # the plugin asked: its hooks do enough CPU work to be worth a thread hand-off

        async def in_thread(*args: Any) -> Any:
            return await asyncio.to_thread(hook, *args)

        return in_thread

    # Inline by default: for typical results the hand-off and GIL contention cost more than the hook
    # (benchmarks: cifar10 1 image/request 473 -> 746 req/s, 1.94 -> 1.27 ms CPU per request). A sync
    # preprocess is called by TransformerModel directly, inline or on its worker pool by request size.
    async def inline(*args: Any) -> Any:
        return hook(*args)

    return inline


def _load_archive(reference: ArchiveReference) -> tuple[PluginInfo, object]:
    try:
        from kxform.torchserve import load_archive  # torch and TorchServe only when an archive is served
    except ImportError as exc:
        raise PluginError(f"TorchServe archive {reference.path}: {exc}") from exc
    return load_archive(reference)


def load_plugin(name: str) -> LoadedPlugin:
    """Import, validate and instantiate the plugin registered as ``name`` (or the archive it references)."""
    archive = parse_archive_reference(name)
    if archive is not None:
        info, target = _load_archive(archive)
    else:
        info = _select(name)
        target = _import(info)
    transformer = _instantiate(info, target)
    for hook in _HOOKS:
        if len(inspect.signature(getattr(transformer, hook)).parameters) != 2:
            raise PluginError(f"{info.describe()}: {hook} must take exactly (instances_or_outputs, ctx)")
    return LoadedPlugin(
        info,
        transformer,
        preprocess=_as_coroutine(transformer.preprocess, transformer.offload_hooks),
        postprocess=_as_coroutine(transformer.postprocess, transformer.offload_hooks),
    )
