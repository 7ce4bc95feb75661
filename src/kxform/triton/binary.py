"""Locate the ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel and lay out its backends.

The wheel is a development dependency; nothing here imports ``pytriton`` (it would pull in its own
server machinery): the files are found through the package's location on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from kxform.errors import TritonServerError

__all__ = ["TritonInstall", "find_triton"]

_ENV_OVERRIDE = "KXFORM_TRITONSERVER"


@dataclass(frozen=True, slots=True)
class TritonInstall:
    """Where the server binary, its Python backend and its bundled libraries are."""

    binary: Path
    python_backend: Path  # holds libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub built for this interpreter's Python version
    libraries: Path  # shared libraries the wheel bundles (libtritonserver, libcudart, ...)

    def prepare_backends(self, directory: Path) -> Path:
        """Create ``directory/python`` with the backend and its stub, as ``--backend-directory`` wants."""
        python = directory / "python"
        python.mkdir(parents=True)
        for entry in self.python_backend.iterdir():
            if entry.is_file():
                (python / entry.name).symlink_to(entry)
        shutil.copy2(self.stub, python / self.stub.name)  # the backend looks for the stub beside itself
        return directory

    def environment(self) -> dict[str, str]:
        """The environment the server and its Python stubs run in: this interpreter and its venv."""
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        paths = [str(self.libraries), libdir, env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)
        # The stub embeds Python and finds its prefix through `python3` on PATH: make it this venv's.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


def _pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonServerError(
            "the Triton server binary was not found: install the development dependencies "
            "(`make setup`, or `pip install nvidia-pytriton==0.7.0`), or set "
            f"{_ENV_OVERRIDE} to a tritonserver binary"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def find_triton() -> TritonInstall:
    """Find the Triton install for this interpreter, or raise naming what is missing."""
    root = _pytriton_root() / "tritonserver"
    override = os.environ.get(_ENV_OVERRIDE)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=Path(override) if override else root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        libraries=root.parent.parent / "nvidia_pytriton.libs",
    )
    for path in (install.binary, install.python_backend, install.stub):
        if not path.exists():
            raise TritonServerError(f"Triton install is incomplete: {path} is missing (Python {version})")
    return install
