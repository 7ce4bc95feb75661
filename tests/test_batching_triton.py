"""Cross-request batching through ``kxform serve`` against the real Triton: answers, isolation, outages.

``kxform serve`` batches by default (``--batch_max_delay_us``); these tests send concurrent single-image
requests, as many clients would, and check what each client gets and what Triton executed.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kxform.testing import ServerProcess, start_serve, start_triton
from tests.test_resilience import tritonserver_pid

pytestmark = pytest.mark.integration

CONCURRENT = 32
MODEL = "test-cifar10"


def png_b64(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def predict(server: ServerProcess, instance: dict[str, Any], timeout: float = 60) -> tuple[int, dict[str, Any]]:
    """One V1 request on its own connection, as an independent client sends it."""
    connection = http.client.HTTPConnection("127.0.0.1", server.ports["http"], timeout=timeout)
    try:
        body = json.dumps({"instances": [instance]})
        connection.request("POST", f"/v1/models/{MODEL}:predict", body, {"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def predict_together(server: ServerProcess, instances: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Every instance in its own request, all released at the same moment; replies in the same order."""
    start = threading.Barrier(len(instances))

    def send(instance: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        start.wait()
        return predict(server, instance)

    with ThreadPoolExecutor(max_workers=len(instances)) as clients:
        return list(clients.map(send, instances))


def get_json(port: int, path: str) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def triton_counts(triton: ServerProcess) -> tuple[int, int]:
    """Triton's own inference and execution counts of cifar10."""
    [stats] = get_json(triton.ports["http"], "/v2/models/cifar10/stats")["model_stats"]
    return int(stats["inference_count"]), int(stats["execution_count"])


def kxform_predictor_calls(server: ServerProcess) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.ports["http"], timeout=30)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    found = re.search(r'^kxform_batch_size_count\{model="cifar10"\} (\S+)$', text, re.MULTILINE)
    return int(float(found[1])) if found else 0


@pytest.fixture(scope="module")
def serve(triton: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_serve([MODEL], f"127.0.0.1:{triton.ports['http']}", tmp_path_factory.mktemp("batching"))
    yield server
    server.stop()


def test_concurrent_requests_get_the_answers_of_sequential_ones_in_fewer_executions(
    serve: ServerProcess, triton: ServerProcess
) -> None:
    instances = [{"b64": png_b64(seed)} for seed in range(CONCURRENT)]
    sequential = [predict(serve, instance) for instance in instances]
    inferences_before, executions_before = triton_counts(triton)
    calls_before = kxform_predictor_calls(serve)

    together = predict_together(serve, instances)

    inferences, executions = triton_counts(triton)
    assert [status for status, _ in together] == [200] * CONCURRENT
    for (_, alone), (_, batched) in zip(sequential, together, strict=True):
        [expected], [got] = alone["predictions"], batched["predictions"]
        assert got["class"] == expected["class"]
        np.testing.assert_allclose(got["logits"], expected["logits"], atol=1e-5)
    assert inferences - inferences_before == CONCURRENT
    assert executions - executions_before < CONCURRENT
    assert kxform_predictor_calls(serve) - calls_before < CONCURRENT  # kxform joined them, not only Triton


def test_one_bad_request_among_concurrent_ones_gets_its_400_and_the_others_their_answers(
    serve: ServerProcess,
) -> None:
    instances: list[dict[str, Any]] = [{"b64": png_b64(seed)} for seed in range(CONCURRENT)]
    instances[13] = {"b64": "this is not base64!"}
    expected = [predict(serve, instance) for instance in instances]

    replies = predict_together(serve, instances)

    statuses = [status for status, _ in replies]
    assert statuses == [400 if i == 13 else 200 for i in range(CONCURRENT)]
    assert "b64" in replies[13][1]["error"]
    for index, ((_, alone), (_, batched)) in enumerate(zip(expected, replies, strict=True)):
        if index != 13:
            np.testing.assert_allclose(
                batched["predictions"][0]["logits"], alone["predictions"][0]["logits"], atol=1e-5
            )


def test_a_predictor_outage_during_a_batch_gives_every_member_503(model_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "cifar10").symlink_to(model_repository / "cifar10")
    predictor = start_triton(repo, tmp_path)
    server = start_serve([MODEL], f"127.0.0.1:{predictor.ports['http']}", tmp_path)
    members = 8
    try:
        assert predict(server, {"b64": png_b64(0)})[0] == 200
        calls_before = kxform_predictor_calls(server)
        frozen = tritonserver_pid(predictor)
        os.kill(frozen, signal.SIGSTOP)  # calls reach Triton's socket and wait there
        with ThreadPoolExecutor(max_workers=members) as clients:
            replies = [clients.submit(predict, server, {"b64": png_b64(seed)}) for seed in range(members)]
            time.sleep(2)  # not a bound on anything: time for every request to be sent and waiting
            os.killpg(frozen, signal.SIGKILL)  # the outage: Triton (and its stubs) die with the batch in flight

            statuses = [reply.result()[0] for reply in replies]
        assert statuses == [503] * members
        assert kxform_predictor_calls(server) - calls_before < members  # they were batched
        assert predict(server, {"b64": png_b64(0)})[0] == 503  # and the server keeps answering
    finally:
        server.stop()
        predictor.stop(signal.SIGKILL)
