"""The bench's model repository: every model of ``--model-repository`` plus the ensembles of ``ensemble/``.

``ensemble/`` holds what a Triton user deploys instead of a transformer (an ensemble whose first
step is a Python-backend model that decodes the image): each model's ``config.pbtxt`` and, for a
Python model, its ``model.py``. They are not in ``models/``, which the dev server and the test
suite load. The derived repository is a directory of links that ``kxform triton`` serves like any
other: the user's models are linked as they are, the ensemble models get Triton's layout
(``<model>/config.pbtxt``, ``<model>/1/model.py``; an ensemble's version directory stays empty).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ENSEMBLE_SOURCES", "build_repository"]

ENSEMBLE_SOURCES = Path(__file__).resolve().with_name("ensemble")
_VERSION = "1"


def _model_dirs(repository: Path) -> list[Path]:
    return sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _lay_out(source: Path, target: Path) -> None:
    """One ensemble model from its sources, in the layout Triton reads: linked files, version 1."""
    version = target / _VERSION
    version.mkdir(parents=True)  # Triton wants a version directory, even an ensemble's (empty) one
    (target / "config.pbtxt").symlink_to(source / "config.pbtxt")
    if (source / "model.py").exists():
        (version / "model.py").symlink_to(source / "model.py")


def build_repository(models: Path, target: Path) -> Path:
    """Fill the empty directory ``target`` with links to ``models``' models and the ensemble models."""
    for model in _model_dirs(models):
        (target / model.name).symlink_to(model.resolve())
    for source in _model_dirs(ENSEMBLE_SOURCES):
        if (target / source.name).exists():
            raise SystemExit(f"{models} has a model named {source.name}, as the bench's ensemble models do")
        _lay_out(source, target / source.name)
    return target
