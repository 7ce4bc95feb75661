"""Request envelopes: V1 bodies of any Content-Type, raw images, V2 REST binary bodies (no server)."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from kxform.envelope import decode_v1, decode_v2, encode_v1, encode_v2
from kxform.errors import RequestError
from kxform.predictor.metadata import TensorSpec
from kxform.rest import decode_infer_request, encode_infer_response

PNG = b"\x89PNG\r\n\x1a\n" + b"rest of the file"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param({"instances": [1, 2]}, {"content-type": "application/json"}, id="dict"),
        pytest.param(b'{"instances": [1, 2]}', {"content-type": "application/x-www-form-urlencoded"}, id="curl-d"),
        pytest.param(b'{"instances": [1, 2]}', {}, id="no-content-type"),
    ],
)
def test_decode_v1_reads_json_whatever_the_content_type(body: object, headers: dict[str, str]) -> None:
    assert decode_v1(body, headers).instances == [1, 2]


@pytest.mark.parametrize("headers", [{"content-type": "image/png"}, {}])
def test_decode_v1_takes_a_raw_image_body_as_one_instance(headers: dict[str, str]) -> None:
    assert decode_v1(PNG, headers).instances == [PNG]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"not json", "neither JSON nor an image", id="garbage"),
        pytest.param({"inputs": []}, 'no "instances"', id="no-instances"),
        pytest.param({"instances": {"a": 1}}, "must be a list", id="not-a-list"),
        pytest.param({"instances": []}, "is empty", id="empty"),
    ],
)
def test_decode_v1_rejects_what_is_not_a_v1_request(body: object, fragment: str) -> None:
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

    request = decode_infer_request(body, length, "m")
    envelope = decode_v2(request, (TensorSpec("image", "BYTES", ()),))

    assert envelope.instances == [PNG, b"\xff\xd8\xff jpeg"]
    assert envelope.protocol == "v2"


def test_binary_v2_reply_honours_per_output_binary_data() -> None:
    body, length = binary_body([PNG])
    request = decode_infer_request(body, length, "m")
    result = [{"logits": [0.5, 1.5], "class": "cat"}]

    reply, headers = encode_infer_response(encode_v2(result, request, "m", (TensorSpec("logits", "FP32", (2,)),)))

    json_length = int(headers["inference-header-content-length"])
    header = orjson.loads(reply[:json_length])
    assert [o["name"] for o in header["outputs"]] == ["logits"]  # only what was requested
    assert header["outputs"][0]["shape"] == [1, 2]
    np.testing.assert_array_equal(np.frombuffer(reply[json_length:], np.float32), [0.5, 1.5])


@pytest.mark.parametrize(
    ("body", "length", "fragment"),
    [
        pytest.param(b'{"inputs": [}', None, "not JSON", id="bad-json"),
        pytest.param(b'{"inputs": 3}', None, 'no "inputs" list', id="inputs-not-list"),
        pytest.param(b"{}", "99", "Inference-Header-Content-Length", id="length-past-end"),
        pytest.param(
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 50}}]}',
            None,
            "runs past the end",
            id="binary-size-past-end",
        ),
        pytest.param(
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None, "neither data", id="no-data"
        ),
    ],
)
def test_bad_v2_bodies_are_400s_that_say_what_to_fix(body: bytes, length: str | None, fragment: str) -> None:
    with pytest.raises(RequestError, match=fragment):
        decode_infer_request(body, length, "m")
