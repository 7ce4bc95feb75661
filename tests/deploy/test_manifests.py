"""deploy/: every manifest a user applies is valid for KServe and Kubernetes, and the variants agree."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import (
    DEPLOY,
    OVERLAYS,
    OWN_PLUGIN,
    REPO,
    Manifest,
    core_errors,
    deployment_mode,
    inference_service_errors,
    kxform_containers,
    render,
    render_credentials,
    render_overlay,
    render_requests,
    render_storage,
)

# Triton's ports in KServe's kserve-tritonserver ClusterServingRuntime (config/runtimes/).
TRITON_HTTP_PORT = 8080
TRITON_GRPC_PORT = 9000


def _settings() -> dict[str, str]:
    kustomization = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    settings = dict(literal.split("=", 1) for literal in generator["literals"])
    (image,) = kustomization["images"]
    settings["image"] = f"{image['newName']}:{image['newTag']}"
    settings["namespace"] = kustomization["namespace"]
    return settings


def _arg(container: Manifest, flag: str) -> str | None:
    values = [a.split("=", 1)[1] for a in container.get("args", []) if a.startswith(f"{flag}=")]
    return values[-1] if values else None


def _env(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _predictor_containers(isvc: Manifest) -> list[Manifest]:
    predictor = isvc["spec"]["predictor"]
    return [predictor["model"], *predictor.get("containers", [])]


def _all_containers(isvc: Manifest) -> list[Manifest]:
    return _predictor_containers(isvc) + isvc["spec"].get("transformer", {}).get("containers", [])


@pytest.fixture(params=OVERLAYS)
def isvc(request: pytest.FixtureRequest) -> Manifest:
    return render_overlay(request.param).inference_service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_an_overlay_is_valid(overlay: str) -> None:
    for obj in render_overlay(overlay).objects:
        if obj["kind"] != "InferenceService":
            assert (obj["kind"], core_errors(obj)) == (obj["kind"], [])


def test_overlays_are_all_checked() -> None:
    on_disk = {path.parent.name for path in (DEPLOY / "overlays").glob("*/kustomization.yaml")}
    assert on_disk == set(OVERLAYS)


def test_inference_service_matches_kserve_crd(isvc: Manifest) -> None:
    assert inference_service_errors(isvc) == []


@pytest.mark.parametrize(
    ("rendered", "kind"),
    [
        pytest.param(render_storage, "Namespace", id="storage-namespace"),
        pytest.param(render_storage, "PersistentVolumeClaim", id="storage-pvc"),
        pytest.param(render_storage, "Pod", id="storage-pod"),
        pytest.param(render_requests, "ConfigMap", id="requests-configmap"),
        pytest.param(render_requests, "Job", id="requests-load-job"),
        pytest.param(render_storage, "NetworkPolicy", id="storage-networkpolicy"),
        pytest.param(render_credentials, "ServiceAccount", id="credentials-serviceaccount"),
        pytest.param(render_credentials, "Secret", id="credentials-secret"),
    ],
)
def test_core_object_is_valid_kubernetes(rendered: Any, kind: str) -> None:
    (obj,) = rendered().of_kind(kind)
    assert core_errors(obj) == []


def test_load_job_targets_the_hpa_variant() -> None:
    (job,) = render_requests().of_kind("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    url = {e["name"]: e["value"] for e in container["env"]}["URL"]
    isvc = render_overlay("standard-hpa").inference_service
    meta = isvc["metadata"]
    model = _settings()["model"]
    assert url == f"http://{meta['name']}-transformer.{meta['namespace']}.svc.cluster.local/v1/models/{model}:predict"
    assert job["metadata"]["namespace"] == meta["namespace"]
    (volume,) = job["spec"]["template"]["spec"]["volumes"]
    (configmap,) = render_requests().of_kind("ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert "cifar10-image.json" in configmap["data"]


def _set(obj: Manifest, path: str, value: Any) -> Manifest:
    broken = copy.deepcopy(obj)
    *parents, leaf = path.split(".")
    node: Any = broken
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return broken


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "reported"),
    [
        pytest.param("spec.predictor.model.storageUri", 42, "spec.predictor.model.storageUri", id="wrong-type"),
        pytest.param("spec.predictor.model.storageURI", "s3://x", "storageURI", id="unknown-field"),
        pytest.param("spec.transformer.containers.0.name", _DELETE, "'name' is a required", id="no-name"),
        pytest.param("spec.transformer.scaleMetric", "qps", "spec.transformer.scaleMetric", id="bad-enum"),
        pytest.param(
            "spec.transformer.containers.0.ports.0.containerPort", "8080", "containerPort", id="port-as-string"
        ),
        pytest.param("metadata.name", "Kxform_HTTP", "metadata.name", id="bad-name"),
    ],
)
def test_broken_inference_service_is_rejected(path: str, value: Any, reported: str) -> None:
    broken = _set(render_overlay("http").inference_service, path, value)
    errors = inference_service_errors(broken)
    assert any(reported in error for error in errors), errors


def test_broken_overlay_is_rejected(tmp_path: Path) -> None:
    # A user's overlay with a typo in a patch renders fine; the schema check is what catches it.
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    overlay = tmp_path / "deploy" / "overlays" / "typo"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../../base]\n"
        "patches:\n"
        "  - target: {kind: InferenceService}\n"
        "    patch: |-\n"
        "      - {op: add, path: /spec/transformer/minReplica, value: 2}\n"
    )
    (isvc,) = [obj for obj in render(overlay) if obj["kind"] == "InferenceService"]
    assert inference_service_errors(isvc) == [
        "spec.transformer: Additional properties are not allowed ('minReplica' was unexpected)"
    ]


def test_broken_core_object_is_rejected() -> None:
    (pvc,) = render_storage().of_kind("PersistentVolumeClaim")
    broken = _set(pvc, "spec.accessModes", "ReadWriteOnce")
    assert core_errors(broken) != []


def test_settings_reach_every_variant(isvc: Manifest) -> None:
    settings = _settings()
    model = isvc["spec"]["predictor"]["model"]
    assert (model["storageUri"], model["runtimeVersion"]) == (settings["storageUri"], settings["runtimeVersion"])
    assert isvc["metadata"]["namespace"] == settings["namespace"]
    containers = list(kxform_containers(isvc))
    assert len(containers) == 1
    overlay = isvc["metadata"]["name"].removeprefix("kxform-")
    expected = (OWN_PLUGIN[overlay],) * 2 if overlay in OWN_PLUGIN else (settings["plugin"], settings["model"])
    for _, container in containers:
        assert container["image"] == settings["image"]
        assert (_arg(container, "--transformer"), _arg(container, "--model_name")) == expected


@pytest.mark.parametrize("overlay", sorted(OWN_PLUGIN))
def test_a_variants_own_plugin_calls_a_pt2_of_the_repository(overlay: str) -> None:
    from kxform.plugins import load_plugin

    triton_model = load_plugin(OWN_PLUGIN[overlay]).predictor_model
    config = REPO / "models" / triton_model / "config.pbtxt"
    assert config.is_file(), f"{config} is missing: run `make models`"
    assert 'platform: "torch_aoti"' in config.read_text()
    assert (config.parent / "1" / "model.pt2").is_file()


def test_configured_plugin_calls_a_model_of_the_repository() -> None:
    # models/ is what goes into storageUri (`make models` builds it; `make test` runs that first).
    from kxform.plugins import load_plugin

    triton_model = load_plugin(_settings()["plugin"]).predictor_model
    config = REPO / "models" / triton_model / "config.pbtxt"
    assert config.is_file(), f"{config} is missing: run `make models`, or fix plugin= in deploy/base"
    text = config.read_text()
    assert f'name: "{triton_model}"' in text
    assert 'platform: "pytorch_libtorch"' in text
    assert (config.parent / "1" / "model.pt").is_file()


def test_storage_matches_storage_uri() -> None:
    storage = render_storage()
    (namespace,) = storage.of_kind("Namespace")
    (pvc,) = storage.of_kind("PersistentVolumeClaim")
    (pod,) = storage.of_kind("Pod")
    assert namespace["metadata"]["name"] == pvc["metadata"]["namespace"] == _settings()["namespace"]
    claim, _, subpath = _settings()["storageUri"].removeprefix("pvc://").partition("/")
    assert claim == pvc["metadata"]["name"]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
    assert f"mkdir -p /pv/{subpath}" in " ".join(pod["spec"]["containers"][0]["command"])


def test_every_container_has_resources_and_one_omp_thread(isvc: Manifest) -> None:
    for container in _all_containers(isvc):
        assert _env(container).get("OMP_NUM_THREADS") == "1", container.get("name", "predictor model")
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}


def _http_port(container: Manifest) -> int:
    return int(_arg(container, "--http_port") or 8080)


def test_kxform_probes_hit_its_health_endpoints(isvc: Manifest) -> None:
    for _, container in kxform_containers(isvc):
        port = _http_port(container)
        assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
        assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
        assert container["ports"][0]["containerPort"] == port


def test_knative_containers_have_one_port_and_probe_it() -> None:
    knative = [render_overlay(name).inference_service for name in OVERLAYS]
    knative = [isvc for isvc in knative if deployment_mode(isvc) == "Knative"]
    assert [isvc["metadata"]["name"] for isvc in knative] == ["kxform-http", "kxform-grpc"]
    for isvc in knative:
        for container in _all_containers(isvc):
            ports = container.get("ports", [{"containerPort": 8080}])  # Knative's default user port
            assert len(ports) == 1, container.get("name")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe in container:
                    # Knative: "May only probe containerPort".
                    assert container[probe]["httpGet"]["port"] == ports[0]["containerPort"]


def _is_grpc_port_name(name: str, mode: str) -> bool:
    # Knative routes HTTP/2 to a port named h2c; KServe's Standard mode wants <protocol>[-<suffix>].
    return name == "h2c" if mode == "Knative" else name == "grpc" or name.startswith("grpc-")


def test_grpc_predictor_port_is_named_as_kserve_requires(isvc: Manifest) -> None:
    ((role, container),) = kxform_containers(isvc)
    if _arg(container, "--predictor_protocol") != "grpc-v2" or role == "collocated":
        assert "ports" not in isvc["spec"]["predictor"]["model"]
        return
    (port,) = isvc["spec"]["predictor"]["model"]["ports"]
    assert port["containerPort"] == TRITON_GRPC_PORT
    assert _is_grpc_port_name(port["name"], deployment_mode(isvc))


def test_kxform_grpc_port_is_named_as_kserve_requires(isvc: Manifest) -> None:
    for _, container in kxform_containers(isvc):
        for port in container["ports"][1:]:
            assert _is_grpc_port_name(port["name"], deployment_mode(isvc))
            assert port["containerPort"] == int(_arg(container, "--grpc_port") or 8081)


def test_predictor_host_names_this_predictor(isvc: Manifest) -> None:
    ((role, container),) = kxform_containers(isvc)
    host = _arg(container, "--predictor_host")
    protocol = _arg(container, "--predictor_protocol")
    if role == "collocated":
        assert host == f"localhost:{TRITON_GRPC_PORT if protocol == 'grpc-v2' else TRITON_HTTP_PORT}"
    elif protocol == "grpc-v2" and host is not None and host.startswith("dns:///"):
        # deploy/overlays/scale: the headless Service of this predictor, Triton's own gRPC port.
        meta = isvc["metadata"]
        assert host == f"dns:///{meta['name']}-predictor-grpc.{meta['namespace']}.svc.cluster.local:{TRITON_GRPC_PORT}"
    elif protocol == "grpc-v2":
        # KServe's default host carries no port, and gRPC would dial 443.
        meta = isvc["metadata"]
        assert host == f"{meta['name']}-predictor.{meta['namespace']}.svc.cluster.local:80"
    else:
        assert host is None, "over HTTP, KServe appends the right --predictor_host itself"


def _kserve_hpa(isvc: Manifest, component: str = "transformer") -> Manifest:
    """The HPA KServe creates for COMPONENT in Standard mode with autoscalerClass hpa.

    Mirrors createHPA/getHPAMetrics in pkg/controller/v1beta1/inferenceservice/reconcilers/hpa/
    hpa_reconciler.go (kserve aaac4e2) for the metrics this repository uses.
    """
    transformer = isvc["spec"][component]
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": metric["resource"]["name"],
                "target": {
                    "type": "Utilization",
                    "averageUtilization": metric["resource"]["target"]["averageUtilization"],
                },
            },
        }
        for metric in transformer["autoScaling"]["metrics"]
    ]
    name = f"{isvc['metadata']['name']}-{component}"
    min_replicas = max(1, transformer.get("minReplicas", 1))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": isvc["metadata"]["namespace"]},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max(min_replicas, transformer.get("maxReplicas", 0)),
            "metrics": metrics,
        },
    }


def test_standard_hpa_scales_the_transformer_on_cpu() -> None:
    isvc = render_overlay("standard-hpa").inference_service
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    transformer = isvc["spec"]["transformer"]
    # KServe's webhook: Knative metrics are rejected for an HPA.
    assert "scaleMetric" not in transformer
    hpa = _kserve_hpa(isvc)
    assert core_errors(hpa) == []
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 1 <= metric["resource"]["target"]["averageUtilization"] <= 100
    # A CPU-utilization HPA needs a CPU request on every container of the pod it scales.
    for container in transformer["containers"]:
        assert "cpu" in container["resources"]["requests"]


def test_hpa_of_broken_autoscaling_is_rejected() -> None:
    isvc = render_overlay("standard-hpa").inference_service
    broken = _set(isvc, "spec.transformer.autoScaling.metrics.0.resource.target.averageUtilization", "70%")
    assert core_errors(_kserve_hpa(broken)) != []
