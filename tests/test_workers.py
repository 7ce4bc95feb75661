"""``kxform serve --workers N`` as a real process group in front of the real Triton.

Which worker answers a request is the kernel's choice; to see that both serve the one port, each is
stopped (SIGSTOP) in turn while the other takes fresh connections.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from PIL import Image

from kxform.testing import ServerProcess, free_port, kxform_command, start_serve

pytestmark = pytest.mark.integration

MODEL = "test-cifar10"
HANG_GUARD_SECONDS = 90  # not a speed bound: how long a test waits before it calls the server hung


def png_b64(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def request(server: ServerProcess, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection (so that any worker may accept it)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.ports["http"], timeout=60)
    try:
        connection.request(method, path, body, {"content-type": "application/json"} if body else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def predict(server: ServerProcess, seed: int) -> int:
    body = json.dumps({"instances": [{"b64": png_b64(seed)}]})
    return request(server, "POST", f"/v1/models/{MODEL}:predict", body)[0]


def served_requests(server: ServerProcess) -> int:
    status, text = request(server, "GET", "/metrics")
    assert status == 200
    pattern = rf'^kxform_requests_total\{{code="200",model="{MODEL}",protocol="v1"\}} (\S+)$'
    found = re.search(pattern, text.decode(), re.MULTILINE)
    return int(float(found[1])) if found else 0


def workers_of(server: ServerProcess) -> list[psutil.Process]:
    assert server.process is not None
    children = psutil.Process(server.process.pid).children()
    return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


def wait_for_workers(server: ServerProcess, count: int) -> list[psutil.Process]:
    """The supervisor's ``count`` live workers, once it has that many."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while time.monotonic() < deadline:
        try:
            workers = [w for w in workers_of(server) if w.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            workers = []  # one exited while we looked
        if len(workers) == count:
            return workers
        time.sleep(0.2)
    raise AssertionError(f"not {count} workers after {HANG_GUARD_SECONDS}s:\n{server.log()[-3000:]}")


@pytest.fixture(scope="module")
def serve(triton: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_serve(
        [MODEL], f"127.0.0.1:{triton.ports['http']}", tmp_path_factory.mktemp("workers"), extra=["--workers=2"]
    )
    yield server
    server.stop()


def test_two_workers_serve_one_port_and_metrics_count_both(serve: ServerProcess) -> None:
    first, second = wait_for_workers(serve, 2)
    before = served_requests(serve)
    for stopped, serving in ((second, first), (first, second)):
        stopped.send_signal(signal.SIGSTOP)  # every fresh connection now goes to the other worker
        try:
            assert [predict(serve, seed) for seed in range(5)] == [200] * 5, f"worker {serving.pid} alone"
            assert served_requests(serve) - before >= 5
        finally:
            stopped.send_signal(signal.SIGCONT)
        before += 5

    assert served_requests(serve) == before  # each worker's /metrics shows the requests of both


def test_the_group_holds_no_named_semaphore(serve: ServerProcess) -> None:
    # A named semaphore (a multiprocessing Event or Lock) is a /dev/shm file that outlives a supervisor killed
    # together with its resource tracker; readiness goes through a pipe instead.
    assert serve.process is not None
    group = [psutil.Process(serve.process.pid), *wait_for_workers(serve, 2)]
    mapped = {
        process.pid: [m.path for m in process.memory_maps() if m.path.startswith("/dev/shm/sem.")] for process in group
    }
    assert mapped == {process.pid: [] for process in group}


def test_grpc_port_is_served_by_the_workers(serve: ServerProcess) -> None:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(serve.grpc_url) as channel:
        ready = GRPCInferenceServiceStub(channel).ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=30)
    assert ready.ready


def test_a_worker_that_dies_is_replaced_and_serving_goes_on(serve: ServerProcess) -> None:
    first, second = wait_for_workers(serve, 2)
    before = served_requests(serve)

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=HANG_GUARD_SECONDS)
    workers = wait_for_workers(serve, 2)

    assert first.pid not in {w.pid for w in workers}
    assert second.pid in {w.pid for w in workers}
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while predict(serve, 1) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)  # the new worker may still be loading; the other one answers meanwhile
    assert served_requests(serve) >= before  # the dead worker's requests are still counted
    assert "exited with status -9; starting another" in serve.log()


def test_sigterm_stops_every_worker_and_exits_0(triton: ServerProcess, tmp_path: Path) -> None:
    server = start_serve([MODEL], f"127.0.0.1:{triton.ports['http']}", tmp_path, extra=["--workers=2"])
    workers = wait_for_workers(server, 2)
    assert predict(server, 3) == 200

    assert server.stop(signal.SIGTERM) == 0
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert not any(Path("/tmp").glob(f"kxform-metrics-*/counter_{workers[0].pid}.db"))


def test_a_plugin_that_cannot_load_stops_the_group_with_status_1() -> None:
    command = kxform_command(
        "serve",
        "--transformer=no-such-plugin",
        "--predictor_host=127.0.0.1:1",
        f"--http_port={free_port()}",
        f"--grpc_port={free_port()}",
        "--workers=2",
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)

    assert done.returncode != 0
    assert "no-such-plugin" in done.stderr
    assert "before serving; stopping" in done.stderr


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("port", ["http", "grpc"])
def test_a_port_in_use_is_one_line_naming_the_flag(serve: ServerProcess, port: str, workers: int) -> None:
    ports = {"http": free_port(), "grpc": free_port(), port: serve.ports[port]}  # one of them is taken
    command = kxform_command(
        "serve",
        f"--transformer={MODEL}",
        "--predictor_host=127.0.0.1:1",
        f"--http_port={ports['http']}",
        f"--grpc_port={ports['grpc']}",
        f"--workers={workers}",
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)

    assert done.returncode != 0
    if port == "grpc" or workers > 1:
        assert f"cannot listen on 0.0.0.0:{serve.ports[port]} (--{port}_port)" in done.stderr
    else:  # uvicorn's own line
        assert f"error while attempting to bind on address ('0.0.0.0', {serve.ports[port]})" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(
    subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True).returncode != 0,
    reason="needs unshare(1) and the right to make a PID namespace (root)",
)
def test_workers_serve_when_the_supervisor_is_pid_1(triton: ServerProcess, tmp_path: Path) -> None:
    # As in a container whose entrypoint is `kxform serve --workers 2` (no init process).
    ports = {"http": free_port(), "grpc": free_port()}
    command = [
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        *kxform_command(
            "serve",
            f"--transformer={MODEL}",
            f"--predictor_host=127.0.0.1:{triton.ports['http']}",
            f"--http_port={ports['http']}",
            f"--grpc_port={ports['grpc']}",
            "--workers=2",
        ),
    ]
    server = ServerProcess(command, tmp_path / "pid1.log", ports)
    server.start()
    try:
        server.wait_ready(timeout=HANG_GUARD_SECONDS)
        assert predict(server, 4) == 200
    finally:
        server.stop()


@pytest.mark.parametrize("flags", [["--workers=auto", "--enable_grpc"], ["--workers=1", "--enable_grpc"]])
def test_flags_kserve_would_misread_start_the_server(triton: ServerProcess, tmp_path: Path, flags: list[str]) -> None:
    # kserve parses sys.argv with its own parser when imported: `auto` and a bare --enable_grpc are errors there.
    server = start_serve([MODEL], f"127.0.0.1:{triton.ports['http']}", tmp_path, extra=flags)
    try:
        assert predict(server, 5) == 200
    finally:
        assert server.stop() == 0
