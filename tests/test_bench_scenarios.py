"""The bench's scenarios and report, built without servers: who runs, with which flags, what is compared."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from benchmarks.payloads import Payload
from benchmarks.processes import ServerSpec, kxform_arguments
from benchmarks.report import Measurement, ratios, targets
from benchmarks.scenarios import Plugins, Scenario, build_scenarios, server_specs

PLUGINS = Plugins("cifar10", "imagenet", "tensor")
V2_INPUTS = {"cifar10": "image", "tensor": "input"}
BASE = 8
WIRE_KEYS = (
    "kxform-cifar10",
    "kxform-cifar10-grpc",
    "kxform-cifar10-workers",
    "kxform-imagenet",
    "kxform-imagenet-grpc",
    "kxform-tensor",
    "kxform-tensor-grpc",
)


def by_name(plugins: Plugins = PLUGINS) -> dict[str, Scenario]:
    return {scenario.name: scenario for scenario in build_scenarios(plugins, V2_INPUTS)}


def implementations(scenario: Scenario) -> list[str]:
    return [run.implementation for run in scenario.runs]


def shm_flags(spec: ServerSpec) -> list[str]:
    return [argument for argument in kxform_arguments(spec) if argument.startswith("--predictor_shm")]


def tensor_bytes(payload: Payload) -> bytes:
    """The binary part of a V2 binary body: the tensor itself."""
    assert payload.header_length is not None
    return payload.body[payload.header_length :]


def test_only_the_transport_scenarios_run_kxform_shm() -> None:
    found = by_name()

    assert implementations(found["imagenet-8"]) == ["triton", "kxform", "kxform-grpc", "kxform-shm"]
    assert implementations(found["tensor-8"]) == ["triton", "kxform", "kxform-grpc", "kxform-shm"]
    assert not any("kxform-shm" in implementations(found[name]) for name in found if not name.endswith("-8"))


def test_every_run_has_a_server_to_go_to() -> None:
    keys = {spec.key for spec in server_specs(PLUGINS)} | {"triton"}

    assert sorted({run.server for scenario in by_name().values() for run in scenario.runs} - keys) == []


def test_wire_runs_pass_predictor_shm_none_and_shm_runs_system() -> None:
    specs = {spec.key: spec for spec in server_specs(PLUGINS) if spec.kind == "kxform"}

    wire = {key: shm_flags(spec) for key, spec in specs.items() if not key.endswith("-shm")}
    shm = {key: shm_flags(spec) for key, spec in specs.items() if key.endswith("-shm")}
    assert wire == {key: ["--predictor_shm=none"] for key in WIRE_KEYS}
    assert sorted(shm) == ["kxform-cifar10-shm", "kxform-imagenet-shm", "kxform-tensor-shm"]
    assert all(flags == ["--predictor_shm=system"] for flags in shm.values()), shm


def test_others_than_kxform_get_no_kxform_flags() -> None:
    others = [spec for spec in server_specs(PLUGINS) if spec.kind != "kxform"]

    assert others
    assert all(spec.predictor_shm is None for spec in others)


def test_tensor_8_sends_triton_and_the_plugin_the_same_8_image_tensor() -> None:
    triton, kxform, grpc, shm = by_name()["tensor-8"].runs

    assert (triton.payload.path, kxform.payload.path) == ("/v2/models/pooled/infer", "/v2/models/tensor/infer")
    assert tensor_bytes(triton.payload) == tensor_bytes(kxform.payload) == tensor_bytes(grpc.payload)
    assert shm.payload == kxform.payload
    assert len(tensor_bytes(kxform.payload)) == 8 * 3 * 224 * 224 * 4
    header = orjson.loads(kxform.payload.body[: kxform.payload.header_length])
    assert [(i["name"], i["datatype"], i["shape"]) for i in header["inputs"]] == [("input", "FP32", [8, 3, 224, 224])]
    assert header["outputs"] == [{"name": "logits", "parameters": {"binary_data": True}}]


def test_imagenet_8_sends_eight_photos_and_triton_their_tensor() -> None:
    triton, kxform, *_ = by_name()["imagenet-8"].runs

    assert len(orjson.loads(kxform.payload.body)["instances"]) == 8
    tensor = np.frombuffer(tensor_bytes(triton.payload), np.float32).reshape(8, 3, 224, 224)
    assert len({row.tobytes() for row in tensor}) == 8  # eight different photos
    imagenet_1 = by_name()["imagenet-1"].runs[0]
    assert tensor_bytes(imagenet_1.payload) == tensor[:1].tobytes()  # imagenet-1's photo is the first of them


def test_without_the_plugins_the_new_scenarios_run_triton_alone() -> None:
    found = by_name(Plugins("cifar10", None, None))

    assert implementations(found["imagenet-8"]) == implementations(found["tensor-8"]) == ["triton"]


def measurement(scenario: str, implementation: str, rps: float, cpu_ms: float | None) -> Measurement:
    return Measurement(
        scenario=scenario,
        implementation=implementation,
        connections=BASE,
        rps=rps,
        p50_ms=10.0,
        p99_ms=20.0,
        errors=0,
        requests=int(rps * 10),
        peak_rss_mb=None if cpu_ms is None else 100.0,
        peak_worker_rss_mb=None if cpu_ms is None else 100.0,
        cpu_ms_per_request=cpu_ms,
        triton_cpu_ms_per_request=1.0,
        triton_batch=None,
        other_cores=0.0,
    )


def transport_runs(scenario: str, shm_rps: float, shm_cpu: float) -> list[Measurement]:
    return [
        measurement(scenario, "triton", 100.0, None),
        measurement(scenario, "kxform", 40.0, 20.0),
        measurement(scenario, "kxform-grpc", 50.0, 10.0),
        measurement(scenario, "kxform-shm", shm_rps, shm_cpu),
    ]


def test_report_gives_shm_over_grpc_and_http_of_req_s_and_cpu_per_request_for_both_scenarios() -> None:
    found = {
        r.name: r.value for r in ratios(transport_runs("tensor-8", 75.0, 6.0) + transport_runs("imagenet-8", 55.0, 9.0))
    }

    assert found["tensor-8 @8: kxform-shm / kxform-grpc req/s"] == pytest.approx(1.5)
    assert found["tensor-8 @8: kxform-shm / kxform req/s"] == pytest.approx(75 / 40)
    assert found["tensor-8 @8: kxform-shm / kxform-grpc transformer CPU ms/req"] == pytest.approx(0.6)
    assert found["tensor-8 @8: kxform-shm / kxform transformer CPU ms/req"] == pytest.approx(0.3)
    assert found["imagenet-8 @8: kxform-shm / kxform-grpc req/s"] == pytest.approx(1.1)
    assert found["imagenet-8 @8: kxform-shm / kxform transformer CPU ms/req"] == pytest.approx(0.45)


@pytest.mark.parametrize(
    ("shm_rps", "shm_cpu", "verdicts"),
    [
        pytest.param(75.0, 6.0, [True, True], id="both-met"),
        pytest.param(60.0, 6.0, [False, True], id="too-few-req-s"),
        pytest.param(75.0, 8.0, [True, False], id="too-much-cpu"),
    ],
)
def test_shm_targets_are_judged_on_tensor_8_against_grpc(shm_rps: float, shm_cpu: float, verdicts: list[bool]) -> None:
    found = {t.name: t for t in targets(transport_runs("tensor-8", shm_rps, shm_cpu), BASE)}

    rps = found["tensor-8 @8: kxform-shm / kxform-grpc req/s"]
    cpu = found["tensor-8 @8: kxform-shm / kxform-grpc transformer CPU ms/req"]
    assert [rps.met, cpu.met] == verdicts
    assert (rps.goal, cpu.goal) == (">= 1.3", "<= 0.7")


def test_shm_targets_are_not_measured_without_a_kxform_shm_run() -> None:
    wire_only = [m for m in transport_runs("tensor-8", 75.0, 6.0) if m.implementation != "kxform-shm"]

    shm = [t for t in targets(wire_only, BASE) if "kxform-shm" in t.name]

    assert len(shm) == 2
    assert [(t.value, t.met) for t in shm] == [(None, None), (None, None)]
