"""What is measured: each scenario is one request shape sent to several implementations in turn.

Implementations: ``kxform`` (``kxform serve``, predictor over HTTP), ``kxform-grpc`` (the same
over gRPC), ``reference`` (the seeds' hand-written transformer) and ``triton`` (Triton itself
with the tensors a transformer would send: the ceiling).
"""

from __future__ import annotations

from dataclasses import dataclass

from kxform.codecs.dtypes import Array

from .images import CIFAR10_PIPELINE, IMAGENET_PIPELINE, encoded_images, tensor_of
from .payloads import Payload, tensor_binary_payload, v1_images_payload, v2_images_payload
from .processes import ServerSpec

__all__ = ["Plugins", "Run", "Scenario", "build_scenarios", "server_specs"]

CIFAR10_MODEL = "cifar10"
IMAGENET_MODEL = "resnet50"
TRITON_INPUT = "INPUT__0"
TRITON_OUTPUT = "OUTPUT__0"


@dataclass(frozen=True, slots=True)
class Plugins:
    """The kxform plugins to serve; ``imagenet`` is None when no such plugin is installed."""

    cifar10: str
    imagenet: str | None


@dataclass(frozen=True, slots=True)
class Run:
    """One implementation under one scenario's load."""

    implementation: str
    server: str  # "triton" or a ServerSpec key
    payload: Payload


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    runs: tuple[Run, ...]
    duration_scale: float = 1.0  # slow scenarios run longer, so that their percentiles rest on enough requests


def server_specs(plugins: Plugins) -> list[ServerSpec]:
    """The transformer processes the scenarios need (each serves one model, as the seed's does)."""
    specs = [
        ServerSpec("kxform-cifar10", "kxform", plugins.cifar10),
        ServerSpec("kxform-cifar10-grpc", "kxform", plugins.cifar10, predictor_protocol="grpc-v2"),
        ServerSpec("reference-cifar10", "reference", "cifar10", model=CIFAR10_MODEL),
        ServerSpec("reference-imagenet", "reference", "imagenet", model=IMAGENET_MODEL),
    ]
    if plugins.imagenet is not None:
        specs += [
            ServerSpec("kxform-imagenet", "kxform", plugins.imagenet),
            ServerSpec("kxform-imagenet-grpc", "kxform", plugins.imagenet, predictor_protocol="grpc-v2"),
        ]
    return specs


@dataclass(frozen=True, slots=True)
class _Family:
    """A model and how its images are made: what the cifar10 and imagenet scenarios share."""

    name: str  # the suffix of the server keys: kxform-NAME, reference-NAME
    model: str  # the Triton model
    plugin: str | None


def _images_scenario(
    name: str, description: str, family: _Family, images: list[bytes], tensor: Array, duration_scale: float = 1.0
) -> Scenario:
    """Triton (with the tensor), kxform over HTTP and gRPC and the reference (with the same V1 request)."""
    runs = [Run("triton", "triton", tensor_binary_payload(family.model, TRITON_INPUT, tensor, TRITON_OUTPUT))]
    if family.plugin is not None:
        payload = v1_images_payload(family.plugin, images)
        runs += [
            Run("kxform", f"kxform-{family.name}", payload),
            Run("kxform-grpc", f"kxform-{family.name}-grpc", payload),
        ]
    runs.append(Run("reference", f"reference-{family.name}", v1_images_payload(family.model, images)))
    return Scenario(name, description, tuple(runs), duration_scale)


def build_scenarios(plugins: Plugins, v2_input: str) -> list[Scenario]:
    """The scenarios, in the order they run; ``v2_input`` is the cifar10 plugin's V2 input name."""
    cifar10 = _Family("cifar10", CIFAR10_MODEL, plugins.cifar10)
    imagenet = _Family("imagenet", IMAGENET_MODEL, plugins.imagenet)
    small = encoded_images(8, 32, "PNG")
    large = encoded_images(1, 224, "JPEG")
    v2_payload = v2_images_payload(plugins.cifar10, v2_input, small[:1])
    return [
        _images_scenario(
            "cifar10-1", "cifar10, 1 image/request, V1 JSON", cifar10, small[:1], tensor_of(small[:1], CIFAR10_PIPELINE)
        ),
        _images_scenario(
            "cifar10-8", "cifar10, 8 images/request, V1 JSON", cifar10, small, tensor_of(small, CIFAR10_PIPELINE)
        ),
        Scenario(
            "cifar10-1-v2",
            "cifar10, 1 image/request, V2 REST binary (one BYTES element)",
            (Run("kxform", "kxform-cifar10", v2_payload), Run("kxform-grpc", "kxform-cifar10-grpc", v2_payload)),
        ),
        _images_scenario(
            "imagenet-1",
            "resnet50, one 224x224 JPEG/request, V1 JSON",
            imagenet,
            large,
            tensor_of(large, IMAGENET_PIPELINE),
            duration_scale=2.0,  # resnet50 on 2 CPU cores: ~13 req/s, even for Triton alone
        ),
    ]
