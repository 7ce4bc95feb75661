"""TorchScript models with string I/O under ``kxform triton``: List[str] in, List[str] out, batched.

Triton's PyTorch backend passes a ``TYPE_STRING`` input as one ``List[str]`` holding the strings of
every request of a batch, and a returned ``List[str]`` back as BYTES; the adapter must do the same.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from kxform.errors import PredictorError, RequestError
from kxform.predictor import PredictorClient, PredictorSettings, create_predictor, load_model_spec
from kxform.testing import ServerProcess, start_triton

pytestmark = pytest.mark.integration


class Strings(torch.nn.Module):
    """Per string: [length, count of "a"], the string upper-cased, and how many strings forward saw."""

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        counts = torch.tensor([[float(len(t)), float(t.count("a"))] for t in texts]).reshape(-1, 2)
        seen = torch.full([len(texts), 1], len(texts), dtype=torch.int64)
        return counts, [t.upper() for t in texts], seen


class Upper(torch.nn.Module):
    def forward(self, texts: list[str]) -> list[str]:
        return [t.upper() for t in texts]


class Doubled(torch.nn.Module):
    """Two strings back for each one in: more than its config's dims [1] per batch row hold."""

    def forward(self, texts: list[str]) -> list[str]:
        return texts + texts


def write_models(repo: Path) -> None:
    for name, module in (("strings", Strings()), ("upper", Upper()), ("doubled", Doubled())):
        (repo / name / "1").mkdir(parents=True)
        torch.jit.script(module).save(str(repo / name / "1" / "model.pt"))
    (repo / "strings" / "labels.txt").write_text("length\na_count\n")
    (repo / "strings" / "config.pbtxt").write_text(
        'platform: "pytorch_libtorch"\nmax_batch_size: 8\n'
        'input [ { name: "INPUT__0" data_type: TYPE_STRING dims: [1] } ]\n'
        'output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [2] label_filename: "labels.txt" },'
        ' { name: "OUTPUT__1" data_type: TYPE_STRING dims: [1] },'
        ' { name: "OUTPUT__2" data_type: TYPE_INT64 dims: [1] } ]\n'
        # a long queue delay: concurrent requests are sure to be handed to the model together
        "dynamic_batching { max_queue_delay_microseconds: 200000 }\n"
    )
    (repo / "upper" / "config.pbtxt").write_text(
        'platform: "pytorch_libtorch"\nmax_batch_size: 0\n'
        'input [ { name: "INPUT__0" data_type: TYPE_STRING dims: [-1] } ]\n'
        'output [ { name: "OUTPUT__0" data_type: TYPE_STRING dims: [-1] } ]\n'
    )
    (repo / "doubled" / "config.pbtxt").write_text(
        'platform: "pytorch_libtorch"\nmax_batch_size: 4\n'
        'input [ { name: "INPUT__0" data_type: TYPE_STRING dims: [1] } ]\n'
        'output [ { name: "OUTPUT__0" data_type: TYPE_STRING dims: [1] } ]\n'
    )


@pytest.fixture(scope="module")
def string_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("strings")
    write_models(repo)
    server = start_triton(repo, repo)
    yield server
    server.stop()


@pytest.fixture(params=[pytest.param("v2", id="http"), pytest.param("grpc-v2", id="grpc")])
async def predictor(request: pytest.FixtureRequest, string_triton: ServerProcess) -> AsyncIterator[PredictorClient]:
    port = string_triton.ports["grpc" if request.param == "grpc-v2" else "http"]
    client = create_predictor(PredictorSettings(f"127.0.0.1:{port}", request.param, retries=0))
    yield client
    await client.close()


def strings(*texts: str) -> np.ndarray:
    return np.array([[t.encode()] for t in texts], dtype=np.object_)


async def test_batched_strings_arrive_as_one_list_and_come_back_shaped(predictor: PredictorClient) -> None:
    texts = ["banana", "", "naïve café"]

    outputs = await predictor.infer("strings", {"INPUT__0": strings(*texts)}, ["OUTPUT__0", "OUTPUT__1", "OUTPUT__2"])

    counts, upper, _ = torch.jit.script(Strings())(texts)  # in-process: TorchScript's str ops, not Python's
    assert outputs["OUTPUT__1"].shape == (3, 1)
    assert outputs["OUTPUT__1"].ravel().tolist() == [t.encode() for t in upper]
    np.testing.assert_array_equal(outputs["OUTPUT__0"], counts.numpy())
    assert outputs["OUTPUT__2"].ravel().tolist() == [3, 3, 3]


async def test_dynamic_batcher_merges_string_requests_and_splits_the_replies(predictor: PredictorClient) -> None:
    requests = [[f"request {i} row {j} {'a' * i}" for j in range(1 + i % 3)] for i in range(12)]

    replies = await asyncio.gather(
        *(predictor.infer("strings", {"INPUT__0": strings(*texts)}, ["OUTPUT__1", "OUTPUT__2"]) for texts in requests)
    )

    for texts, reply in zip(requests, replies, strict=True):
        assert [v.decode() for v in reply["OUTPUT__1"].ravel()] == [t.upper() for t in texts]
    seen = [int(reply["OUTPUT__2"].max()) for reply in replies]
    assert max(seen) > 3, seen  # some forward call held the strings of several requests


async def test_unbatched_string_model_returns_its_variable_dims(predictor: PredictorClient) -> None:
    texts = np.array([b"one", b"two", b"three", b"four"], dtype=np.object_)

    outputs = await predictor.infer("upper", {"INPUT__0": texts}, ["OUTPUT__0"])

    assert outputs["OUTPUT__0"].tolist() == [b"ONE", b"TWO", b"THREE", b"FOUR"]


async def test_string_that_is_not_utf8_is_refused_naming_the_input(predictor: PredictorClient) -> None:
    with pytest.raises(RequestError, match=r"INPUT__0: element 1 is not UTF-8 text"):
        await predictor.infer("strings", {"INPUT__0": np.array([[b"ok"], [b"\xff"]], dtype=np.object_)}, ["OUTPUT__1"])


async def test_more_strings_than_the_dims_hold_is_an_error_naming_the_output(predictor: PredictorClient) -> None:
    with pytest.raises(
        PredictorError, match=r"OUTPUT__0: the model returned 4 strings, .* dims \[1\] for a batch of 2"
    ):
        await predictor.infer("doubled", {"INPUT__0": strings("a", "b")}, ["OUTPUT__0"])


def test_v2_json_strings_over_http(string_triton: ServerProcess) -> None:
    body = {"inputs": [{"name": "INPUT__0", "shape": [2, 1], "datatype": "BYTES", "data": ["abc", "xyz"]}]}
    request = urllib.request.Request(
        f"{string_triton.http_url}/v2/models/strings/infer", data=json.dumps(body).encode()
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        outputs = {o["name"]: o for o in json.loads(reply.read())["outputs"]}

    assert (outputs["OUTPUT__1"]["datatype"], outputs["OUTPUT__1"]["shape"]) == ("BYTES", [2, 1])
    assert outputs["OUTPUT__1"]["data"] == ["ABC", "XYZ"]


async def test_labels_of_a_string_input_model_are_read_with_an_empty_string_probe(predictor: PredictorClient) -> None:
    spec = await load_model_spec(predictor, "strings")

    assert spec.labels == {"OUTPUT__0": ("length", "a_count")}
