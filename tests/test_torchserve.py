"""TorchServe handlers as kxform plugins (kxform.torchserve): seed 004's handler on the real Triton's resnet50.

The reference is TorchServe's own flow in this process: the same handler initialised with TorchServe's
``Context`` and the TorchScript file, then ``handler.handle(rows, context)`` (BaseHandler's preprocess ->
inference with the model here -> postprocess). kxform must give the same top-5 with the model on Triton.
The handler is ``tests/torchserve/custom_handler.py``: the seed's code with its one fix (see that file).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as triton_http
import ts
from model_archiver.model_archiver_config import ModelArchiverConfig
from model_archiver.model_packaging import generate_model_archive
from PIL import Image
from ts.context import Context as TorchServeContext
from ts.context import RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.torch_handler.base_handler import BaseHandler

from kxform.errors import DecodeError, PluginBugError, PluginError, RequestError
from kxform.plugins import load_plugin
from kxform.spec import ModelSpec, TensorSpec
from kxform.testing import ServerProcess, start_serve
from kxform.torchserve import Handler, request_rows
from kxform.torchserve_archive import MarArchive, archive_reference
from kxform.transformer import Context
from tests.torchserve.custom_handler import CustomImageHandler
from tests.torchserve.plugin import Resnet

ROOT = Path(__file__).resolve().parents[1]
HANDLER_FILE = ROOT / "tests" / "torchserve" / "custom_handler.py"
INDEX_TO_NAME = ROOT / "tests" / "torchserve" / "index_to_name.json"
RESNET = ModelSpec(
    "resnet50", "1", (TensorSpec("INPUT__0", "FP32", (3, 224, 224)),), (TensorSpec("OUTPUT__0", "FP32", (1000,)),), 8
)
PLUGIN_NAME = "resnet-torchserve"  # the entry point of the distribution the tests write
ARCHIVE_NAME = "custom-resnet"  # the .mar's modelName


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _images() -> dict[str, bytes]:
    """Real files of several sizes and formats; the largest (1.2 megapixels) is decoded on a worker thread."""
    rng = np.random.default_rng(4)
    gradient = np.linspace(0, 255, 320 * 240 * 3).reshape(240, 320, 3).astype(np.uint8)
    noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    blocks = np.kron(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), np.ones((80, 80, 1), dtype=np.uint8))
    return {
        "cifar10-png": (ROOT / "deploy" / "requests" / "cifar10-image.png").read_bytes(),
        "gradient-png": _png(Image.fromarray(gradient)),
        "noise-jpeg": _jpeg(Image.fromarray(noise)),
        "blocks-1.2mp-jpeg": _jpeg(Image.fromarray(blocks)),
    }


IMAGES = _images()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- TorchServe's own flow, in this process ------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchserve_reference(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``CustomImageHandler`` as TorchServe runs it: initialize with the TorchScript file, then handle."""
    model_dir = tmp_path_factory.mktemp("torchserve-model-dir")
    (model_dir / "model.pt").symlink_to(model_repository / "resnet50" / "1" / "model.pt")
    shutil.copy(INDEX_TO_NAME, model_dir / "index_to_name.json")
    manifest = {"model": {"modelName": "resnet50", "serializedFile": "model.pt", "handler": "custom_handler.py"}}
    metrics = MetricsCacheYamlImpl(config_file_path=str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    metrics.initialize_cache()
    context = TorchServeContext("resnet50", str(model_dir), manifest, 1, None, ts.__version__, True, metrics, {})
    handler = CustomImageHandler()
    handler.initialize(context)
    assert isinstance(handler.model, torch.jit.ScriptModule)  # the real model, loaded by BaseHandler

    def handle(rows: list[dict[str, Any]]) -> list[Any]:
        context.request_processor = [RequestProcessor({}) for _ in rows]
        result: list[Any] = handler.handle(rows, context)
        return result

    return handle


def assert_same_top5(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for got_row, want_row in zip(got, want, strict=True):
        assert [entry["class"] for entry in got_row] == [entry["class"] for entry in want_row]
        np.testing.assert_allclose(
            [entry["probability"] for entry in got_row], [entry["probability"] for entry in want_row], rtol=1e-4
        )


# --- unit: the request shape, loading, errors (no Triton) ----------------------------------------------------


def test_request_rows_are_what_torchserve_hands_a_handler() -> None:
    png = IMAGES["cifar10-png"]
    v1 = [{"data": _b64(png)}, {"b64": _b64(png)}, {"data": {"b64": _b64(png)}}, png, [[0.5]], {"text": "hi"}]

    rows = request_rows(v1, "v1")

    assert rows == [
        {"data": _b64(png)},  # TorchServe's KServe envelope passes V1 instances as they are
        {"data": png},
        {"data": png},
        {"body": png},  # an image sent as the whole body
        {"data": [[0.5]]},
        {"text": "hi"},
    ]
    assert request_rows([png, _b64(png).encode()], "v2") == [{"data": png}, {"data": png}]  # binary, JSON (base64)


def test_plugin_preprocess_and_postprocess_run_the_handler_around_the_model(torchserve_reference: Any) -> None:
    plugin = Resnet()
    ctx = Context(RESNET, "v1", "r1")
    images = list(IMAGES.values())[:3]

    inputs = plugin.preprocess([{"data": _b64(image)} for image in images], ctx)
    with torch.inference_mode():
        logits = torch.jit.load(str(ROOT / "models" / "resnet50" / "1" / "model.pt"))(torch.from_numpy(inputs))
    predictions = plugin.postprocess({"OUTPUT__0": logits.numpy()}, ctx)

    assert inputs.shape == (3, 3, 224, 224)
    assert_same_top5(predictions, torchserve_reference([{"data": _b64(image)} for image in images]))


@pytest.mark.parametrize(
    ("instance", "field"),
    [
        pytest.param({"data": _b64(b"not an image at all")}, "instances[1].data", id="not-an-image"),
        pytest.param({"data": "%%% not base64"}, "instances[1].data", id="not-base64"),
        pytest.param({"b64": "%%%"}, "instances[1].b64", id="b64-not-base64"),
    ],
)
def test_bad_instance_is_a_request_error_naming_it(instance: dict[str, Any], field: str) -> None:
    ctx = Context(RESNET, "v1", "r1")

    with pytest.raises(DecodeError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Resnet().preprocess([{"data": _b64(IMAGES["cifar10-png"])}, instance], ctx)


def test_v2_element_that_is_not_an_image_is_a_request_error_naming_it() -> None:
    elements = [IMAGES["cifar10-png"], b"plain text, not an image"]

    with pytest.raises(DecodeError, match=r"V2 input 'data' element 1 is not an image"):
        Resnet().preprocess(elements, Context(RESNET, "v2"))


def test_truncated_image_is_a_request_error_naming_it() -> None:
    truncated = IMAGES["noise-jpeg"][:2000]

    with pytest.raises(DecodeError, match=r"the request body is a truncated or corrupt image"):
        Resnet().preprocess([truncated], Context(RESNET))


def test_instance_without_data_is_a_request_error_saying_what_to_send() -> None:
    with pytest.raises(RequestError, match=r"instances\[0\] has keys \['image_bytes'\].*send \{\"data\""):
        Resnet().preprocess([{"image_bytes": {"b64": _b64(IMAGES["cifar10-png"])}}], Context(RESNET))


class _Rows(BaseHandler):  # type: ignore[misc]  # TorchServe ships no type information
    """A TorchServe handler of numbers that reads a request header, as handlers do through their context."""

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        return torch.tensor([row["data"] for row in data], dtype=torch.float32)

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        scale = float(self.context.get_request_header(0, "x-scale") or 1)
        return [row * scale for row in data.sum(dim=1).tolist()]


class _UsesModelLayers(_Rows):
    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.model.fc(data)  # type: ignore[no-any-return]  # the model object itself: not under kxform


class _OwnHandle(_Rows):
    def handle(self, data: Any, context: Any) -> Any:
        return super().handle(data, context)


class _ReadsItsOwnFile(_Rows):
    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        with open("/nonexistent/vocabulary.txt"):  # the handler's own bug, not the request's
            return super().preprocess(data)


def _plugin(handler: type[Any]) -> Handler:
    plugin_class = type("Plugin", (Handler,), {"handler": handler, "predictor_model": "sums", "__module__": __name__})
    instance: Handler = plugin_class()
    return instance


SUMS = ModelSpec("sums", "1", (TensorSpec("x", "FP32", (2,)),), (TensorSpec("y", "FP32", (2,)),), 4)


def test_handler_sees_request_headers_and_model_outputs() -> None:
    plugin = _plugin(_Rows)
    ctx = Context(SUMS, "v1", "r1", headers={"x-scale": "10"})

    inputs = plugin.preprocess([{"data": [1, 2]}, {"data": [3, 4]}], ctx)
    result = plugin.postprocess({"y": inputs * 2}, ctx)  # "Triton" doubles: the handler sums and scales

    assert result == [60.0, 140.0]


def test_handler_own_io_error_stays_the_handler_fault() -> None:
    with pytest.raises(FileNotFoundError):  # kxform's TransformerModel makes it a 500 naming the plugin
        _plugin(_ReadsItsOwnFile).preprocess([{"data": [1, 2]}], Context(SUMS))


def test_handler_using_the_model_object_is_a_plugin_error_naming_it() -> None:
    plugin = _plugin(_UsesModelLayers)
    ctx = Context(SUMS)
    inputs = plugin.preprocess([{"data": [1, 2]}], ctx)

    with pytest.raises(PluginBugError, match=r"_UsesModelLayers uses self.model.fc.*lives on Triton.*'sums'"):
        plugin.postprocess({"y": inputs}, ctx)


def test_handler_overriding_handle_is_refused_at_load() -> None:
    with pytest.raises(PluginError, match=r"_OwnHandle overrides handle\(\).*preprocess or postprocess"):
        _plugin(_OwnHandle)


def test_archive_that_is_not_a_mar_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "model.mar").write_bytes(b"not a zip")

    with pytest.raises(PluginError, match=r"model.mar cannot be read as a zip file"):
        archive_reference(str(tmp_path / "model.mar"))
    with pytest.raises(PluginError, match=r"missing.mar does not exist"):
        archive_reference(str(tmp_path / "missing.mar"))


def test_serve_flag_with_a_missing_archive_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kxform.cli import main

    status = main(["serve", "--torchserve_mar", str(tmp_path / "missing.mar")])

    assert status == 2
    assert f"TorchServe archive {tmp_path / 'missing.mar'} does not exist" in capsys.readouterr().err


# --- a .mar built by torch-model-archiver --------------------------------------------------------------------


@pytest.fixture(scope="module")
def mar_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """seed 004's `torch-model-archiver ... --handler handler.py --extra-files ...`, without a model file."""
    export = tmp_path_factory.mktemp("model-store")
    config = ModelArchiverConfig(
        model_name=ARCHIVE_NAME,
        handler=str(HANDLER_FILE),
        version="1.0",
        extra_files=str(INDEX_TO_NAME),
        export_path=str(export),
    )
    generate_model_archive(config)
    return export / f"{ARCHIVE_NAME}.mar"


def test_mar_manifest_names_the_handler_and_model(mar_file: Path) -> None:
    archive = MarArchive.open(mar_file)

    assert (archive.model_name, archive.handler, archive.version) == (ARCHIVE_NAME, "custom_handler.py", "1.0")
    assert {"custom_handler.py", "index_to_name.json"} <= set(archive.members)
    assert archive_reference(f"{mar_file}=resnet50").endswith(f"{ARCHIVE_NAME}:resnet50:{mar_file}")


def test_serve_flag_serves_the_archive_under_its_manifest_name(mar_file: Path) -> None:
    import argparse

    from kxform.settings import add_serve_arguments, serve_settings

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    settings = serve_settings(
        parser.parse_args(["--transformer", "cifar10", "--torchserve-mar", f"{mar_file}=resnet50"])
    )

    assert settings.model_names() == ["cifar10", ARCHIVE_NAME]


def test_mar_loads_as_a_plugin_of_its_handler(mar_file: Path) -> None:
    plugin = load_plugin(archive_reference(f"{mar_file}=resnet50"))
    ctx = Context(RESNET, "v1", "r1")

    inputs = plugin.transformer.preprocess([{"data": _b64(IMAGES["gradient-png"])}], ctx)

    assert plugin.info.describe().startswith(f"handler '{ARCHIVE_NAME} = custom_handler.py' of TorchServe archive")
    assert plugin.predictor_model == "resnet50"
    assert inputs.shape == (1, 3, 224, 224)


def test_mar_of_a_torchserve_default_handler_serves_it_by_name(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"a model file the archive carries; under kxform it stays in the archive")
    config = ModelArchiverConfig(
        model_name="classifier",
        handler="image_classifier",
        version="2",
        serialized_file=str(model),
        extra_files=str(INDEX_TO_NAME),
        export_path=str(tmp_path),
    )
    generate_model_archive(config)

    plugin = load_plugin(archive_reference(str(tmp_path / "classifier.mar")))
    ctx = Context(RESNET, "v1", "r1")
    inputs = plugin.transformer.preprocess([{"data": _b64(IMAGES["noise-jpeg"])}], ctx)
    predictions = plugin.transformer.postprocess({"OUTPUT__0": np.eye(1, 1000, 7, dtype=np.float32) * 50}, ctx)

    assert plugin.predictor_model == "classifier"
    assert inputs.shape == (1, 3, 224, 224)  # ImageClassifier's own transforms
    assert next(iter(predictions[0])) == "cock"  # index_to_name.json's class 7, from the archive's extra files


# --- integration: kxform serve in front of the real Triton ---------------------------------------------------


@pytest.fixture(scope="module")
def serve(triton: ServerProcess, mar_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``kxform serve``: the plugin through an entry point, and the .mar through --torchserve_mar."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "kxform_test_torchserve-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kxform-test-torchserve\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[kxform.transformers]\n{PLUGIN_NAME} = tests.torchserve.plugin:Resnet\n")
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(site), str(ROOT)) if p)
    server = start_serve(
        [PLUGIN_NAME],
        f"127.0.0.1:{triton.ports['http']}",
        tmp_path_factory.mktemp("serve"),
        extra=[f"--torchserve_mar={mar_file}=resnet50"],
        env={"PYTHONPATH": path},
    )
    yield server
    server.stop()


def _post(url: str, body: bytes, content_type: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


SERVED = [pytest.param(PLUGIN_NAME, id="entry-point"), pytest.param(ARCHIVE_NAME, id="mar")]


@pytest.mark.integration
@pytest.mark.parametrize("name", SERVED)
def test_v1_top5_equals_torchserve_with_the_model_in_process(
    serve: ServerProcess, torchserve_reference: Any, name: str
) -> None:
    rows = [{"data": _b64(image)} for image in IMAGES.values()]

    status, reply = _post(
        f"{serve.http_url}/v1/models/{name}:predict", json.dumps({"instances": rows}).encode(), "application/json"
    )

    assert status == 200, reply
    assert_same_top5(reply["predictions"], torchserve_reference(rows))


@pytest.mark.integration
@pytest.mark.parametrize("name", SERVED)
def test_raw_image_body_is_torchserve_body(serve: ServerProcess, torchserve_reference: Any, name: str) -> None:
    image = IMAGES["noise-jpeg"]

    status, reply = _post(f"{serve.http_url}/v1/models/{name}:predict", image, "image/jpeg")

    assert status == 200, reply
    assert_same_top5(reply["predictions"], torchserve_reference([{"body": image}]))


@pytest.mark.integration
@pytest.mark.parametrize("name", SERVED)
def test_non_image_is_a_400_naming_the_field(serve: ServerProcess, name: str) -> None:
    rows = [{"data": _b64(IMAGES["cifar10-png"])}, {"data": _b64(b'{"not": "an image"}')}]

    status, reply = _post(
        f"{serve.http_url}/v1/models/{name}:predict", json.dumps({"instances": rows}).encode(), "application/json"
    )

    assert status == 400
    assert "instances[1].data is not an image" in reply["error"]


@pytest.mark.integration
def test_v2_binary_and_json_top5_equal_torchserve(serve: ServerProcess, torchserve_reference: Any) -> None:
    images = [IMAGES["gradient-png"], IMAGES["blocks-1.2mp-jpeg"]]
    want = torchserve_reference([{"data": image} for image in images])
    client = triton_http.InferenceServerClient(f"127.0.0.1:{serve.ports['http']}", network_timeout=120)
    tensor = triton_http.InferInput("data", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    json_body = {"inputs": [{"name": "data", "shape": [2], "datatype": "BYTES", "data": [_b64(i) for i in images]}]}

    binary = client.infer(ARCHIVE_NAME, [tensor]).as_numpy("predictions")
    status, reply = _post(f"{serve.http_url}/v2/models/{PLUGIN_NAME}/infer", json.dumps(json_body).encode(), "")

    assert_same_top5([json.loads(element) for element in binary], want)
    assert status == 200, reply
    assert_same_top5([json.loads(element) for element in reply["outputs"][0]["data"]], want)


GRPC_CLIENT = textwrap.dedent(
    """
    import sys, numpy as np, tritonclient.grpc as g
    client = g.InferenceServerClient(sys.argv[1])
    tensor = g.InferInput("data", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([open(sys.argv[3], "rb").read()], dtype=np.object_))
    print(client.infer(sys.argv[2], [tensor], client_timeout=120).as_numpy("predictions")[0].decode())
    """
)


@pytest.mark.integration
@pytest.mark.parametrize("name", SERVED)
def test_v2_grpc_top5_equals_torchserve(
    serve: ServerProcess, torchserve_reference: Any, name: str, tmp_path: Path
) -> None:
    # tritonclient.grpc's protos clash with kserve's in one process: the client runs as its own, as users run it.
    (tmp_path / "image.png").write_bytes(IMAGES["cifar10-png"])

    done = subprocess.run(
        [sys.executable, "-c", GRPC_CLIENT, serve.grpc_url, name, str(tmp_path / "image.png")],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )

    assert_same_top5([json.loads(done.stdout)], torchserve_reference([{"data": IMAGES["cifar10-png"]}]))
