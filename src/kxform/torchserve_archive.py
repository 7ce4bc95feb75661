"""TorchServe model archives (``.mar``): the manifest read and the archive unpacked, without torch or TorchServe.

A ``.mar`` is what ``torch-model-archiver`` writes: a zip file holding ``MAR-INF/MANIFEST.json`` (the model's
name, version, handler and serialized file) beside the handler file and the ``--extra-files``
(``index_to_name.json``, ...). ``kxform serve --torchserve_mar FILE[=MODEL]`` serves one: the settings read its
manifest here (a bad file is a command-line error, before anything is imported), the plugin registry gets an
*archive reference* string in place of an entry-point name, and ``kxform.torchserve`` loads it.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kxform.errors import PluginError

__all__ = ["ARCHIVE_PREFIX", "ArchiveReference", "MarArchive", "archive_reference", "parse_archive_reference"]

MANIFEST_PATH = "MAR-INF/MANIFEST.json"
ARCHIVE_PREFIX = "torchserve-mar:"  # an entry-point name never contains ':'


@dataclass(frozen=True, slots=True)
class ArchiveReference:
    """A ``.mar`` to serve: the name clients call (the manifest's ``modelName``), the Triton model, the file."""

    name: str
    predictor_model: str
    path: Path

    def __str__(self) -> str:
        return f"{ARCHIVE_PREFIX}{self.name}:{self.predictor_model}:{self.path}"


def parse_archive_reference(reference: str) -> ArchiveReference | None:
    """The archive a plugin reference names, or None for an entry-point name."""
    if not reference.startswith(ARCHIVE_PREFIX):
        return None
    name, model, path = reference.removeprefix(ARCHIVE_PREFIX).split(":", 2)  # the path may hold ':'
    return ArchiveReference(name, model, Path(path))


def archive_reference(option: str) -> str:
    """``FILE[=MODEL]`` of ``--torchserve_mar`` as a plugin reference; the archive is checked now."""
    file, _, model = option.partition("=")
    archive = MarArchive.open(Path(file).expanduser().resolve())
    name = archive.model_name
    if model and (":" in model or not model.strip()):
        raise PluginError(f"--torchserve_mar {option}: '{model}' is not a Triton model name")
    return str(ArchiveReference(name, model or name, archive.path))


@dataclass(frozen=True, slots=True)
class MarArchive:
    """An opened ``.mar``: its manifest (``MAR-INF/MANIFEST.json``) and the names of its files."""

    path: Path
    manifest: dict[str, Any]
    members: tuple[str, ...]

    @classmethod
    def open(cls, path: Path) -> MarArchive:
        where = f"TorchServe archive {path}"
        try:
            with zipfile.ZipFile(path) as archive:
                members = tuple(archive.namelist())
                raw = archive.read(MANIFEST_PATH) if MANIFEST_PATH in members else None
        except FileNotFoundError:
            raise PluginError(f"{where} does not exist; give the .mar that torch-model-archiver wrote") from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise PluginError(
                f"{where} cannot be read as a zip file ({exc}); build it with torch-model-archiver's default "
                "archive format (not --archive-format tgz or no-archive)"
            ) from exc
        if raw is None:
            raise PluginError(f"{where} has no {MANIFEST_PATH}; build it with torch-model-archiver")
        return cls(path, _manifest(raw, where), members)

    @property
    def model(self) -> dict[str, Any]:
        model: dict[str, Any] = self.manifest["model"]
        return model

    @property
    def model_name(self) -> str:
        return str(self.model["modelName"])

    @property
    def handler(self) -> str:
        """The manifest's handler: a file of the archive (``handler.py``, ``handler.py:fn``) or a TorchServe
        default handler's name (``image_classifier``)."""
        return str(self.model["handler"])

    @property
    def version(self) -> str:
        return str(self.model.get("modelVersion", ""))

    def unpack(self) -> Path:
        """The archive's files in a new directory (TorchServe's ``model_dir``), removed when this process exits.

        The serialized model is left in the archive: it lives on Triton, and the handler never opens it here.
        """
        directory = Path(tempfile.mkdtemp(prefix=f"kxform-mar-{self.model_name}-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)  # lives as long as the handler serves
        model_file = self.model.get("serializedFile")
        with zipfile.ZipFile(self.path) as archive:
            for member in archive.infolist():
                if member.filename != model_file:
                    _extract(archive, member, directory)
        return directory


def _manifest(raw: bytes, where: str) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise PluginError(f"{where}: {MANIFEST_PATH} is not JSON ({exc})") from exc
    model = manifest.get("model") if isinstance(manifest, dict) else None
    if not isinstance(model, dict) or not model.get("modelName") or not model.get("handler"):
        raise PluginError(f"{where}: {MANIFEST_PATH} names no model.modelName and model.handler")
    if ":" in str(model["modelName"]):
        raise PluginError(f"{where}: modelName '{model['modelName']}' cannot be served (it contains ':')")
    return manifest


def _extract(archive: zipfile.ZipFile, member: zipfile.ZipInfo, directory: Path) -> None:
    target = (directory / member.filename).resolve()
    if not target.is_relative_to(directory):  # a crafted member name must not write outside the directory
        raise PluginError(f"TorchServe archive {archive.filename}: member '{member.filename}' points outside it")
    archive.extract(member, directory)
