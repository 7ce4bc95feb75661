"""Request envelopes: V1 bodies of any Content-Type, raw images, V2 REST binary bodies (no server)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import orjson
import pytest

from kxform.cloudevents import encode_cloudevent_reply
from kxform.envelope import decode_v1, decode_v2, encode_v1, encode_v2
from kxform.errors import LimitError, RequestError, UnsupportedMediaTypeError
from kxform.limits import configured
from kxform.spec import TensorSpec
from kxform.v2 import decode_rest_request, encode_rest_response

PNG = b"\x89PNG\r\n\x1a\n" + b"rest of the file"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(b'{"instances": [1, 2]}', {"content-type": "application/json"}, id="json"),
        pytest.param(b'{"instances": [1, 2]}', {"content-type": "application/x-www-form-urlencoded"}, id="curl-d"),
        pytest.param(b'{"instances": [1, 2]}', {}, id="no-content-type"),
    ],
)
def test_decode_v1_reads_json_whatever_the_content_type(body: bytes, headers: dict[str, str]) -> None:
    assert decode_v1(body, headers).instances == [1, 2]


@pytest.mark.parametrize(
    "headers", [{"content-type": "image/png"}, {"content-type": "application/octet-stream"}, {}], ids=str
)
def test_decode_v1_takes_a_raw_image_body_as_one_instance(headers: dict[str, str]) -> None:
    assert decode_v1(PNG, headers).instances == [PNG]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"not json", "the request body is not valid JSON", id="garbage"),
        pytest.param(b"", "the request body is empty", id="empty-body"),
        pytest.param(b'{"instances": [', "unexpected end of data at line 1", id="truncated"),
        pytest.param(b'{"instances": [1e400]}', "infinity", id="number-too-large-for-a-double"),
        pytest.param(b'{"inputs": []}', 'no "instances"', id="no-instances"),
        pytest.param(b'{"instances": {"a": 1}}', "must be a list", id="not-a-list"),
        pytest.param(b'{"instances": []}', "is empty", id="empty"),
        pytest.param(b'{"instances": ' + b"[" * 100 + b"]" * 100 + b"}", "--max_json_depth", id="too-deep"),
    ],
)
def test_decode_v1_rejects_what_is_not_a_v1_request(body: bytes, fragment: str) -> None:
    with pytest.raises(RequestError, match=fragment):
        decode_v1(body, {})


def test_encode_v1_wraps_lists_and_keeps_dicts() -> None:
    assert encode_v1([1]) == {"predictions": [1]}
    assert encode_v1({"OUTPUT__0": [[1.0]]}) == {"OUTPUT__0": [[1.0]]}


def binary_body(images: list[bytes]) -> tuple[bytes, str]:
    raw = b"".join(len(i).to_bytes(4, "little") + i for i in images)
    header = {
        "inputs": [
            {"name": "image", "shape": [len(images)], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
        ],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    return head + raw, str(len(head))


def test_binary_v2_body_keeps_each_image_as_bytes() -> None:
    body, length = binary_body([PNG, b"\xff\xd8\xff jpeg"])

    request = decode_rest_request(body, length, "m")
    envelope = decode_v2(request, (TensorSpec("image", "BYTES", ()),))

    assert envelope.instances == [PNG, b"\xff\xd8\xff jpeg"]
    assert envelope.protocol == "v2"


def test_binary_v2_reply_honours_per_output_binary_data() -> None:
    body, length = binary_body([PNG])
    request = decode_rest_request(body, length, "m")
    result = [{"logits": [0.5, 1.5], "class": "cat"}]

    reply, headers = encode_rest_response(
        encode_v2(result, request, "m", (TensorSpec("logits", "FP32", (2,)),)), request
    )

    json_length = int(headers["inference-header-content-length"])
    header = orjson.loads(reply[:json_length])
    assert [o["name"] for o in header["outputs"]] == ["logits"]  # only what was requested
    assert header["outputs"][0]["shape"] == [1, 2]
    np.testing.assert_array_equal(np.frombuffer(reply[json_length:], np.float32), [0.5, 1.5])


def gzip_body(value: object) -> bytes:
    return gzip.compress(orjson.dumps(value))


def test_decode_v1_undoes_gzip_content_encoding() -> None:
    envelope = decode_v1(gzip_body({"instances": [7]}), {"content-encoding": "gzip"})

    assert envelope.instances == [7]


def test_decode_v1_refuses_an_unknown_content_encoding_with_415() -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="Content-Encoding 'br'") as caught:
        decode_v1(b"{}", {"content-encoding": "br"})
    assert caught.value.http_status == 415


def test_decode_v1_refuses_a_gzip_bomb_with_413_naming_the_flag() -> None:
    bomb = gzip.compress(b" " * (2 * 1024 * 1024))
    with configured(max_request_bytes=1024 * 1024), pytest.raises(LimitError, match="--max_request_bytes") as caught:
        decode_v1(bomb, {"content-encoding": "gzip"})
    assert caught.value.http_status == 413


BINARY_EVENT = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "test", "ce-type": "predict"}


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(b'{"instances": [1]}', {**BINARY_EVENT, "content-type": "application/json"}, id="binary-json"),
        pytest.param(
            orjson.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {"instances": [1]}}),
            {"content-type": "application/cloudevents+json"},
            id="structured",
        ),
    ],
)
def test_decode_v1_unwraps_cloudevents(body: bytes, headers: dict[str, str]) -> None:
    envelope = decode_v1(body, headers)

    assert envelope.instances == [1]
    assert envelope.event is not None


def test_decode_v1_takes_a_binary_cloudevent_image_as_one_instance() -> None:
    envelope = decode_v1(PNG, {**BINARY_EVENT, "content-type": "application/octet-stream"})

    assert envelope.instances == [PNG]


def test_cloudevent_without_required_attributes_names_them() -> None:
    with pytest.raises(RequestError, match="ce-id, ce-source, ce-type"):
        decode_v1(b'{"instances": [1]}', {"ce-specversion": "1.0"})


def test_binary_cloudevent_reply_is_a_binary_cloudevent() -> None:
    event = decode_v1(b'{"instances": [1]}', BINARY_EVENT).event
    assert event is not None

    body, headers = encode_cloudevent_reply(event, "m", {"predictions": [2]})

    assert orjson.loads(body) == {"predictions": [2]}
    assert headers["ce-type"] == "io.kserve.inference.response"
    assert headers["ce-source"] == "io.kserve.inference.m"
