"""kxform's pytest plugin: fixtures for a plugin's tests against a real Triton and a real ``kxform serve``.

pytest loads it by itself wherever kxform is installed (the ``pytest11`` entry point, named after this module,
so a ``pytest_plugins = ["kxform.pytest_plugin"]`` or ``-p kxform.pytest_plugin`` left somewhere is the same
registration, not a second one; ``-p no:kxform.pytest_plugin`` turns it off).

- ``kxform_model_repository`` (alias ``model_repository``): the model repository, from
  ``--kxform-model-repository DIR``, else ``$KXFORM_MODEL_REPOSITORY``, else the ``kxform_model_repository``
  ini option (relative to the ini file), else ``models/`` under the root directory.
- ``triton``: ``kxform triton`` on that repository, started once per session on free ports; or, with
  ``--kxform-triton HOST:PORT`` (its HTTP endpoint; gRPC on ``--kxform-triton-grpc``, default the next port), a
  Triton that runs already (in a container, on another machine), which is used as it is and never stopped.
- ``predictor``: a predictor client on that Triton, once over HTTP and once over gRPC (parametrized).
- ``kxform_serve``: ``kxform_serve("NAME", *flags)`` → a ``kxform.testing.ServeClient`` for the plugin, started
  once per session per command line, in front of ``triton``.

Starting nothing until a test asks, the plugin costs nothing in sessions that do not use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kxform.testing import ServeClient, ServerProcess, predictor_settings, running_triton, start_serve, start_triton

if TYPE_CHECKING:  # annotations only: importing the clients would load tritonclient in every session
    from kxform.predictor.base import PredictorClient

__all__ = ["kxform_model_repository", "kxform_serve", "model_repository", "predictor", "triton"]

_OPTION = "--kxform-model-repository"
_INI = "kxform_model_repository"
_ENVIRONMENT = "KXFORM_MODEL_REPOSITORY"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kxform", "kxform plugin tests")
    group.addoption(
        _OPTION,
        metavar="DIR",
        help=f"the Triton model repository the `triton` fixture serves (default: ${_ENVIRONMENT}, "
        f"the {_INI} ini option, or models/ under the root directory)",
    )
    group.addoption(
        "--kxform-triton",
        metavar="HOST:PORT",
        help="use the Triton already running there (its HTTP endpoint) instead of starting one",
    )
    group.addoption(
        "--kxform-triton-grpc",
        metavar="HOST:PORT",
        help="that Triton's gRPC endpoint (default: the HTTP port + 1, Triton's own layout)",
    )
    parser.addini(_INI, "the Triton model repository the `triton` fixture serves (relative to the ini file)")


def _repository(config: pytest.Config) -> Path:
    option = config.getoption(_OPTION)
    if option:
        return Path(option).resolve()
    if os.environ.get(_ENVIRONMENT):
        return Path(os.environ[_ENVIRONMENT]).resolve()
    ini = config.getini(_INI)
    if ini:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return (base / str(ini)).resolve()
    return config.rootpath / "models"


def _checked_repository(config: pytest.Config) -> Path:
    path = _repository(config)
    if not any(path.glob("*/config.pbtxt")):
        pytest.fail(
            f"no model repository at {path} (no <model>/config.pbtxt): pass {_OPTION} DIR, set ${_ENVIRONMENT}, "
            "or build kxform's examples with `make models`"
        )
    return path


@pytest.fixture(scope="session")
def kxform_model_repository(pytestconfig: pytest.Config) -> Path:
    """The model repository the session's Triton serves (``<model>/config.pbtxt``, as uploaded for KServe)."""
    return _checked_repository(pytestconfig)


@pytest.fixture(scope="session")
def model_repository(kxform_model_repository: Path) -> Path:
    """The same as ``kxform_model_repository`` (kxform's own tests' name for it)."""
    return kxform_model_repository


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: runs against a real Triton server (kxform's `triton` fixture)")


def _external_triton(config: pytest.Config) -> ServerProcess | None:
    http = config.getoption("--kxform-triton")
    if not http:
        return None
    grpc = config.getoption("--kxform-triton-grpc")
    if not grpc:
        host, _, port = str(http).rpartition(":")
        grpc = f"{host}:{int(port) + 1}" if port.isdigit() else ""
    return running_triton(str(http), str(grpc))


@pytest.fixture(scope="session")
def triton(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``kxform triton`` serving the model repository for the whole session (or the one ``--kxform-triton`` names)."""
    external = _external_triton(pytestconfig)
    if external is not None:
        yield external
        return
    repository = _checked_repository(pytestconfig)
    server = start_triton(repository, tmp_path_factory.mktemp("triton"))
    yield server
    with contextlib.suppress(Exception):
        server.stop()


@pytest.fixture(params=[pytest.param("v2", id="http"), pytest.param("grpc-v2", id="grpc")])
async def predictor(request: pytest.FixtureRequest, triton: ServerProcess) -> AsyncIterator[PredictorClient]:
    """A predictor client on the session's Triton, once over HTTP and once over gRPC."""
    from kxform.predictor import create_predictor

    client = create_predictor(predictor_settings(triton, request.param))
    yield client
    await client.close()


@pytest.fixture(scope="session")
def kxform_serve(
    triton: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServeClient]]:
    """``kxform_serve("NAME", "--flag=value", ...)``: ``kxform serve --transformer NAME`` in front of the session's
    Triton (HTTP unless ``--predictor_protocol=grpc-v2`` is among the flags), started on first use and kept for
    the session."""
    running: dict[tuple[str, ...], ServeClient] = {}

    def serve(name: str, *flags: str) -> ServeClient:
        key = (name, *flags)
        if key not in running:
            grpc = "--predictor_protocol=grpc-v2" in flags
            host = triton.grpc_url if grpc else triton.http_address
            server = start_serve([name], host, tmp_path_factory.mktemp(f"serve-{name}"), extra=flags)
            running[key] = ServeClient(name, server)
        return running[key]

    yield serve
    for client in running.values():
        with contextlib.suppress(Exception):
            client.server.stop()
