"""The servers under test, started as real processes on free ports: Triton, ``kxform serve``, kserve's.

Each is a ``kxform.testing.ServerProcess``, so they start, wait and stop through ``kxform.supervisor`` as the tests'
servers and ``kxform dev``'s do.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kxform.plugins import discover
from kxform.testing import ServerProcess, free_port, start_serve, start_server, start_triton

__all__ = ["ServerSpec", "Servers", "installed_plugins", "kxform_arguments", "start_servers"]

REFERENCE_SCRIPT = Path(__file__).with_name("reference_transformer.py")
KSERVE_NOOP_SCRIPT = Path(__file__).with_name("kserve_noop.py")
# The seeds' InferenceService gives the Triton predictor OMP_NUM_THREADS=1 ("critical for performance");
# without it each model's torch spins 2 OpenMP threads that take CPU from everything else on 2 cores.
TRITON_ENVIRONMENT = {"OMP_NUM_THREADS": "1"}


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A transformer process to start: ``kxform serve`` of a plugin, the reference, or kserve's no-op model.

    ``name`` is the plugin (kxform), the ``--transform`` recipe (reference) or the model name clients
    call (kserve-noop); ``model`` is the Triton model the reference serves and forwards to (kxform's
    plugins name theirs). ``workers`` is ``kxform serve --workers``; ``predictor_shm`` is
    ``kxform serve --predictor_shm`` (``none``, ``system``, ``auto``), left off the command line when None.
    """

    key: str
    kind: Literal["kxform", "reference", "kserve-noop"]
    name: str
    model: str = ""
    predictor_protocol: Literal["v2", "grpc-v2"] = "v2"
    workers: int = 1
    predictor_shm: str | None = None


def installed_plugins() -> set[str]:
    """The names registered in the ``kxform.transformers`` entry-point group, without importing them."""
    return set(discover())


def _predictor_host(triton: ServerProcess, protocol: str) -> str:
    return triton.grpc_url if protocol == "grpc-v2" else f"127.0.0.1:{triton.ports['http']}"


def _start_kserve_script(script: Path, arguments: list[str], spec: ServerSpec, log_dir: Path) -> ServerProcess:
    """``script`` (a kserve.Model under kserve's ModelServer) on free ports, once it is ready."""
    ports = {"http": free_port(), "grpc": free_port()}
    command = [sys.executable, str(script), *arguments, f"--http_port={ports['http']}", f"--grpc_port={ports['grpc']}"]
    return start_server(ServerProcess(command, log_dir / f"{spec.key}.log", ports), timeout=180)


def start_reference(spec: ServerSpec, triton: ServerProcess, log_dir: Path) -> ServerProcess:
    """The seeds' transformer under kserve's ModelServer, forwarding V2 JSON to Triton over HTTP."""
    arguments = [
        f"--model_name={spec.model}",
        f"--predictor_host={_predictor_host(triton, 'v2')}",
        "--predictor_protocol=v2",
        f"--transform={spec.name}",
    ]
    return _start_kserve_script(REFERENCE_SCRIPT, arguments, spec, log_dir)


def start_kserve_noop(spec: ServerSpec, triton: ServerProcess, log_dir: Path) -> ServerProcess:
    """kserve's ModelServer with a model that answers a constant: it never calls ``triton``."""
    return _start_kserve_script(KSERVE_NOOP_SCRIPT, [f"--model_name={spec.name}"], spec, log_dir)


def kxform_arguments(spec: ServerSpec) -> list[str]:
    """The flags of ``kxform serve`` that ``spec`` sets, besides the transformer, host and ports."""
    arguments = [f"--predictor_protocol={spec.predictor_protocol}", f"--workers={spec.workers}"]
    if spec.predictor_shm is not None:
        arguments.append(f"--predictor_shm={spec.predictor_shm}")
    return arguments


def start_kxform(spec: ServerSpec, triton: ServerProcess, log_dir: Path) -> ServerProcess:
    """``kxform serve --transformer NAME --workers N`` in front of Triton over ``spec.predictor_protocol``."""
    host = _predictor_host(triton, spec.predictor_protocol)
    return start_serve([spec.name], host, log_dir, extra=kxform_arguments(spec))


_STARTERS: dict[str, Callable[[ServerSpec, ServerProcess, Path], ServerProcess]] = {
    "kxform": start_kxform,
    "reference": start_reference,
    "kserve-noop": start_kserve_noop,
}


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """``variables`` set in this process's environment while children are spawned, then restored."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class Servers:
    """The running Triton and transformers; ``get("triton")`` or ``get(spec.key)``."""

    triton: ServerProcess
    transformers: dict[str, ServerProcess]

    def get(self, key: str) -> ServerProcess:
        return self.triton if key == "triton" else self.transformers[key]


def start_servers(stack: contextlib.ExitStack, repository: Path, specs: list[ServerSpec], log_dir: Path) -> Servers:
    """Start Triton (environment as the seeds deploy it), then each transformer in turn.

    ``stack`` stops them all, transformers first. The transformers inherit this process's environment.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    with _environment(TRITON_ENVIRONMENT):
        triton = start_triton(repository, log_dir)
    stack.callback(triton.stop)
    print(f"  triton: {' '.join(triton.command[1:])} (log: {triton.log_path})", flush=True)
    servers = Servers(triton, {})
    for spec in specs:
        server = _STARTERS[spec.kind](spec, triton, log_dir)
        stack.callback(server.stop)
        servers.transformers[spec.key] = server
        print(f"  {spec.key}: {' '.join(server.command[1:])} (log: {server.log_path})", flush=True)
    return servers
