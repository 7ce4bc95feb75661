"""deploy/: the scale overlay grows both sides and spreads gRPC over every Triton pod; collocated shares /dev/shm."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest

from tests.deploy.manifests import (
    DEPLOY,
    OVERLAYS,
    REPO,
    Manifest,
    core_errors,
    inference_service_errors,
    render,
    render_overlay,
)
from tests.deploy.test_manifests import _arg, _kserve_hpa


def _labels(isvc: Manifest, component: str) -> dict[str, str]:
    return {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"], "component": component}


def test_scale_overlay_autoscales_predictor_and_transformer_on_cpu() -> None:
    isvc = render_overlay("scale").inference_service
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
    for component in ("predictor", "transformer"):
        hpa = _kserve_hpa(isvc, component)
        assert core_errors(hpa) == []
        assert hpa["spec"]["minReplicas"] >= 2, component  # a PodDisruptionBudget needs two to allow a drain
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"


def test_scale_overlay_dials_every_triton_pod_through_a_headless_service() -> None:
    rendered = render_overlay("scale")
    isvc = rendered.inference_service
    (service,) = rendered.of_kind("Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == _labels(isvc, "predictor")
    (port,) = service["spec"]["ports"]
    (triton_port,) = isvc["spec"]["predictor"]["model"]["ports"]
    assert port["targetPort"] == port["port"] == triton_port["containerPort"]  # headless: no port mapping
    container = isvc["spec"]["transformer"]["containers"][0]
    meta = service["metadata"]
    assert (
        _arg(container, "--predictor_host")
        == f"dns:///{meta['name']}.{meta['namespace']}.svc.cluster.local:{port['port']}"
    )
    # Triton ends each connection, so kxform's channel re-resolves and finds new Triton pods.
    args = isvc["spec"]["predictor"]["model"]["args"]
    assert "--grpc-max-connection-age=30000" in args
    assert "--grpc-max-connection-age-grace=10000" in args


def test_scale_overlay_has_a_disruption_budget_and_spread_per_side() -> None:
    rendered = render_overlay("scale")
    isvc = rendered.inference_service
    budgets = {
        pdb["spec"]["selector"]["matchLabels"]["component"]: pdb for pdb in rendered.of_kind("PodDisruptionBudget")
    }
    assert set(budgets) == {"predictor", "transformer"}
    for component, pdb in budgets.items():
        assert pdb["spec"]["selector"]["matchLabels"] == _labels(isvc, component)
        assert pdb["spec"]["maxUnavailable"] == 1
        (spread,) = isvc["spec"][component]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["labelSelector"]["matchLabels"] == _labels(isvc, component)


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o != "scale"])
def test_single_replica_overlays_have_no_disruption_budget(overlay: str) -> None:
    # A budget over one replica would block every node drain.
    rendered = render_overlay(overlay)
    assert rendered.of_kind("PodDisruptionBudget") == []
    assert rendered.inference_service["spec"]["predictor"]["maxReplicas"] == 1


def test_collocated_containers_share_one_memory_backed_dev_shm() -> None:
    predictor = render_overlay("collocated").inference_service["spec"]["predictor"]
    (volume,) = [v for v in predictor["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
    triton = predictor["model"]
    (kxform,) = predictor["containers"]
    for container in (triton, kxform):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get("/dev/shm") == volume["name"], container.get("name", "kserve-container")
    # Room for kxform's 16 regions of the largest example model at max_batch_size (resnet50: 74 MiB).
    needed = 16 * max(_region_bytes(config.read_text()) for config in REPO.glob("models/*/config.pbtxt"))
    assert needed > 64 * 2**20  # more than a container runtime's default /dev/shm: why the volume exists
    limit = volume["emptyDir"]["sizeLimit"]
    assert limit.endswith("Mi")
    assert needed <= int(limit.removesuffix("Mi")) * 2**20 <= 2 * needed
    # Triton opens the regions kxform creates (owner-only modes): both run as the same user.
    assert triton["securityContext"]["runAsUser"] == kxform["securityContext"]["runAsUser"]
    assert "--predictor_shm=system" in kxform["args"]


_ITEM_BYTES = {"TYPE_FP32": 4, "TYPE_FP16": 2, "TYPE_INT64": 8, "TYPE_INT32": 4, "TYPE_UINT8": 1, "TYPE_BOOL": 1}


def _region_bytes(config: str) -> int:
    """One shared-memory region of a Triton model: one call's inputs and outputs at max_batch_size.

    Each non-BYTES tensor of fixed dims is max_batch_size x prod(dims) x itemsize, rounded up to 64
    bytes; BYTES (TYPE_STRING) tensors and dynamic dims go over the wire instead.
    """
    (batch,) = re.findall(r"max_batch_size: (\d+)", config)
    total = 0
    for data_type, dims in re.findall(r"data_type: (\w+)\s+dims: \[([-\d, ]+)\]", config):
        shape = [int(d) for d in dims.split(",")]
        if data_type == "TYPE_STRING" or min(shape) < 0:
            continue
        total += math.ceil(int(batch) * math.prod(shape) * _ITEM_BYTES[data_type] / 64) * 64
    return total


def test_region_size_of_an_example_model() -> None:
    cifar10 = (REPO / "models" / "cifar10" / "config.pbtxt").read_text()
    # [3,32,32] FP32 in, [10] FP32 out, max_batch_size 8: 98,304 + 320 bytes, about 96 KiB.
    assert _region_bytes(cifar10) == 8 * 3 * 32 * 32 * 4 + 8 * 10 * 4


def test_s3_models_component_gives_the_predictor_the_credentials_account(tmp_path: Path) -> None:
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    overlay = tmp_path / "deploy" / "overlays" / "scale" / "kustomization.yaml"
    text = overlay.read_text().replace(
        "  - ../../components/standard\n", "  - ../../components/standard\n  - ../../components/s3-models\n"
    )
    overlay.write_text(text)
    (isvc,) = [obj for obj in render(overlay.parent) if obj["kind"] == "InferenceService"]
    assert inference_service_errors(isvc) == []
    (account,) = [obj for obj in render(tmp_path / "deploy" / "credentials") if obj["kind"] == "ServiceAccount"]
    assert isvc["spec"]["predictor"]["serviceAccountName"] == account["metadata"]["name"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://")
    assert [s["name"] for s in account["secrets"]] == ["kxform-models-s3"]
