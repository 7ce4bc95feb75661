"""Malformed and hostile requests, each with the status it must get: the cases of ``test_hostile``.

Every case is built from bytes as a client would put them on the wire (HTTP/1.1 via ``http.client``,
gRPC via a raw-bytes method on a real channel), so nothing is filtered by a friendly client library.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Reply:
    status: int | str  # HTTP status, or the gRPC status code's name
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpCase:
    id: str
    method: str
    path: str
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()
    status: int = 400
    fragment: str = ""  # the message must contain it (the field, the limit, the flag)


@dataclass(frozen=True)
class GrpcCase:
    id: str
    message: bytes
    code: str = "INVALID_ARGUMENT"
    fragment: str = ""
    metadata: Sequence[tuple[str, str]] = ()


def send_http(port: int, method: str, path: str, body: bytes, headers: Sequence[tuple[str, str]]) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for key, value in headers:
            connection.putheader(key, value)
        if not any(key.lower() == "content-length" for key, _ in headers):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Reply(response.status, _message(response.read()), dict(response.getheaders()))
    finally:
        connection.close()


def _message(body: bytes) -> str:
    """The ``error`` of a JSON error reply, else the body as text."""
    try:
        document = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    return str(document["error"]) if isinstance(document, dict) and "error" in document else body.decode()


def send_grpc(channel: Any, message: bytes, metadata: Sequence[tuple[str, str]] = ()) -> Reply:
    import grpc

    call = channel.unary_unary(GRPC_INFER, request_serializer=None, response_deserializer=None)
    try:
        _, rpc = call.with_call(message, metadata=tuple(metadata) or None, timeout=60)
    except grpc.RpcError as exc:
        return Reply(exc.code().name, exc.details() or "")
    return Reply("OK", "", {k: v for k, v in rpc.initial_metadata()})


# --- bodies ---------------------------------------------------------------------------------------


def png(width: int = 32, height: int = 32, seed: int = 0, mode: str = "RGB") -> bytes:
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with no pixel data: decoding it would need them all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def jpeg_with_unrewritable_exif() -> bytes:
    entries = [(0x0112, 3, 1, b"\x06\x00"), (0x0128, 2, 4, b"abc\0")]  # rotate 90; ResolutionUnit as text
    ifd = b"".join(struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0") for tag, kind, count, value in entries)
    tiff = b"II*\x00" + struct.pack("<IH", 8, len(entries)) + ifd + struct.pack("<I", 0)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, format="JPEG", exif=b"Exif\x00\x00" + tiff)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v1(instances: Any) -> bytes:
    return json.dumps({"instances": instances}).encode()


def v1_image(data: bytes) -> bytes:
    return v1([{"image_bytes": {"b64": b64(data)}}])


def v2_json(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def image_input(**changes: Any) -> dict[str, Any]:
    return {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(png())], **changes}


def v2_binary(header: dict[str, Any], tail: bytes) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + tail, str(len(head))


def bytes_element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


JSON = [("Content-Type", "application/json")]
BINARY_EVENT = [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "test"), ("ce-type", "predict")]


def _v1_cases(big_text: int) -> list[HttpCase]:
    predict = "/v1/models/cifar10:predict"
    text = "/v1/models/text:predict"
    image = png()
    return [
        HttpCase("v1-truncated-json", "POST", predict, b'{"instances": [', JSON, 400, "not valid JSON"),
        HttpCase("v1-empty-body", "POST", predict, b"", JSON, 400, "is empty"),
        HttpCase("v1-garbage", "POST", predict, b"\x00\x01garbage", (), 400, "not valid JSON"),
        HttpCase("v1-number-too-large", "POST", predict, b'{"instances": [1e999]}', JSON, 400, "infinity"),
        HttpCase(
            "v1-too-deep",
            "POST",
            predict,
            b'{"instances": ' + b"[" * 200 + b"]" * 200 + b"}",
            JSON,
            400,
            "--max_json_depth",
        ),
        HttpCase("v1-json-array", "POST", predict, b"[1, 2]", JSON, 400, 'no "instances"'),
        HttpCase("v1-no-instances", "POST", predict, b'{"inputs": []}', JSON, 400, 'no "instances"'),
        HttpCase("v1-instances-object", "POST", predict, b'{"instances": {"a": 1}}', JSON, 400, "must be a list"),
        HttpCase("v1-instances-empty", "POST", predict, b'{"instances": []}', JSON, 400, "is empty"),
        HttpCase("v1-too-many-instances", "POST", predict, v1([1] * 1025), JSON, 413, "--max_instances"),
        HttpCase("v1-body-too-large", "POST", predict, b" " * 3_000_000, JSON, 413, "--max_request_bytes"),
        HttpCase(
            "v1-declared-too-large",
            "POST",
            predict,
            b"{}",
            [("Content-Length", "999999999999")],
            413,
            "--max_request_bytes",
        ),
        HttpCase(
            "v1-gzip-bomb",
            "POST",
            predict,
            gzip.compress(b" " * 20_000_000),
            [("Content-Encoding", "gzip")],
            413,
            "--max_request_bytes",
        ),
        HttpCase(
            "v1-gzip-truncated",
            "POST",
            predict,
            gzip.compress(v1_image(image))[:-20],
            [("Content-Encoding", "gzip")],
            400,
            "gzip",
        ),
        HttpCase("v1-gzip-not-gzip", "POST", predict, b"plain", [("Content-Encoding", "gzip")], 400, "not valid gzip"),
        HttpCase("v1-brotli", "POST", predict, b"\x0b\x02\x80", [("Content-Encoding", "br")], 415, "'br'"),
        HttpCase(
            "v1-bad-base64",
            "POST",
            predict,
            v1([{"image_bytes": {"b64": "not base64!"}}]),
            JSON,
            400,
            "instances[0].image_bytes.b64 is not valid base64",
        ),
        HttpCase(
            "v1-b64-not-image",
            "POST",
            predict,
            v1([{"image_bytes": {"b64": b64(b"hello world")}}]),
            JSON,
            400,
            "instances[0] is not an image",
        ),
        HttpCase(
            "v1-truncated-png", "POST", predict, v1_image(image[: len(image) // 2]), JSON, 400, "truncated or corrupt"
        ),
        HttpCase("v1-wrong-image-key", "POST", predict, v1([{"picture": b64(image)}]), JSON, 400, "no image"),
        HttpCase("v1-image-is-number", "POST", predict, v1([42]), JSON, 400, "instances[0] is int"),
        HttpCase("v1-b64-not-string", "POST", predict, v1([{"b64": 5}]), JSON, 400, "must be a base64 string"),
        HttpCase(
            "v1-wide-image", "POST", predict, v1_image(png_header_only(40000, 1)), JSON, 400, "--max_image_aspect_ratio"
        ),
        HttpCase(
            "v1-very-wide-image",
            "POST",
            predict,
            v1_image(png_header_only(89_000_000, 1)),
            JSON,
            400,
            "--max_image_aspect_ratio",
        ),
        HttpCase(
            "v1-too-many-pixels",
            "POST",
            predict,
            v1_image(png_header_only(20000, 20000)),
            JSON,
            413,
            "--max_image_pixels",
        ),
        HttpCase("v1-image-wrong-size", "POST", predict, v1_image(png(64, 64)), JSON, 400, "32x32"),
        HttpCase(
            "v1-image-ctype-garbage",
            "POST",
            predict,
            b"not a png",
            [("Content-Type", "image/png")],
            400,
            "not an image",
        ),
        HttpCase("v1-text-too-long", "POST", text, v1(["a" * big_text]), JSON, 413, "--max_string_bytes"),
        HttpCase("v1-text-number", "POST", text, v1([3.5]), JSON, 400, "instances[0] is float, not text"),
        HttpCase("v1-text-object", "POST", text, v1([{"words": "x"}]), JSON, 400, "instances[0] is dict"),
        HttpCase(
            "v1-ce-missing-id",
            "POST",
            predict,
            v1_image(image),
            [("ce-specversion", "1.0"), ("ce-source", "s"), ("ce-type", "t"), *JSON],
            400,
            "ce-id",
        ),
        HttpCase("v1-ce-bad-json", "POST", predict, b"{nope", [*BINARY_EVENT, *JSON], 400, "not valid JSON"),
        HttpCase(
            "v1-ce-structured-no-data",
            "POST",
            predict,
            json.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": "t"}).encode(),
            [("Content-Type", "application/cloudevents+json")],
            400,
            '"data"',
        ),
        HttpCase(
            "v1-ce-structured-not-json",
            "POST",
            predict,
            b"<xml/>",
            [("Content-Type", "application/cloudevents+json")],
            400,
            "not valid JSON",
        ),
        HttpCase(
            "v1-ce-wrong-version",
            "POST",
            predict,
            v1_image(image),
            [("ce-specversion", "0.3"), ("ce-id", "1"), ("ce-source", "s"), ("ce-type", "t")],
            400,
            "only CloudEvents 1.0",
        ),
        HttpCase("v1-unknown-model", "POST", "/v1/models/nope:predict", v1([1]), JSON, 404, "no model named 'nope'"),
        HttpCase("v1-get-predict", "GET", predict, b"", (), 405, "use POST"),
        HttpCase("v1-explain", "POST", "/v1/models/cifar10:explain", v1([1]), JSON, 404, "no explainer"),
        HttpCase("unknown-route", "GET", "/v3/whatever", b"", (), 404, "no route"),
        HttpCase("repository-unload-off", "POST", "/v2/repository/models/cifar10/unload", b"", (), 404, "no route"),
        HttpCase("repository-index-off", "POST", "/v2/repository/index", b"{}", JSON, 404, "no route"),
        HttpCase(
            "plugin-bug",
            "POST",
            "/v1/models/test-buggy-postprocess:predict",
            v1_image(image),
            JSON,
            500,
            "transformer 'test-buggy-postprocess' failed in postprocess (KeyError); this is a bug in the plugin",
        ),
        HttpCase(
            "header-too-large", "GET", "/v2/health/live", b"", [("X-Big", "a" * 1_000_000)], 431, "--max_header_bytes"
        ),
        HttpCase(
            "too-many-headers",
            "GET",
            "/v2/health/live",
            b"",
            [(f"X-H{i}", "1") for i in range(5000)],
            431,
            "--max_headers",
        ),
    ]


def _v2_json_cases() -> list[HttpCase]:
    infer = "/v2/models/cifar10/infer"

    def case(case_id: str, body: bytes, fragment: str, status: int = 400, path: str = infer) -> HttpCase:
        return HttpCase(case_id, "POST", path, body, JSON, status, fragment)

    return [
        case("v2-datatype-null", v2_json(image_input(datatype=None)), "inputs[0].datatype None"),
        case("v2-datatype-number", v2_json(image_input(datatype=7)), "inputs[0].datatype 7"),
        case("v2-datatype-unknown", v2_json(image_input(datatype="STRING")), "inputs[0].datatype 'STRING'"),
        case("v2-shape-minus-one", v2_json(image_input(shape=[-1])), "inputs[0].shape must be a list"),
        case("v2-shape-negative", v2_json(image_input(shape=[1, -3])), "inputs[0].shape"),
        case("v2-shape-not-list", v2_json(image_input(shape="1")), "inputs[0].shape"),
        case("v2-shape-float", v2_json(image_input(shape=[1.5])), "inputs[0].shape"),
        case("v2-shape-bool", v2_json(image_input(shape=[True])), "inputs[0].shape"),
        case("v2-shape-huge", v2_json(image_input(shape=[2**40, 2**40])), "--max_tensor_elements", 413),
        case("v2-shape-rank", v2_json(image_input(shape=[1] * 40)), "dimensions"),
        case("v2-data-null", v2_json(image_input(data=None)), "inputs[0].data"),
        case("v2-data-number", v2_json(image_input(data=5)), "inputs[0].data"),
        case("v2-data-object", v2_json(image_input(data={"a": 1})), "inputs[0].data"),
        case("v2-data-missing", v2_json({"name": "image", "datatype": "BYTES", "shape": [1]}), "neither data"),
        case("v2-data-count", v2_json(image_input(shape=[2])), "needs 2"),
        case("v2-data-not-strings", v2_json(image_input(data=[1])), "not a string"),
        case(
            "v2-fp32-strings",
            v2_json({"name": "image", "datatype": "FP32", "shape": [1], "data": ["a"]}),
            "inputs[0].data",
        ),
        case("v2-same-name-twice", v2_json(image_input(), image_input()), "appears twice"),
        case("v2-inputs-missing", b'{"id": "x"}', '"inputs" must be a non-empty list'),
        case("v2-inputs-empty", v2_json(), '"inputs" must be a non-empty list'),
        case("v2-inputs-not-objects", b'{"inputs": [1]}', "inputs[0] must be an object"),
        case("v2-name-missing", v2_json(image_input(name=None)), "inputs[0].name"),
        case("v2-wrong-input-name", v2_json(image_input(name="pixels")), "one input named 'image'"),
        case("v2-outputs-not-list", v2_json(image_input(), outputs={"name": "x"}), '"outputs" must be a list'),
        case("v2-output-without-name", v2_json(image_input(), outputs=[{}]), "outputs[0].name"),
        case("v2-output-not-object", v2_json(image_input(), outputs=["logits"]), "outputs[0] must be an object"),
        case("v2-output-unknown", v2_json(image_input(), outputs=[{"name": "nope"}]), "requested output(s) 'nope'"),
        case("v2-parameters-request", v2_json(image_input(), parameters=[1]), "parameters must be an object"),
        case("v2-parameters-input", v2_json(image_input(parameters="x")), "inputs[0].parameters must be an object"),
        case(
            "v2-parameters-output",
            v2_json(image_input(), outputs=[{"name": "logits", "parameters": 3}]),
            "outputs[0].parameters must be an object",
        ),
        case("v2-parameter-nested", v2_json(image_input(), parameters={"a": {"b": 1}}), "parameters.a must be"),
        case("v2-id-not-string", v2_json(image_input(), id=5), '"id" must be a string'),
        case(
            "v2-base64-param-invalid",
            v2_json(image_input(data=["%%%"], parameters={"content_type": "base64"})),
            "is not valid base64",
        ),
        case("v2-not-an-image", v2_json(image_input(data=["hello"])), "instances[0] is not an image"),
        case("v2-bad-json", b'{"inputs": [', "not valid JSON"),
        case(
            "v2-unknown-version",
            v2_json(image_input()),
            "has no version '999'",
            404,
            "/v2/models/cifar10/versions/999/infer",
        ),
        case("v2-unknown-model", v2_json(image_input()), "no model named 'nope'", 404, "/v2/models/nope/infer"),
        HttpCase("v2-get-infer", "GET", infer, b"", (), 405, "use POST"),
        HttpCase("v2-metadata-unknown-version", "GET", "/v2/models/cifar10/versions/7", b"", (), 404, "version '7'"),
    ]


def _v2_binary_cases() -> list[HttpCase]:
    infer = "/v2/models/cifar10/infer"
    image = png()
    element = bytes_element(image)
    header = {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(element)}}
        ]
    }
    body, length = v2_binary(header, element)

    def case(case_id: str, data: bytes, header_length: str, fragment: str) -> HttpCase:
        headers = [("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", header_length)]
        return HttpCase(case_id, "POST", infer, data, headers, 400, fragment)

    def with_input(**changes: Any) -> tuple[bytes, str]:
        return v2_binary({"inputs": [{**header["inputs"][0], **changes}]}, element)

    def sized(size: object) -> tuple[bytes, str]:
        return with_input(parameters={"binary_data_size": size})

    return [
        case("bin-length-superscript", body, "²", "Inference-Header-Content-Length"),
        case("bin-length-5000-digits", body, "9" * 5000, "Inference-Header-Content-Length"),
        case("bin-length-negative", body, "-5", "Inference-Header-Content-Length"),
        case("bin-length-past-end", body, str(len(body) + 1), "Inference-Header-Content-Length"),
        case("bin-length-too-short", body, str(int(length) - 3), "not valid JSON"),
        case("bin-size-past-end", *sized(len(element) + 10), "runs past the end"),
        case("bin-size-negative", *sized(-1), "binary_data_size must be a non-negative integer"),
        case("bin-size-string", *sized("12"), "binary_data_size must be a non-negative integer"),
        case("bin-trailing-bytes", body + b"extra", length, "bytes after the last binary tensor"),
        case("bin-data-and-size", *with_input(data=["x"]), "both data and parameters.binary_data_size"),
        case(
            "bin-bytes-truncated-prefix",
            *v2_binary({"inputs": [{**header["inputs"][0], "parameters": {"binary_data_size": 2}}]}, b"\x05\x00"),
            "too few for 1 BYTES elements",
        ),
        case(
            "bin-bytes-element-past-end",
            *v2_binary(
                {"inputs": [{**header["inputs"][0], "parameters": {"binary_data_size": 6}}]}, b"\x09\x00\x00\x00ab"
            ),
            "ends inside BYTES element 0",
        ),
        case(
            "bin-fp32-wrong-size",
            *v2_binary(
                {
                    "inputs": [
                        {"name": "image", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 5}}
                    ]
                },
                b"12345",
            ),
            "needs 12",
        ),
        case(
            "bin-not-an-image",
            *v2_binary(
                {"inputs": [{**header["inputs"][0], "parameters": {"binary_data_size": 9}}]}, bytes_element(b"hello")
            ),
            "instances[0] is not an image",
        ),
    ]


def http_cases(big_text: int) -> list[HttpCase]:
    return [*_v1_cases(big_text), *_v2_json_cases(), *_v2_binary_cases()]


def grpc_cases() -> list[GrpcCase]:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    image = png()

    def infer(model: str = "cifar10", raw: Sequence[bytes] | None = None, **tensor: Any) -> Any:
        request = pb.ModelInferRequest(model_name=model)
        entry = {"name": "image", "datatype": "BYTES", "shape": [1], **tensor}
        contents = entry.pop("contents", None)
        added = request.inputs.add(**entry)
        if contents is not None:
            for key, values in contents.items():
                getattr(added.contents, key).extend(values)
        request.raw_input_contents.extend([bytes_element(image)] if raw is None else raw)
        return request

    def case(case_id: str, message: Any, fragment: str, code: str = "INVALID_ARGUMENT") -> GrpcCase:
        return GrpcCase(case_id, message if isinstance(message, bytes) else message.SerializeToString(), code, fragment)

    duplicate = infer()
    duplicate.inputs.add(name="image", datatype="BYTES", shape=[1])
    duplicate.raw_input_contents.append(bytes_element(image))
    unknown_output = infer()
    unknown_output.outputs.add(name="nope")
    bad_id = infer()
    bad_id.id = "line\r\nbreak é"
    unset_parameter = infer()
    unset_parameter.parameters["x"].SetInParent()
    return [
        case("grpc-not-protobuf", b"\xff\xff\xff\xff garbage", "not a ModelInferRequest message"),
        case("grpc-empty-message", b"", "has no inputs"),
        case("grpc-unknown-datatype", infer(datatype="STRING"), "inputs[0].datatype 'STRING'"),
        case("grpc-empty-datatype", infer(datatype=""), "inputs[0].datatype ''"),
        case("grpc-negative-shape", infer(shape=[-1]), "inputs[0].shape"),
        case("grpc-huge-shape", infer(shape=[2**40, 2**20]), "--max_tensor_elements", "RESOURCE_EXHAUSTED"),
        case("grpc-raw-count", infer(raw=[bytes_element(image)] * 2), "raw contents"),
        case("grpc-wrong-contents", infer(raw=[], datatype="FP32", contents={"int_contents": [1]}), "fp32_contents"),
        case(
            "grpc-contents-count",
            infer(raw=[], datatype="FP32", shape=[3], contents={"fp32_contents": [1.0]}),
            "needs 3",
        ),
        case(
            "grpc-fp16-typed", infer(raw=[], datatype="FP16", contents={"fp32_contents": [1.0]}), "raw_input_contents"
        ),
        case("grpc-duplicate-input", duplicate, "appears twice"),
        case("grpc-unknown-output", unknown_output, "requested output(s) 'nope'"),
        case("grpc-unset-parameter", unset_parameter, "parameters['x'] has no value"),
        case("grpc-not-an-image", infer(raw=[bytes_element(b"hello")]), "instances[0] is not an image"),
        case("grpc-unknown-model", infer(model="nope"), "no model named 'nope'", "NOT_FOUND"),
        case("grpc-unknown-version", _versioned(infer(), "999"), "has no version '999'", "NOT_FOUND"),
        GrpcCase("grpc-id-with-crlf", bad_id.SerializeToString(), "OK", ""),
        GrpcCase("grpc-request-id-unsafe", infer().SerializeToString(), "OK", "", (("x-request-id", "has space"),)),
    ]


def _versioned(message: Any, version: str) -> Any:
    message.model_version = version
    return message


ValidRequest = Callable[[], Reply]
