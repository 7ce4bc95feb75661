"""What is measured: each scenario is one request shape sent to several implementations in turn.

Implementations: ``kxform`` (``kxform serve``, predictor over HTTP), ``kxform-grpc`` (the same over
gRPC), ``kxform-shm`` (tensors through Triton's system shared memory), ``kxform-workersN``
(``--workers N``), ``reference`` (the seeds' hand-written transformer), ``kserve-noop`` (kserve's
ModelServer answering a constant: its framework ceiling), ``triton`` (Triton itself with the
tensors a transformer would send: the ceiling) and ``triton-ensemble`` (Triton with the image
bytes, decoded by a Python-backend model of an ensemble: what Triton users do instead of a
transformer). cifar10-1 also runs at 32 and 64 connections. imagenet-8 and tensor-8 (the
transport-bound one: 4.8 MB of tensor per request to a model that costs next to nothing) compare
the predictor's transports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kxform.codecs.dtypes import Array

from .images import CIFAR10_PIPELINE, IMAGENET_PIPELINE, encoded_images, tensor_of
from .payloads import Payload, tensor_binary_payload, triton_images_payload, v1_images_payload, v2_images_payload
from .processes import ServerSpec

__all__ = [
    "BUSY_CONNECTIONS",
    "MODELS",
    "SATURATED_CONNECTIONS",
    "SHM_IMPLEMENTATION",
    "TRANSPORT_SCENARIO",
    "WORKERS_IMPLEMENTATION",
    "Plugins",
    "Run",
    "Scenario",
    "build_scenarios",
    "server_specs",
]

CIFAR10_MODEL = "cifar10"
IMAGENET_MODEL = "resnet50"
TENSOR_MODEL = "pooled"  # global average pooling + Linear(3, 10): moving its input is the cost
MODELS = (CIFAR10_MODEL, IMAGENET_MODEL, TENSOR_MODEL)  # what the scenarios need in --model-repository
TRITON_INPUT = "INPUT__0"
TRITON_OUTPUT = "OUTPUT__0"
TENSOR_OUTPUT = "logits"  # the tensor plugin's V2 output
ENSEMBLE_INPUT = "IMAGE"  # the BYTES input of the ensembles in ensemble/
BUSY_CONNECTIONS = 32  # cifar10-1's extra load shapes: where batching should pay off...
SATURATED_CONNECTIONS = 64  # ... and where queueing shows in the tail latency
# `kxform serve --workers N` for the kxform-workersN run: one per core of this 2-core machine.
KXFORM_WORKERS = 2
WORKERS_IMPLEMENTATION = f"kxform-workers{KXFORM_WORKERS}"
SHM_IMPLEMENTATION = "kxform-shm"
TRANSPORT_SCENARIO = "tensor-8"  # where the transport is most of the cost: the shared-memory targets' scenario
# The wire runs pass --predictor_shm none: its default (auto) takes shared memory when Triton is on
# loopback, as it is here; the kxform-shm runs pass system.
WIRE_SHM = "none"


@dataclass(frozen=True, slots=True)
class Plugins:
    """The kxform plugins to serve; ``imagenet`` or ``tensor`` is None when no such plugin is installed."""

    cifar10: str
    imagenet: str | None
    tensor: str | None


@dataclass(frozen=True, slots=True)
class Run:
    """One implementation under one scenario's load, at ``connections`` (None: ``--connections``)."""

    implementation: str
    server: str  # "triton" or a ServerSpec key
    payload: Payload
    connections: int | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    model: str  # the Triton model every run ends in: its batching is reported
    runs: tuple[Run, ...]
    duration_scale: float = 1.0  # slow scenarios run longer, so that their percentiles rest on enough requests


def _transport_specs(family: str, plugin: str) -> list[ServerSpec]:
    """kxform-FAMILY over HTTP, -grpc over gRPC, -shm through system shared memory."""
    specs = [
        ServerSpec(f"kxform-{family}", "kxform", plugin, predictor_shm=WIRE_SHM),
        ServerSpec(f"kxform-{family}-grpc", "kxform", plugin, predictor_protocol="grpc-v2", predictor_shm=WIRE_SHM),
    ]
    specs.append(ServerSpec(f"kxform-{family}-shm", "kxform", plugin, predictor_shm="system"))
    return specs


def server_specs(plugins: Plugins) -> list[ServerSpec]:
    """The transformer processes the scenarios need (each serves one model, as the seed's does)."""
    specs = [
        *_transport_specs("cifar10", plugins.cifar10),
        ServerSpec("kxform-cifar10-workers", "kxform", plugins.cifar10, workers=KXFORM_WORKERS, predictor_shm=WIRE_SHM),
        ServerSpec("kserve-noop-cifar10", "kserve-noop", plugins.cifar10),  # called as kxform is
        ServerSpec("reference-cifar10", "reference", "cifar10", model=CIFAR10_MODEL),
        ServerSpec("reference-imagenet", "reference", "imagenet", model=IMAGENET_MODEL),
    ]
    if plugins.imagenet is not None:
        specs += _transport_specs("imagenet", plugins.imagenet)
    if plugins.tensor is not None:
        specs += _transport_specs("tensor", plugins.tensor)
    return specs


@dataclass(frozen=True, slots=True)
class _Family:
    """A model and how its images are made: what the cifar10 and imagenet scenarios share."""

    name: str  # the suffix of the server keys: kxform-NAME, reference-NAME
    model: str  # the Triton model
    plugin: str | None
    ensemble: str  # the ensemble of ensemble/ that ends in ``model``


@dataclass(frozen=True, slots=True)
class _Requests:
    """One scenario's request bodies: the tensor for Triton, the image bytes for the ensemble, V1 JSON."""

    tensor: Payload
    ensemble: Payload
    v1: Payload | None  # None when no kxform plugin serves the family
    reference: Payload


def _requests(family: _Family, images: list[bytes], tensor: Array) -> _Requests:
    return _Requests(
        tensor=tensor_binary_payload(family.model, TRITON_INPUT, tensor, TRITON_OUTPUT),
        ensemble=triton_images_payload(family.ensemble, ENSEMBLE_INPUT, images, TRITON_OUTPUT),
        v1=None if family.plugin is None else v1_images_payload(family.plugin, images),
        reference=v1_images_payload(family.model, images),
    )


def _images_runs(family: _Family, requests: _Requests, ensemble: bool) -> list[Run]:
    """Triton (with the tensor), the ensemble if asked, kxform over HTTP and gRPC, the reference."""
    runs = [Run("triton", "triton", requests.tensor)]
    if ensemble:
        runs.append(Run("triton-ensemble", "triton", requests.ensemble))
    if requests.v1 is not None:
        runs += [
            Run("kxform", f"kxform-{family.name}", requests.v1),
            Run("kxform-grpc", f"kxform-{family.name}-grpc", requests.v1),
        ]
    runs.append(Run("reference", f"reference-{family.name}", requests.reference))
    return runs


def _transport_runs(family: str, payload: Payload) -> list[Run]:
    """kxform with its predictor over HTTP, over gRPC and through shared memory."""
    runs = [Run("kxform", f"kxform-{family}", payload), Run("kxform-grpc", f"kxform-{family}-grpc", payload)]
    runs.append(Run(SHM_IMPLEMENTATION, f"kxform-{family}-shm", payload))
    return runs


def _photos_runs(plugin: str | None, photos: list[bytes], tensor: Array) -> list[Run]:
    """imagenet-8: Triton sent the tensor of the photos, kxform their V1 JSON over each transport."""
    runs = [Run("triton", "triton", tensor_binary_payload(IMAGENET_MODEL, TRITON_INPUT, tensor, TRITON_OUTPUT))]
    if plugin is not None:
        runs += _transport_runs("imagenet", v1_images_payload(plugin, photos))
    return runs


def _tensor_runs(plugin: str | None, v2_input: str | None, tensor: Array) -> list[Run]:
    """tensor-8: Triton and the passthrough plugin sent the same FP32 tensor, V2 binary in and out."""
    runs = [Run("triton", "triton", tensor_binary_payload(TENSOR_MODEL, TRITON_INPUT, tensor, TRITON_OUTPUT))]
    if plugin is not None and v2_input is not None:
        runs += _transport_runs("tensor", tensor_binary_payload(plugin, v2_input, tensor, TENSOR_OUTPUT))
    return runs


def _busier_runs(requests: _Requests, v1: Payload, connections: int) -> list[Run]:
    """The two anchors and kxform at ``connections``."""
    return [
        Run("triton", "triton", requests.tensor, connections),
        Run("triton-ensemble", "triton", requests.ensemble, connections),
        Run("kxform", "kxform-cifar10", v1, connections),
    ]


def _cifar10_one_runs(family: _Family, requests: _Requests) -> list[Run]:
    """cifar10-1: every implementation at the base connections, then the anchors and kxform busier."""
    assert requests.v1 is not None  # cifar10 always has a plugin: the bench falls back to the tests' copy
    workers = "kxform-cifar10-workers"
    return [
        *_images_runs(family, requests, ensemble=True),
        Run(WORKERS_IMPLEMENTATION, workers, requests.v1),
        Run("kserve-noop", "kserve-noop-cifar10", requests.v1),
        *_busier_runs(requests, requests.v1, BUSY_CONNECTIONS),
        Run(WORKERS_IMPLEMENTATION, workers, requests.v1, BUSY_CONNECTIONS),
        *_busier_runs(requests, requests.v1, SATURATED_CONNECTIONS),
    ]


def build_scenarios(plugins: Plugins, v2_inputs: Mapping[str, str]) -> list[Scenario]:
    """The scenarios, in the order they run; ``v2_inputs``: the cifar10 and tensor plugins' V2 input names."""
    cifar10 = _Family("cifar10", CIFAR10_MODEL, plugins.cifar10, "cifar10_ensemble")
    imagenet = _Family("imagenet", IMAGENET_MODEL, plugins.imagenet, "resnet50_ensemble")
    small = encoded_images(8, 32, "PNG")
    photos = encoded_images(8, 224, "JPEG")
    one = _requests(cifar10, small[:1], tensor_of(small[:1], CIFAR10_PIPELINE))
    eight = _requests(cifar10, small, tensor_of(small, CIFAR10_PIPELINE))
    photo = _requests(imagenet, photos[:1], tensor_of(photos[:1], IMAGENET_PIPELINE))
    photos_tensor = tensor_of(photos, IMAGENET_PIPELINE)  # [8, 3, 224, 224] FP32: 4.8 MB
    v2_payload = v2_images_payload(plugins.cifar10, v2_inputs[plugins.cifar10], small[:1])
    tensor_input = None if plugins.tensor is None else v2_inputs[plugins.tensor]
    return [
        Scenario(
            "cifar10-1", "cifar10, 1 image/request, V1 JSON", CIFAR10_MODEL, tuple(_cifar10_one_runs(cifar10, one))
        ),
        Scenario(
            "cifar10-8",
            "cifar10, 8 images/request, V1 JSON",
            CIFAR10_MODEL,
            tuple(_images_runs(cifar10, eight, ensemble=False)),
        ),
        Scenario(
            "cifar10-1-v2",
            "cifar10, 1 image/request, V2 REST binary (one BYTES element)",
            CIFAR10_MODEL,
            (Run("kxform", "kxform-cifar10", v2_payload), Run("kxform-grpc", "kxform-cifar10-grpc", v2_payload)),
        ),
        Scenario(
            "imagenet-1",
            "resnet50, one 224x224 JPEG/request, V1 JSON",
            IMAGENET_MODEL,
            tuple(_images_runs(imagenet, photo, ensemble=True)),
            duration_scale=2.0,  # resnet50 on 2 CPU cores: ~13 req/s, even for Triton alone
        ),
        Scenario(
            "imagenet-8",
            "resnet50, 8 224x224 JPEGs/request, V1 JSON",
            IMAGENET_MODEL,
            tuple(_photos_runs(plugins.imagenet, photos, photos_tensor)),
            # ~1 req/s whatever the transport (Triton needs ~1.1 s of CPU for 8 images): 30 s give ~30 requests
            duration_scale=3.0,
        ),
        Scenario(
            TRANSPORT_SCENARIO,
            "pooled, one FP32 [8, 3, 224, 224] tensor/request (4.8 MB), V2 REST binary: transport-bound",
            TENSOR_MODEL,
            tuple(_tensor_runs(plugins.tensor, tensor_input, photos_tensor)),
        ),
    ]
