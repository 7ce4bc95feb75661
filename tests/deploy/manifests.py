"""Render deploy/ with kustomize and validate what comes out, the way the API server would."""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# KServe's own CRD, kept in the repository (tests/deploy/kserve/README.md says where it comes from).
CRD_PATH = Path(__file__).resolve().parent / "kserve" / "serving.kserve.io_inferenceservices.yaml"
# What a user applies: `kubectl apply -k` on each of these.
OVERLAYS = ("http", "grpc", "grpc-standard", "collocated", "standard-hpa", "scale", "torch-aoti")
# Variants there for another model than deploy/base's: the plugin (and model name) each serves instead.
OWN_PLUGIN = {"torch-aoti": "pt2"}
KUBERNETES_VERSION = "1.33.0"
# KServe's webhook: IsvcNameFmt in pkg/apis/serving/v1beta1/inference_service_validation.go.
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Manifest = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rendered:
    """One kustomization's output: where it came from and the objects `kubectl apply -k` sends."""

    source: str
    objects: tuple[Manifest, ...]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    @property
    def inference_service(self) -> Manifest:
        (isvc,) = self.of_kind("InferenceService")
        return isvc


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise RuntimeError("kubectl is needed to render deploy/ (`kubectl kustomize`); install it and re-run")
    return path


def render(directory: Path) -> tuple[Manifest, ...]:
    """`kubectl kustomize DIRECTORY`: exactly what `kubectl apply -k DIRECTORY` would send."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return tuple(obj for obj in yaml.safe_load_all(result.stdout) if obj)


@functools.cache
def render_overlay(name: str) -> Rendered:
    return Rendered(f"deploy/overlays/{name}", render(DEPLOY / "overlays" / name))


@functools.cache
def render_storage() -> Rendered:
    return Rendered("deploy/storage", render(DEPLOY / "storage"))


@functools.cache
def render_requests() -> Rendered:
    return Rendered("deploy/requests", render(DEPLOY / "requests"))


@functools.cache
def render_credentials() -> Rendered:
    return Rendered("deploy/credentials", render(DEPLOY / "credentials"))


def render_everything(deploy: Path = DEPLOY) -> dict[str, tuple[Manifest, ...]]:
    """Every kustomization a user applies under DEPLOY, by its path relative to DEPLOY."""
    directories = [f"overlays/{name}" for name in OVERLAYS] + ["storage", "requests", "credentials"]
    return {directory: render(deploy / directory) for directory in directories}


def _strict(node: Any) -> Any:
    """Reject unknown fields, as `kubectl apply` does (server-side field validation, Strict)."""
    if isinstance(node, dict):
        node = {key: _strict(value) for key, value in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


@functools.cache
def _isvc_validator() -> jsonschema.Draft7Validator:
    if not CRD_PATH.is_file():
        raise FileNotFoundError(f"KServe's CRD is not at {CRD_PATH}; the checks need it")
    crd = yaml.safe_load(CRD_PATH.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(root)"


def inference_service_errors(isvc: Manifest) -> list[str]:
    """Why KServe's CRD schema (and its name rule) would reject ISVC; empty when it is accepted."""
    errors = [f"{_where(e)}: {e.message}" for e in _isvc_validator().iter_errors(isvc)]
    if isvc.get("apiVersion") != "serving.kserve.io/v1beta1" or isvc.get("kind") != "InferenceService":
        errors.append(f"not a serving.kserve.io/v1beta1 InferenceService: {isvc.get('apiVersion')}")
    metadata = isvc.get("metadata", {})
    if not ISVC_NAME.match(str(metadata.get("name", ""))):
        errors.append(f"metadata.name {metadata.get('name')!r} does not match {ISVC_NAME.pattern}")
    if not DNS_LABEL.match(str(metadata.get("namespace", ""))):
        errors.append(f"metadata.namespace {metadata.get('namespace')!r} is not a DNS label")
    return errors


def core_errors(obj: Manifest) -> list[str]:
    """Why a core Kubernetes object (Pod, PVC, HPA, ...) is invalid, strictly; empty when valid."""
    try:
        kubernetes_validate.validate(copy.deepcopy(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path) or '(root)'}: {exc.message}"]
    return []


def kxform_containers(isvc: Manifest) -> Iterator[tuple[str, Manifest]]:
    """The containers that run the kxform image: ('transformer', c) or ('collocated', c)."""
    spec = isvc["spec"]
    for container in spec.get("transformer", {}).get("containers", [])[:1]:
        yield "transformer", container
    for container in spec["predictor"].get("containers", []):
        if container["name"] == "transformer-container":
            yield "collocated", container


# The pod fields KServe copies from a component of the InferenceService into the pod it creates.
_POD_FIELDS = (
    "securityContext",
    "automountServiceAccountToken",
    "serviceAccountName",
    "volumes",
    "topologySpreadConstraints",
    "affinity",
    "nodeSelector",
    "tolerations",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "initContainers",
)


def component_pods(isvc: Manifest) -> dict[str, Manifest]:
    """The pod spec of each component as KServe builds it from ISVC: 'predictor', 'transformer'.

    The predictor's model becomes its kserve-container (merged onto the kserve-tritonserver runtime's
    container, whose own fields the model's override) beside any `containers` (a collocated
    transformer-container); a transformer's containers are its own.
    """
    pods: dict[str, Manifest] = {}
    for component in ("predictor", "transformer"):
        spec = isvc["spec"].get(component)
        if spec is None:
            continue
        pod = {key: copy.deepcopy(spec[key]) for key in _POD_FIELDS if key in spec}
        containers = copy.deepcopy(spec.get("containers", []))
        if "model" in spec:
            containers.insert(0, {"name": "kserve-container", **copy.deepcopy(spec["model"])})
        pod["containers"] = containers
        pods[component] = pod
    return pods


def deployment_mode(isvc: Manifest) -> str:
    return str(isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode", ""))
