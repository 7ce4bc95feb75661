"""deploy/: Pod Security "restricted" on every pod, Triton reachable only from its transformer, no fixed namespace."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest

from tests.deploy.manifests import (
    DEPLOY,
    OVERLAYS,
    Manifest,
    component_pods,
    deployment_mode,
    kxform_containers,
    render_everything,
    render_overlay,
    render_requests,
    render_storage,
)
from tests.deploy.podsecurity import restricted_violations

# Where Knative's data plane runs: the activator and autoscaler, and Istio's knative-local-gateway.
KNATIVE_DATA_PLANE = {"knative-serving", "istio-system"}


def _labels(isvc: Manifest, component: str) -> dict[str, str]:
    # KServe's labels on every pod of a component (components/predictor.go, transformer.go).
    return {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"], "component": component}


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # matchExpressions: not used in deploy/
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def _predictor_policy(overlay: str) -> Manifest:
    rendered = render_overlay(overlay)
    isvc = rendered.inference_service
    policies = [
        p for p in rendered.of_kind("NetworkPolicy") if _selects(p["spec"]["podSelector"], _labels(isvc, "predictor"))
    ]
    assert len(policies) == 1, f"{overlay}: {len(policies)} NetworkPolicies select the predictor pods"
    return policies[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_only_the_transformer_to_triton(overlay: str) -> None:
    isvc = render_overlay(overlay).inference_service
    policy = _predictor_policy(overlay)["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    if "transformer" not in isvc["spec"]:
        # collocated: Triton's ports serve the transformer-container over localhost; the network
        # reaches only kxform's own ports.
        (kxform,) = isvc["spec"]["predictor"]["containers"]
        assert "from" not in rule
        assert sorted(p["port"] for p in rule["ports"]) == sorted(p["containerPort"] for p in kxform["ports"])
    elif deployment_mode(isvc) == "Knative":
        # Knative forwards through its gateway and activator; only those namespaces may connect.
        namespaces = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rule["from"]}
        assert namespaces == KNATIVE_DATA_PLANE
        assert all(set(peer) == {"namespaceSelector"} for peer in rule["from"])
        assert isvc["spec"]["predictor"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    else:
        (peer,) = rule["from"]
        assert set(peer) == {"podSelector"}  # this namespace's pods only
        assert _selects(peer["podSelector"], _labels(isvc, "transformer"))
        assert not _selects(peer["podSelector"], _labels(isvc, "predictor"))
        assert not _selects(
            peer["podSelector"], {"serving.kserve.io/inferenceservice": "other", "component": "transformer"}
        )
        assert {p["port"] for p in rule["ports"]} == {8080, 9000}


def _all_pods() -> list[tuple[str, Manifest]]:
    pods = [
        (f"{overlay}/{component}", pod)
        for overlay in OVERLAYS
        for component, pod in component_pods(render_overlay(overlay).inference_service).items()
    ]
    (store,) = render_storage().of_kind("Pod")
    (job,) = render_requests().of_kind("Job")
    return [*pods, ("storage/model-store", store["spec"]), ("requests/kxform-load", job["spec"]["template"]["spec"])]


@pytest.mark.parametrize(("where", "pod"), [pytest.param(w, p, id=w) for w, p in _all_pods()])
def test_every_pod_meets_pod_security_restricted(where: str, pod: Manifest) -> None:
    assert restricted_violations(pod) == []
    # Nothing in deploy/ calls the Kubernetes API: no token in any pod.
    assert pod.get("automountServiceAccountToken") is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kxform_root_filesystem_is_read_only(overlay: str) -> None:
    for _, container in kxform_containers(render_overlay(overlay).inference_service):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}  # --workers' metrics directory


@pytest.mark.parametrize(
    ("path", "value", "reported"),
    [
        pytest.param(
            ("securityContext", "allowPrivilegeEscalation"), True, "allowPrivilegeEscalation", id="escalation"
        ),
        pytest.param(("securityContext", "runAsNonRoot"), False, "runAsNonRoot", id="root"),
        pytest.param(("securityContext", "seccompProfile"), {"type": "Unconfined"}, "seccompProfile", id="seccomp"),
        pytest.param(("securityContext", "capabilities"), {"drop": ["NET_RAW"]}, "capabilities.drop", id="caps-drop"),
        pytest.param(
            ("securityContext", "capabilities"),
            {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
            "capabilities.add",
            id="caps-add",
        ),
        pytest.param(("securityContext", "privileged"), True, "privileged", id="privileged"),
    ],
)
def test_pod_security_check_rejects_an_unsafe_container(path: tuple[str, str], value: object, reported: str) -> None:
    pod = copy.deepcopy(component_pods(render_overlay("http").inference_service)["transformer"])
    pod["containers"][0][path[0]][path[1]] = value
    assert any(reported in error for error in restricted_violations(pod)), restricted_violations(pod)


def test_pod_security_check_rejects_a_host_path_volume() -> None:
    pod = copy.deepcopy(component_pods(render_overlay("http").inference_service)["transformer"])
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert restricted_violations(pod) == ["volume host: ['hostPath'] not allowed"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_survive_a_busy_event_loop(overlay: str) -> None:
    for pod in component_pods(render_overlay(overlay).inference_service).values():
        for container in pod["containers"]:
            for kind in ("readinessProbe", "livenessProbe"):
                if kind in container:
                    assert container[kind]["timeoutSeconds"] >= 3, (container["name"], kind)
            if "livenessProbe" in container:
                probe = container["livenessProbe"]
                # A restart only after a minute without an answer, not after one slow second.
                assert probe["periodSeconds"] * probe["failureThreshold"] >= 60


def _with_namespace(tmp_path: Path, namespace: str) -> Path:
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, deploy)
    for kustomization in deploy.rglob("kustomization.yaml"):
        text = kustomization.read_text()
        kustomization.write_text(re.sub(r"(?m)^namespace: kxform$", f"namespace: {namespace}", text))
    return deploy


def test_namespace_is_set_in_one_line_per_kustomization(tmp_path: Path) -> None:
    # Changing the `namespace:` lines moves everything: objects, --predictor_host, the load Job's URL.
    rendered = render_everything(_with_namespace(tmp_path, "ml-prod"))
    for directory, objects in rendered.items():
        for obj in objects:
            if obj["kind"] == "Namespace":
                assert obj["metadata"]["name"] == "ml-prod"
            else:
                assert obj["metadata"]["namespace"] == "ml-prod", (directory, obj["kind"])
            text = repr(obj)
            assert not re.search(r"\.kxform[.:/]|\.kxform\b", text), (directory, obj["kind"], text)
    hosts = [
        arg
        for obj in rendered["overlays/grpc"] + rendered["overlays/scale"]
        if obj["kind"] == "InferenceService"
        for arg in obj["spec"]["transformer"]["containers"][0]["args"]
        if arg.startswith("--predictor_host=")
    ]
    assert hosts == [
        "--predictor_host=kxform-grpc-predictor.ml-prod.svc.cluster.local:80",
        "--predictor_host=dns:///kxform-scale-predictor-grpc.ml-prod.svc.cluster.local:9000",
    ]
