"""docker/: the image's install steps, replayed in a fresh venv, give a working kxform without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.manifests import REPO

DOCKER = REPO / "docker"

# Run in the fresh venv: kxform's command line and every installed plugin load without torch.
_PROBE = """
import importlib.util, json, sys
from importlib.metadata import entry_points
import kxform.cli
kxform.cli.parse_args(["serve", "--transformer", "probe"])
plugins = {ep.name: ep.dist.name for ep in entry_points(group="kxform.transformers")}
for ep in entry_points(group="kxform.transformers"):
    ep.load()
print(json.dumps({
    "torch_installed": importlib.util.find_spec("torch") is not None,
    "torch_imported": "torch" in sys.modules,
    "plugins": plugins,
}))
"""


def _run(args: list[str | Path], env: dict[str, str] | None = None) -> str:
    if env is None:  # the image's venv sees only itself: not the test-only plugins conftest puts on PYTHONPATH
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, env=env, cwd=REPO, timeout=600
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv built the way docker/Dockerfile builds /opt/venv: the same scripts, wheels and pins."""
    python = shutil.which("python3.11")
    assert python is not None, "python3.11 is needed: the image runs Python 3.11"
    root = tmp_path_factory.mktemp("image")
    venv, wheels = root / "venv", root / "wheels"
    _run([python, "-m", "venv", venv])
    # Only the venv's own pip: nothing from the developer's environment leaks in.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env["PYTHON"] = str(venv / "bin" / "python")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run(["sh", DOCKER / "build-wheels.sh", REPO, wheels, "all"], env)
    _run(["sh", DOCKER / "install-wheels.sh", wheels, REPO / "requirements" / "constraints.txt"], env)
    return venv


@pytest.mark.integration
def test_image_venv_runs_kxform_serve_help(image_venv: Path) -> None:
    out = _run([image_venv / "bin" / "kxform", "serve", "--help"])
    assert "--predictor_host" in out
    assert "--transformer" in out


@pytest.mark.integration
def test_image_venv_has_no_torch_and_every_plugin(image_venv: Path) -> None:
    probe = json.loads(_run([image_venv / "bin" / "python", "-c", _PROBE]).strip().splitlines()[-1])
    assert (probe["torch_installed"], probe["torch_imported"]) == (False, False)
    packaged = {path.parent.name for path in (REPO / "transformers").glob("*/pyproject.toml")}
    assert {f"kxform-example-{name}" for name in packaged} <= set(probe["plugins"].values())


def _package(root: Path, name: str, version: str, dependencies: list[str]) -> Path:
    project = root / name
    (project / name.replace("-", "_")).mkdir(parents=True)
    (project / name.replace("-", "_") / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = {json.dumps(dependencies)}\n'
    )
    return project


@pytest.mark.integration
def test_install_refuses_a_plugin_that_pulls_in_torch(tmp_path: Path) -> None:
    # A stand-in "torch" (empty, at the pinned version) so the guard is exercised without the real one.
    python = shutil.which("python3.11")
    assert python is not None
    venv, wheels = tmp_path / "venv", tmp_path / "wheels"
    _run([python, "-m", "venv", venv])
    torch_pin = next(
        line.split("==")[1]
        for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines()
        if line.startswith("torch==")
    )
    for project in (
        _package(tmp_path, "torch", torch_pin, []),
        _package(tmp_path, "needs-torch", "0", ["torch"]),
    ):
        _run([venv / "bin" / "python", "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, project])
    env = dict(os.environ, PYTHON=str(venv / "bin" / "python"))
    result = subprocess.run(
        ["sh", str(DOCKER / "install-wheels.sh"), str(wheels), str(REPO / "requirements" / "constraints.txt")],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode != 0
    assert "torch got installed; the transformer image must not contain torch" in result.stderr
