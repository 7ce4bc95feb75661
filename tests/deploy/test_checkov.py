"""deploy/ and docker/ pass checkov, a third-party policy scanner, with the skips .checkov.yaml justifies.

checkov does not know the InferenceService kind, so each one is scanned as the Deployments KServe
makes of it: one per component, with the component's pod spec (tests/deploy/manifests.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import REPO, Manifest, component_pods, render_everything

# make checkov builds it (make test runs that first); its pins conflict with constraints.txt.
CHECKOV = Path(os.environ.get("KXFORM_CHECKOV", REPO / "build" / "checkov" / "bin" / "checkov"))


def _deployments(isvc: Manifest) -> list[Manifest]:
    meta = isvc["metadata"]
    skips = {k: v for k, v in meta.get("annotations", {}).items() if k.startswith("checkov.io/")}
    image = f"nvcr.io/nvidia/tritonserver:{isvc['spec']['predictor']['model']['runtimeVersion']}"
    deployments = []
    for component, pod in component_pods(isvc).items():
        for container in pod["containers"]:
            container.setdefault("image", image)  # the predictor's model: the runtime's image
        labels = {"serving.kserve.io/inferenceservice": meta["name"], "component": component}
        deployments.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": f"{meta['name']}-{component}",
                    "namespace": meta["namespace"],
                    "annotations": skips,
                },
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": pod},
                },
            }
        )
    return deployments


def _write_rendered(out: Path) -> None:
    for directory, objects in render_everything().items():
        scanned: list[Manifest] = []
        for obj in objects:
            scanned += _deployments(obj) if obj["kind"] == "InferenceService" else [obj]
        (out / f"{directory.replace('/', '-')}.yaml").write_text(yaml.safe_dump_all(scanned))


def _json_values(text: str) -> list[dict[str, object]]:
    """checkov's JSON output: one report per framework, as a list or as objects one after another."""
    decoder, values, position = json.JSONDecoder(), [], 0
    while position < len(text.rstrip()):
        value, end = decoder.raw_decode(text, position)
        values += value if isinstance(value, list) else [value]
        position = end + len(text[end:]) - len(text[end:].lstrip())
    return values


def checkov(*directories: Path) -> dict[str, object]:
    assert CHECKOV.is_file(), f"checkov is missing at {CHECKOV}: run `make checkov` (make test does)"
    args = [str(CHECKOV), "--config-file", str(REPO / ".checkov.yaml"), "--output", "json"]
    for directory in directories:
        args += ["--directory", str(directory)]
    result = subprocess.run(args, capture_output=True, text=True, check=False, cwd=REPO, timeout=600)
    assert result.returncode in (0, 1), result.stderr  # 1: failed checks, reported below
    reports = _json_values(result.stdout)
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    passed = sum(report["summary"]["passed"] for report in reports)
    return {"failed": failed, "passed": passed, "frameworks": sorted({str(r["check_type"]) for r in reports})}


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    rendered = tmp_path_factory.mktemp("rendered")
    _write_rendered(rendered)
    return checkov(rendered, REPO / "docker")


def test_checkov_passes_on_every_manifest_and_dockerfile(scan: dict[str, object]) -> None:
    assert scan["failed"] == []
    assert scan["frameworks"] == ["dockerfile", "kubernetes"]
    assert int(str(scan["passed"])) > 500  # it did scan: every overlay's pods and both Dockerfiles


def test_checkov_fails_a_root_pod_without_seccomp(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: kxform}\n"
        "spec:\n  containers:\n    - {name: c, image: 'busybox:1.36', securityContext: {privileged: true}}\n"
    )
    failed = " ".join(str(f) for f in checkov(tmp_path)["failed"])  # type: ignore[union-attr]
    for rule in ("CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_23", "CKV_K8S_31"):  # privileged, escalation, root, seccomp
        assert rule in failed
