"""``kxform new`` (kxform.scaffold): the package it writes, what it refuses, and the package passing its own tests.

The last test is the user's whole path: ``kxform new demo --model-repository models --model cifar10`` in an empty
directory, the package installed into a fresh venv made from kxform's own wheel, and its generated tests run
there against the real Triton.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kxform.cli import main
from kxform.scaffold import ScaffoldError, check_name, create_plugin, kind_of, model_from_repository
from kxform.testing import ServerProcess, kxform_command

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
PIP_TIMEOUT = 900  # not a speed bound: a fresh venv's install, on a slow mirror


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        pytest.param("cifar10", "image", id="chw-image"),
        pytest.param("digits", "image", id="grey-image"),
        pytest.param("text", "text", id="bytes"),
    ],
)
def test_the_kind_of_plugin_comes_from_the_models_config(model_repository: Path, model: str, kind: str) -> None:
    assert kind_of(model_from_repository(model_repository, model)) == kind


def test_an_image_model_gets_an_image_pipeline_with_the_configs_size(model_repository: Path, tmp_path: Path) -> None:
    scaffold = create_plugin("demo-img", tmp_path / "demo", model_repository, "cifar10")

    module = (tmp_path / "demo" / "src" / "demo_img" / "__init__.py").read_text()
    assert 'PIPELINE = ImagePipeline(mode="RGB", resize=(32, 32)' in module
    assert 'predictor_model = "cifar10"' in module
    assert 'kxform.TensorSpec("class", "BYTES", ())' in module  # the config names a label file
    assert (scaffold.module, scaffold.class_name) == ("demo_img", "DemoImg")
    for path in scaffold.files:
        if path.endswith(".py"):
            ast.parse((tmp_path / "demo" / path).read_text(), path)  # valid Python


def test_the_pyproject_registers_the_entry_point_and_finds_the_repository(
    model_repository: Path, tmp_path: Path
) -> None:
    create_plugin("demo-img", tmp_path / "pkg", model_repository, "cifar10")

    pyproject = tomllib.loads((tmp_path / "pkg" / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["kxform.transformers"] == {"demo-img": "demo_img:DemoImg"}
    relative = pyproject["tool"]["pytest"]["ini_options"]["kxform_model_repository"]
    assert (tmp_path / "pkg" / relative).resolve() == model_repository.resolve()


def test_the_readme_has_a_curl_line_for_the_example_request_file(tmp_path: Path) -> None:
    create_plugin("plain", tmp_path / "plain")

    readme = (tmp_path / "plain" / "README.md").read_text()
    assert "curl -s http://127.0.0.1:8080/v1/models/plain:predict -d @example-request.json" in readme
    assert (tmp_path / "plain" / "example-request.json").is_file()


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        pytest.param("9lives", "starting with a letter", id="digit-first"),
        pytest.param("my model", "letters and digits", id="space"),
        pytest.param("a--b", "single '-' or '_'", id="double-dash"),
        pytest.param("class", "reserves", id="keyword"),
        pytest.param("json", "importable already", id="shadows-stdlib"),
    ],
)
def test_a_name_that_cannot_be_a_package_is_refused_saying_why(name: str, fragment: str) -> None:
    with pytest.raises(ScaffoldError) as caught:
        check_name(name)

    assert name in caught.value.message
    assert fragment in caught.value.message


def test_a_dash_name_becomes_an_underscore_module() -> None:
    assert check_name("my-fine-plugin") == "my_fine_plugin"


def test_an_existing_directory_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "demo"
    target.mkdir()
    (target / "keep.txt").write_text("mine")

    status = main(["new", "demo", "--dir", str(target)])

    assert status == 1
    assert "exists already; kxform new never overwrites" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_an_unknown_model_names_the_models_the_repository_has(model_repository: Path, tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError) as caught:
        create_plugin("demo", tmp_path / "demo", model_repository, "no-such-model")

    assert "cifar10" in caught.value.message
    assert not (tmp_path / "demo").exists()


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = PIP_TIMEOUT) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.integration
def test_kxform_new_package_passes_its_own_tests_in_a_fresh_venv(
    triton: ServerProcess, model_repository: Path, tmp_path: Path
) -> None:
    """The fresh venv holds kxform's wheel, its runtime dependencies and the new package; not this session's paths.

    Its Triton is this session's (``--kxform-triton``): the Triton binary and torch are development dependencies
    of kxform (``.[dev]``), which a plugin's venv does not have; every other part is the venv's own.
    """
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KXFORM_MODEL_REPOSITORY")}
    (tmp_path / "models").symlink_to(model_repository)
    new = kxform_command("new", "demo", "--model-repository", "models", "--model", "cifar10")
    _run(new, tmp_path, dict(os.environ))  # this session's kxform writes it
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], ROOT, clean)
    _run([sys.executable, "-m", "venv", str(tmp_path / "venv")], tmp_path, clean)
    (wheel,) = wheels.glob("kxform-*.whl")
    pip = [str(tmp_path / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS)]
    _run([*pip, str(wheel), "-e", "demo[test]"], tmp_path, clean)

    plugins = _run([str(tmp_path / "venv" / "bin" / "kxform"), "plugins"], tmp_path, clean, timeout=60)
    report = _run(
        [
            str(tmp_path / "venv" / "bin" / "pytest"),
            "demo",
            "-p",
            "no:cacheprovider",
            "-v",
            f"--kxform-triton={triton.http_address}",
            f"--kxform-triton-grpc={triton.grpc_url}",
        ],
        tmp_path,
        clean,
        timeout=600,
    )

    assert "demo  demo          0.1.0    cifar10  demo:Demo" in plugins
    assert " passed" in report
    assert "failed" not in report
    assert "skipped" not in report
    assert report.count("PASSED") >= 8, report  # the unit tests and the integration tests (V1, V2, gRPC, curl)
