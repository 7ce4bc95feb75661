"""docs/deploy.md: every file, variant and resource name it tells a user to use is one deploy/ has."""

from __future__ import annotations

import re

from tests.deploy.manifests import OVERLAYS, REPO, render_credentials, render_overlay, render_requests, render_storage

DOC = REPO / "docs" / "deploy.md"


def _text() -> str:
    return DOC.read_text()


def test_doc_paths_exist() -> None:
    paths = {m.rstrip(".,:;)`") for m in re.findall(r"\b(?:deploy|docker)/[\w./-]+", _text())}
    assert paths, "docs/deploy.md names no deploy/ or docker/ path"
    assert sorted(path for path in paths if not (REPO / path).exists()) == []


def test_doc_applies_every_variant() -> None:
    applied = set(re.findall(r"kubectl apply -k deploy/overlays/([\w-]+)|`deploy/overlays/([\w-]+)`", _text()))
    named = {name for pair in applied for name in pair if name}
    assert named == set(OVERLAYS)


def _resource_names() -> set[str]:
    names: set[str] = set()
    for rendered in [render_storage(), render_requests(), render_credentials(), *(render_overlay(o) for o in OVERLAYS)]:
        for obj in rendered.objects:
            names.add(obj["metadata"]["name"])
            if obj["kind"] == "InferenceService":
                # KServe's Services and Deployments: <name>-predictor, <name>-transformer
                names |= {f"{obj['metadata']['name']}-predictor", f"{obj['metadata']['name']}-transformer"}
    return names


def test_doc_resource_names_are_those_deployed() -> None:
    mentioned = set(re.findall(r"\bkxform-[a-z0-9-]*[a-z0-9]", _text()))
    images = {"kxform-myplugin"}  # an image name in the plugin example, not a resource
    settings = {"kxform-settings"}  # the generator in deploy/base/kustomization.yaml, never applied
    assert sorted(mentioned - _resource_names() - images - settings) == []


def test_doc_states_the_configured_triton_release() -> None:
    kustomization = (REPO / "deploy" / "base" / "kustomization.yaml").read_text()
    (release,) = re.findall(r"runtimeVersion=(\S+)", kustomization)
    assert f"`{release}`" in _text()
