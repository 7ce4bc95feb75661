"""deploy/: the arguments each kxform container gets parse with `kxform serve`'s own parser."""

from __future__ import annotations

import argparse
import copy
import os

import pytest

from tests.deploy.manifests import OVERLAYS, OWN_PLUGIN, Manifest, kxform_containers, render_overlay


def controller_argv(isvc: Manifest, role: str, container: Manifest) -> list[str]:
    """The arguments KServe starts the container with: its own, then what the controller appends.

    Mirrors CustomTransformer.GetContainer (pkg/apis/serving/v1beta1/transformer_custom.go, kserve
    aaac4e2). A collocated transformer-container gets its arguments unchanged (components/predictor.go).
    """
    args = [str(arg) for arg in container.get("args", [])]
    if role == "collocated":
        return args

    def given(flag: str) -> bool:  # KServe's utils.IncludesArg: equal or prefix
        return any(arg.startswith(flag) for arg in args)

    meta = isvc["metadata"]
    appended: list[tuple[str, str | None]] = [
        ("--model_name", meta["name"]),
        ("--predictor_host", f"{meta['name']}-predictor.{meta['namespace']}"),
        ("--http_port", "8080"),
        ("--workers", str(isvc["spec"]["transformer"].get("containerConcurrency", "")) or None),
    ]
    for flag, value in appended:
        if value is not None and not given(flag):
            args += [flag, value]
    return args


def parse_serve(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """`kxform serve ARGS` with exactly the container's environment (KXFORM_* flags included)."""
    from kxform.cli import parse_args

    for name in [name for name in os.environ if name.startswith("KXFORM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return parse_args(["serve", *args])


def _env(container: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


# overlay -> (--predictor_protocol, --predictor_host, --http_port, --grpc_port) the container must end up with
EXPECTED = {
    "http": ("v2", "kxform-http-predictor.kxform", 8080, 8081),
    "grpc": ("grpc-v2", "kxform-grpc-predictor.kxform.svc.cluster.local:80", 8080, 8081),
    "grpc-standard": ("grpc-v2", "kxform-grpc-standard-predictor.kxform.svc.cluster.local:80", 8080, 8081),
    "collocated": ("grpc-v2", "localhost:9000", 8090, 8091),
    "standard-hpa": ("v2", "kxform-standard-hpa-predictor.kxform", 8080, 8081),
    "scale": ("grpc-v2", "dns:///kxform-scale-predictor-grpc.kxform.svc.cluster.local:9000", 8080, 8081),
    "torch-aoti": ("v2", "kxform-torch-aoti-predictor.kxform", 8080, 8081),
}


# Flags of `kxform serve` that main is adding; until they land this parser does not know them.
def test_expectations_cover_every_overlay() -> None:
    assert set(EXPECTED) == set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifest_args_parse_with_kxform_serve(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    isvc = render_overlay(overlay).inference_service
    ((role, container),) = kxform_containers(isvc)
    # The image's ENTRYPOINT is `kxform serve`; a `command` would replace it.
    assert "command" not in container
    parsed = parse_serve(controller_argv(isvc, role, container), _env(container), monkeypatch)
    assert parsed.command == "serve"
    plugin = OWN_PLUGIN.get(overlay, "cifar10")
    assert parsed.transformer == [plugin]
    assert parsed.model_name == plugin
    got = (parsed.predictor_protocol, parsed.predictor_host, parsed.http_port, parsed.grpc_port)
    assert got == EXPECTED[overlay]


def test_seed_transformer_args_select_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    # Seeds 000/001: `args: [--model_name, cifar10, --protocol, v2]`; kserve 0.21 ignored --protocol.
    isvc = {"metadata": {"name": "torch-transformer", "namespace": "default"}, "spec": {"transformer": {}}}
    container = {"args": ["--transformer", "cifar10", "--model_name", "cifar10", "--protocol", "v2"]}
    parsed = parse_serve(controller_argv(isvc, "transformer", container), {}, monkeypatch)
    assert (parsed.predictor_protocol, parsed.predictor_host) == ("v2", "torch-transformer-predictor.default")


def test_misspelt_manifest_arg_is_rejected(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    isvc = render_overlay("http").inference_service
    ((role, container),) = kxform_containers(isvc)
    args = [
        arg.replace("--predictor_protocol", "--predictor_protocl") for arg in controller_argv(isvc, role, container)
    ]
    with pytest.raises(SystemExit) as exit_info:
        parse_serve(args, _env(container), monkeypatch)
    assert exit_info.value.code == 2
    assert "--predictor_protocl" in capsys.readouterr().err


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o != "collocated"])
def test_container_concurrency_becomes_the_workers_kxform_runs(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # KServe appends --workers <containerConcurrency> to a transformer that does not give --workers;
    # `kxform serve` runs that many serving processes. (A collocated transformer-container gets no
    # appended arguments: it is not KServe's transformer.)
    isvc = copy.deepcopy(render_overlay(overlay).inference_service)
    ((role, container),) = kxform_containers(isvc)
    assert not any(arg.startswith("--workers") for arg in container["args"])
    default = parse_serve(controller_argv(isvc, role, container), _env(container), monkeypatch)
    assert default.workers == 1  # one process for the manifests' one CPU
    isvc["spec"]["transformer"]["containerConcurrency"] = 3
    argv = controller_argv(isvc, role, container)
    assert argv[-2:] == ["--workers", "3"]
    assert parse_serve(argv, _env(container), monkeypatch).workers == 3


def test_collocated_args_select_system_shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    isvc = render_overlay("collocated").inference_service
    ((role, container),) = kxform_containers(isvc)
    assert role == "collocated"
    assert parse_serve(controller_argv(isvc, role, container), _env(container), monkeypatch).predictor_shm == "system"
