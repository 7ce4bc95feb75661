"""Testing kxform plugins: an in-memory predictor, an in-process runner, and real servers on free ports.

The public names plugin authors use (their pytest fixtures come from ``kxform.pytest_plugin``, which pytest
loads by itself wherever kxform is installed):

- ``MockPredictor(spec, handler)``: a predictor client answering from a ``ModelSpec`` and a function of the
  input arrays, as httpx's ``MockTransport`` answers from a function; unit tests need no Triton and no torch.
- ``TransformerRunner(name, predictor)``: a request through kxform's own ``TransformerModel`` (decode,
  preprocess, batching, predictor, postprocess, encode) without HTTP, on a ``MockPredictor`` or a real client.
- ``ServeClient``: ``kxform serve`` running as a real process, with V1, V2 REST and gRPC clients.
- ``start_triton``, ``start_serve``, ``ServerProcess``: the same processes for tests that drive them directly.

This module imports no torch, and tritonclient only inside the functions that talk to a real server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kxform.codecs.dtypes import numpy_dtype, v2_to_config_datatype
from kxform.errors import KxformError, RequestError
from kxform.predictor.base import Placement, PredictorSettings
from kxform.spec import ModelSpec, TensorSpec
from kxform.supervisor import Supervised, http_ready, http_status

if TYPE_CHECKING:
    from kxform.model import TransformerModel
    from kxform.predictor.base import PredictorClient

__all__ = [
    "DEV_URL",
    "MockPredictor",
    "Reply",
    "ReplyError",
    "ServeClient",
    "ServerProcess",
    "TransformerRunner",
    "free_port",
    "http_status",
    "kxform_command",
    "predictor_settings",
    "readme_curl_lines",
    "run_readme_curl",
    "running_triton",
    "start_serve",
    "start_server",
    "start_triton",
]

Array = np.ndarray[Any, Any]
Handler = Callable[[dict[str, Array]], "Mapping[str, Any] | Awaitable[Mapping[str, Any]]"]


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the in-memory predictor --------------------------------------------------------------------------


class MockPredictor:
    """A ``PredictorClient`` for one model: ``spec`` answers metadata, config, readiness and labels; ``handler``
    (``{input name: array}`` → ``{output name: array-like}``, sync or async) answers inference.

    Inputs are checked as Triton checks them (model name, input names, datatypes, shapes after the batch axis):
    a mismatch is the ``RequestError`` (400) Triton's would be. Outputs are cast to their declared datatypes.
    ``calls`` holds the inputs of every inference call; set ``ready = False`` to play a predictor that is down.
    """

    def __init__(self, spec: ModelSpec, handler: Handler) -> None:
        self.spec = spec
        self.handler = handler
        self.settings = PredictorSettings("mock:0", shm="none")
        self.calls: list[dict[str, Array]] = []
        self.ready = True

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        outputs: Sequence[str],
        request_id: str = "",
        placement: Placement | None = None,
    ) -> dict[str, Array]:
        self._check_model(model)
        arrays = {name: np.asarray(array) for name, array in inputs.items()}
        self._check_inputs(arrays)
        self.calls.append(arrays)
        answer = self.handler(arrays)
        if inspect.isawaitable(answer):
            answer = await answer
        return {name: self._output(name, answer) for name in outputs}

    async def classify(self, model: str, inputs: Mapping[str, Array], output: str, count: int) -> list[str]:
        self._check_model(model)
        labels = self.spec.labels.get(output, ())
        return [f"0:{index}:{label}" for index, label in enumerate(labels[:count])]

    async def model_metadata(self, model: str) -> dict[str, Any]:
        self._check_model(model)
        return {
            "name": self.spec.name,
            "versions": [self.spec.version] if self.spec.version else [],
            "platform": "kxform_mock",
            "inputs": [self._metadata(tensor) for tensor in self.spec.inputs],
            "outputs": [self._metadata(tensor) for tensor in self.spec.outputs],
        }

    async def model_config(self, model: str) -> dict[str, Any]:
        self._check_model(model)
        return {
            "name": self.spec.name,
            "max_batch_size": self.spec.max_batch_size,
            "input": [self._config(tensor) for tensor in self.spec.inputs],
            "output": [self._config(tensor) for tensor in self.spec.outputs],
        }

    async def server_ready(self) -> bool:
        return self.ready

    async def model_ready(self, model: str) -> bool:
        return self.ready and model == self.spec.name

    async def server_extensions(self) -> frozenset[str]:
        return frozenset({"classification"})

    async def register_shared_memory(self, region: str, key: str, byte_size: int) -> None:
        raise KxformError("MockPredictor has no shared memory: use PredictorSettings(shm='none')")

    async def unregister_shared_memory(self, region: str) -> None:
        return None

    async def shared_memory_regions(self) -> list[str]:
        return []

    async def close(self) -> None:
        return None

    def _check_model(self, model: str) -> None:
        if model != self.spec.name:
            raise RequestError(f"unknown model '{model}': this MockPredictor serves '{self.spec.name}'")

    def _check_inputs(self, arrays: Mapping[str, Array]) -> None:
        expected = {tensor.name: tensor for tensor in self.spec.inputs}
        if set(arrays) != set(expected):
            raise RequestError(f"model '{self.spec.name}' expects inputs {sorted(expected)}, got {sorted(arrays)}")
        for name, array in arrays.items():
            tensor = expected[name]
            shape = tuple(array.shape[1:]) if self.spec.batched else tuple(array.shape)
            if self.spec.batched and (array.ndim == 0 or array.shape[0] > self.spec.max_batch_size):
                raise RequestError(
                    f"input '{name}': batch of {array.shape[0] if array.ndim else 0} rows, "
                    f"max_batch_size is {self.spec.max_batch_size}"
                )
            if not tensor.accepts(shape):
                raise RequestError(f"input '{name}': shape {list(shape)}, expected {list(tensor.shape)}")
            if not _dtype_matches(array, tensor.datatype):
                raise RequestError(f"input '{name}': dtype {array.dtype}, expected {tensor.datatype}")

    def _output(self, name: str, answer: Mapping[str, Any]) -> Array:
        if name not in answer:
            raise KxformError(f"MockPredictor handler returned no output '{name}' (it returned {sorted(answer)})")
        datatype = self.spec.output(name).datatype
        if datatype == "BYTES":
            return np.asarray(answer[name], dtype=np.object_)
        return np.asarray(answer[name], dtype=numpy_dtype(datatype))

    def _metadata(self, tensor: TensorSpec) -> dict[str, Any]:
        shape = [-1, *tensor.shape] if self.spec.batched else list(tensor.shape)
        return {"name": tensor.name, "datatype": tensor.datatype, "shape": shape}

    def _config(self, tensor: TensorSpec) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "data_type": v2_to_config_datatype(tensor.datatype),
            "dims": list(tensor.shape),
        }
        if tensor.name in self.spec.labels:
            entry["label_filename"] = "labels.txt"
        return entry


def _dtype_matches(array: Array, datatype: str) -> bool:
    if datatype == "BYTES":
        return array.dtype.kind in "OSU"
    return bool(array.dtype == numpy_dtype(datatype))


# --- the in-process runner ----------------------------------------------------------------------------


class TransformerRunner:
    """The plugin registered as ``name`` served by kxform's ``TransformerModel`` on ``predictor``, without HTTP.

    ``await runner.v1(instances)`` is a V1 request (its ``predictions``); ``await runner.v2({name: array})`` is a
    V2 request (its output arrays). Bad input raises the ``kxform.RequestError`` the server would answer 400
    with; a bug in a hook raises ``PluginBugError`` (500).
    """

    def __init__(self, name: str, predictor: PredictorClient) -> None:
        from kxform.model import TransformerModel
        from kxform.plugins import load_plugin

        self.name = name
        self.predictor = predictor
        self.model: TransformerModel = TransformerModel(name, load_plugin(name), predictor)

    @property
    def transformer(self) -> Any:
        """The plugin's ``Transformer`` instance."""
        return self.model.plugin.transformer

    async def model_spec(self) -> ModelSpec:
        """The predictor model's spec as kxform reads it (labels included)."""
        return await self.model.model_spec()

    async def v1(self, instances: Sequence[Any], headers: Mapping[str, str] | None = None) -> Any:
        reply, _ = await self.model({"instances": list(instances)}, headers or {})
        return reply["predictions"]

    async def v1_body(self, body: bytes, headers: Mapping[str, str] | None = None) -> Any:
        """A V1 request as raw body bytes (a JSON document, an image, ...) with its headers."""
        reply, _ = await self.model(body, headers or {})
        return reply

    async def v2(self, inputs: Mapping[str, Any], parameters: Mapping[str, Any] | None = None) -> dict[str, Array]:
        from kxform.v2 import V2Request, V2Tensor

        tensors = tuple(V2Tensor.from_array(name, _as_array(value)) for name, value in inputs.items())
        reply, _ = await self.model(V2Request(self.name, tensors, parameters=dict(parameters or {})), {})
        arrays: dict[str, Array] = reply.arrays()
        return arrays


def _as_array(value: Any) -> Array:
    array = np.asarray(value)
    if array.dtype.kind in "SU":  # strings and bytes travel as BYTES elements
        return np.array([v.encode() if isinstance(v, str) else v for v in array.ravel()], np.object_).reshape(
            array.shape
        )
    return array


# --- real servers -------------------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """A ``kxform`` command running as its own process (``kxform.supervisor``), its output in ``log_path``."""

    command: list[str]
    log_path: Path
    ports: dict[str, int]
    env: Mapping[str, str] | None = None  # added to this process's environment
    child: Supervised | None = field(default=None, repr=False)
    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports['http']}"

    @property
    def http_address(self) -> str:
        """``host:port`` of its HTTP endpoint (what ``--predictor_host`` takes)."""
        return f"{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports['grpc']}"

    @property
    def process(self) -> subprocess.Popen[str] | None:
        return self.child.process if self.child is not None else None

    def start(self) -> None:
        env = {**os.environ, **self.env} if self.env is not None else None
        self.child = Supervised(" ".join(self.command[2:4]), self.command, env=env, log_path=self.log_path)
        self.child.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, path: str = "/v2/health/ready", timeout: float = 300.0) -> None:
        assert self.child is not None, "start() first"
        self.child.wait_ready(http_ready(self.http_url + path), timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` (SIGTERM) and return the exit status; the process group is killed after ``timeout``.

        A server this object did not start (``running_triton``) is left alone."""
        if self.child is None:
            return 0
        status = self.child.stop(sig, grace=timeout)
        return int(status if status is not None else 0)


def kxform_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kxform", *args]


def start_server(server: ServerProcess, path: str = "/v2/health/ready", timeout: float = 300.0) -> ServerProcess:
    """Start ``server`` and return it once ``GET path`` answers 200; a server that fails to start is killed."""
    server.start()
    try:
        server.wait_ready(path, timeout)
    except BaseException:
        server.stop(signal.SIGKILL, timeout=5)
        raise
    return server


def running_triton(http: str, grpc: str, timeout: float = 120.0) -> ServerProcess:
    """A Triton that runs already (``host:port`` of its HTTP and gRPC endpoints), once it is ready."""
    host, _, http_port = http.rpartition(":")
    grpc_host, _, grpc_port = grpc.rpartition(":")
    if not (host and http_port.isdigit() and grpc_port.isdigit()) or grpc_host != host:
        raise KxformError(f"Triton at {http!r} / {grpc!r}: give HOST:PORT for both, on the same host")
    server = ServerProcess([], Path(os.devnull), {"http": int(http_port), "grpc": int(grpc_port)}, host=host)
    check = http_ready(server.http_url + "/v2/health/ready")
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise KxformError(f"the Triton at {server.http_url} is not ready after {timeout:.0f}s")
        time.sleep(0.5)
    return server


def start_triton(
    repository: Path,
    log_dir: Path,
    extra: Sequence[str] = (),
    ports: dict[str, int] | None = None,
    wrapper: Sequence[str] = (),
) -> ServerProcess:
    """Start ``kxform triton`` (on free ports unless given) and wait until it is ready.

    ``wrapper`` runs it through another command, which gets the command line as its last arguments
    (``unshare ... sh -c '...; exec "$@"' sh``).
    """
    ports = ports or {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    triton = kxform_command(
        "triton",
        f"--model-repository={repository}",
        f"--http-port={ports['http']}",
        f"--grpc-port={ports['grpc']}",
        f"--metrics-port={ports['metrics']}",
        *extra,
    )
    server = ServerProcess([*wrapper, *triton], log_dir / f"triton-{ports['http']}.log", ports)
    return start_server(server, "/v2/health/ready", 300.0)


def start_serve(
    transformers: Sequence[str],
    predictor_host: str,
    log_dir: Path,
    extra: Sequence[str] = (),
    wait: bool = True,
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start ``kxform serve`` on free ports in front of ``predictor_host`` (``env`` added to its environment);
    wait until it is ready."""
    ports = {"http": free_port(), "grpc": free_port()}
    command = kxform_command(
        "serve",
        *(f"--transformer={name}" for name in transformers),
        f"--predictor_host={predictor_host}",
        f"--http_port={ports['http']}",
        f"--grpc_port={ports['grpc']}",
        *extra,
    )
    server = ServerProcess(command, log_dir / f"serve-{ports['http']}.log", ports, env=env)
    return start_server(server, "/v2/health/ready" if wait else "/v2/health/live", 120.0)


def predictor_settings(triton: ServerProcess, protocol: str, **overrides: Any) -> PredictorSettings:
    """Settings that reach ``triton`` over ``protocol`` ("v2" for HTTP, "grpc-v2")."""
    address = triton.grpc_url if protocol == "grpc-v2" else triton.http_address
    return PredictorSettings(address, protocol, **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP reply: status, headers, and the body parsed as JSON (None when it is not JSON)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def predictions(self) -> Any:
        """The V1 reply's ``predictions``; an error reply raises naming its status and message."""
        document = self.json
        if self.status != 200 or not isinstance(document, dict) or "predictions" not in document:
            raise AssertionError(f"expected a V1 reply, got {self.status}: {self.body[:500]!r}")
        return document["predictions"]


class ReplyError(Exception):
    """A V2 REST or gRPC request that ``kxform serve`` answered with an error: its status and message."""

    def __init__(self, status: int | str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status  # the HTTP status (V2 REST), or the gRPC status code's name ("INVALID_ARGUMENT")
        self.message = message


@dataclass
class ServeClient:
    """``kxform serve`` for one plugin, running for real, and the three ways a client reaches it."""

    name: str
    server: ServerProcess

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url

    def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None, timeout: float = 60) -> Reply:
        """``POST`` raw bytes to this server; any status comes back as a ``Reply``."""
        request = urllib.request.Request(self.http_url + path, data=body, headers=dict(headers or {}), method="POST")
        return _reply(request, timeout)

    def get(self, path: str, timeout: float = 60) -> Reply:
        return _reply(urllib.request.Request(self.http_url + path), timeout)

    def v1(self, instances: Sequence[Any]) -> Reply:
        """``POST /v1/models/NAME:predict`` with ``{"instances": instances}``."""
        body = json.dumps({"instances": list(instances)}).encode()
        return self.post(f"/v1/models/{self.name}:predict", body, {"content-type": "application/json"})

    def v2(self, inputs: Mapping[str, Any], binary: bool = True) -> dict[str, Array]:
        """A V2 REST request through tritonclient (binary tensors unless ``binary=False``): the output arrays."""
        import tritonclient.http as triton_http

        client = triton_http.InferenceServerClient(self.http_url.removeprefix("http://"))
        try:
            tensors = []
            for name, value in inputs.items():
                array = _as_array(value)
                tensor = triton_http.InferInput(name, list(array.shape), _v2_of(array))
                tensor.set_data_from_numpy(array, binary_data=binary)
                tensors.append(tensor)
            try:
                result = client.infer(self.name, tensors)
            except triton_http.InferenceServerException as exc:
                raise ReplyError(int(exc.status() or 0), str(exc.message())) from exc
            return _result_arrays(result)
        finally:
            client.close()

    def grpc(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        """A V2 gRPC ``ModelInfer`` through kserve's ``InferenceGRPCClient``: the output arrays.

        (tritonclient.grpc cannot be loaded beside kserve: their V2 protos collide in protobuf's default pool.)
        """
        from kxform import kserve_import

        kserve_import.load()
        with concurrent.futures.ThreadPoolExecutor(1) as thread:  # its own event loop, even inside an async test
            return thread.submit(asyncio.run, self._grpc(inputs)).result()

    async def _grpc(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        import grpc
        from kserve import InferenceGRPCClient
        from kserve.protocol.infer_type import InferInput, InferRequest

        tensors = []
        for name, value in inputs.items():
            array = _as_array(value)
            tensor = InferInput(name, list(array.shape), _v2_of(array))
            tensor.set_data_from_numpy(array, binary_data=True)
            tensors.append(tensor)
        client = InferenceGRPCClient(self.grpc_url, timeout=60, retries=0)
        try:
            response = await client.infer(InferRequest(self.name, tensors))
        except grpc.RpcError as exc:
            raise ReplyError(exc.code().name, str(exc.details())) from exc
        finally:
            await client.close()
        return {output.name: np.asarray(output.as_numpy()) for output in response.outputs}


def _reply(request: urllib.request.Request, timeout: float) -> Reply:
    """Send ``request``; any status comes back as a ``Reply``."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(int(response.status), dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def _v2_of(array: Array) -> str:
    from kxform.codecs.dtypes import v2_datatype

    return "BYTES" if array.dtype.kind == "O" else v2_datatype(array.dtype)


def _result_arrays(result: Any) -> dict[str, Array]:
    response = result.get_response()
    outputs = response["outputs"] if isinstance(response, dict) else [{"name": o.name} for o in response.outputs]
    return {output["name"]: result.as_numpy(output["name"]) for output in outputs}


# --- the README's curl lines --------------------------------------------------------------------------

DEV_URL = "http://127.0.0.1:8080"  # where `make dev` serves the transformers


def readme_curl_lines(readme: Path) -> list[str]:
    """The ``curl`` command lines of a README, as a user copies them."""
    return [line for line in readme.read_text().splitlines() if line.startswith("curl ")]


def run_readme_curl(line: str, server: ServerProcess | ServeClient, cwd: Path, timeout: float = 60) -> str:
    """Run a README curl line written for ``make dev`` against ``server`` (a free port); its stdout."""
    command = line.replace(DEV_URL, server.http_url)
    assert command != line, f"the README's curl line does not call {DEV_URL}: {line}"
    done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout
