"""kxform.v2: the V2 wire over REST (JSON and binary) and gRPC, its validation, and the messages it gives."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kxform import limits
from kxform.codecs.dtypes import V2_DATATYPES, numpy_dtype
from kxform.codecs.tensor import to_raw_bytes
from kxform.errors import LimitError, RequestError
from kxform.v2 import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    RequestedOutput,
    SharedRegion,
    V2Request,
    V2Response,
    V2Tensor,
    decode_grpc_request,
    decode_grpc_response,
    decode_rest_request,
    decode_rest_response,
    encode_grpc_request,
    encode_grpc_response,
    encode_rest_request,
    encode_rest_response,
    grpc_protos,
)

pb = grpc_protos()

SCORES = np.array([[0.25, -1.5, 3.0]], dtype=np.float32)
LABELS = np.array([b"cat", b"dog"], dtype=np.object_)
COUNTS = np.array([1, 2, 3, 4], dtype=np.int64).reshape(2, 2)


_DROP = object()


def entry(name: str = "a", **changes: Any) -> dict[str, Any]:
    """A valid REST input entry, with ``changes`` applied (None: the key removed)."""
    base: dict[str, Any] = {"name": name, "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}
    base.update(changes)
    return {key: value for key, value in base.items() if value is not _DROP}


def rest(document: Any) -> bytes:
    return orjson.dumps(document)


def second_input(**changes: Any) -> bytes:
    """A request whose second input has ``changes``: the error must name ``inputs[1]``."""
    return rest({"inputs": [entry("a"), entry(**{"name": "b", **changes})]})


def request_asking(*outputs: RequestedOutput, **parameters: Any) -> V2Request:
    return V2Request("m", (V2Tensor.from_array("x", SCORES),), outputs=outputs, parameters=parameters)


def response_with(*arrays: tuple[str, np.ndarray]) -> V2Response:
    return V2Response("m", tuple(V2Tensor.from_array(name, array) for name, array in arrays), id="r1")


def assert_same(decoded: V2Tensor, name: str, array: np.ndarray) -> None:
    assert (decoded.name, decoded.shape) == (name, array.shape)
    assert decoded.data.dtype == array.dtype
    assert decoded.data.tolist() == array.tolist()


# --- REST round trips ---------------------------------------------------------------------------------


def test_decode_rest_request_json_gives_arrays_of_the_declared_datatypes() -> None:
    document = {
        "id": "r1",
        "inputs": [
            {"name": "scores", "shape": [1, 3], "datatype": "FP32", "data": [[0.25, -1.5, 3.0]]},
            {"name": "labels", "shape": [2], "datatype": "BYTES", "data": ["cat", "dog"]},
            {"name": "counts", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]},
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        "parameters": {"binary_data_output": False, "priority": 1},
    }
    request = decode_rest_request(rest(document), None, "m")
    assert (request.model_name, request.id, request.transport) == ("m", "r1", "rest")
    assert_same(request.inputs[0], "scores", SCORES)
    assert_same(request.inputs[1], "labels", LABELS)
    assert_same(request.inputs[2], "counts", COUNTS)
    assert request.outputs == (RequestedOutput("probabilities", {"binary_data": True}),)
    assert dict(request.parameters) == {"binary_data_output": False, "priority": 1}


def test_encode_rest_request_binary_round_trips_through_decode_rest_request() -> None:
    inputs = [V2Tensor.from_array("scores", SCORES), V2Tensor.from_array("labels", LABELS)]
    body, headers = encode_rest_request(inputs, [RequestedOutput("probabilities")], "r2")
    assert headers["content-type"] == BINARY_CONTENT_TYPE
    request = decode_rest_request(body, headers[HEADER_LENGTH], "m")
    assert request.id == "r2"
    assert_same(request.inputs[0], "scores", SCORES)
    assert_same(request.inputs[1], "labels", LABELS)
    assert request.outputs == (RequestedOutput("probabilities", {"binary_data": True}),)


def test_decode_rest_request_binary_data_size_stays_out_of_the_tensor_parameters() -> None:
    raw = to_raw_bytes(SCORES)
    header = rest({"inputs": [entry("a", shape=[1, 3], data=_DROP, parameters={"binary_data_size": len(raw), "k": 1})]})
    request = decode_rest_request(header + raw, str(len(header)), "m")
    assert dict(request.inputs[0].parameters) == {"k": 1}
    body, _ = encode_rest_response(V2Response("m", request.inputs), request)  # as JSON: no stale size
    assert orjson.loads(body)["outputs"][0]["parameters"] == {"k": 1}


def test_encode_rest_response_json_round_trips_through_decode_rest_response() -> None:
    body, headers = encode_rest_response(response_with(("scores", SCORES), ("labels", LABELS)), request_asking())
    assert headers == {"content-type": JSON_CONTENT_TYPE}
    document = orjson.loads(body)
    assert document["id"] == "r1"
    assert document["outputs"][1] == {"name": "labels", "datatype": "BYTES", "shape": [2], "data": ["cat", "dog"]}
    response = decode_rest_response(body, None)
    assert response.id == "r1"
    assert_same(response.outputs[0], "scores", SCORES)
    assert_same(response.outputs[1], "labels", LABELS)


def test_encode_rest_response_binary_round_trips_through_decode_rest_response() -> None:
    request = request_asking(binary_data_output=True)
    body, headers = encode_rest_response(response_with(("scores", SCORES), ("counts", COUNTS)), request)
    assert headers["content-type"] == BINARY_CONTENT_TYPE
    response = decode_rest_response(body, headers[HEADER_LENGTH])
    assert_same(response.outputs[0], "scores", SCORES)
    assert_same(response.outputs[1], "counts", COUNTS)


@pytest.mark.parametrize(
    ("request_", "binary"),
    [
        pytest.param(request_asking(), {"scores": False, "counts": False}, id="default-json"),
        pytest.param(
            request_asking(binary_data_output=True), {"scores": True, "counts": True}, id="binary_data_output"
        ),
        pytest.param(
            request_asking(RequestedOutput("scores", {"binary_data": True}), RequestedOutput("counts")),
            {"scores": True, "counts": False},
            id="per-output-binary",
        ),
        pytest.param(
            request_asking(
                RequestedOutput("scores", {"binary_data": False}), RequestedOutput("counts"), binary_data_output=True
            ),
            {"scores": False, "counts": True},
            id="per-output-overrides-request",
        ),
    ],
)
def test_encode_rest_response_binary_selection_follows_the_request(
    request_: V2Request, binary: dict[str, bool]
) -> None:
    body, headers = encode_rest_response(response_with(("scores", SCORES), ("counts", COUNTS)), request_)
    length = int(headers.get(HEADER_LENGTH, len(body)))
    entries = {output["name"]: output for output in orjson.loads(body[:length])["outputs"]}
    assert {name: "binary_data_size" in e.get("parameters", {}) for name, e in entries.items()} == binary
    assert {name: "data" in e for name, e in entries.items()} == {name: not b for name, b in binary.items()}
    response = decode_rest_response(body, headers.get(HEADER_LENGTH))
    assert_same(response.outputs[0], "scores", SCORES)


def test_encode_rest_response_requested_outputs_filter_and_order_the_outputs() -> None:
    request = request_asking(RequestedOutput("counts"), RequestedOutput("scores"))
    response = response_with(("scores", SCORES), ("labels", LABELS), ("counts", COUNTS))
    body, _ = encode_rest_response(response, request)
    assert [output["name"] for output in orjson.loads(body)["outputs"]] == ["counts", "scores"]


@pytest.mark.parametrize("encode", [encode_rest_response, encode_grpc_response], ids=["rest", "grpc"])
def test_encode_response_unknown_requested_output_is_a_400(encode: Any) -> None:
    with pytest.raises(RequestError, match=r"requested output\(s\) 'missing' are not among the outputs scores") as info:
        encode(response_with(("scores", SCORES)), request_asking(RequestedOutput("missing")))
    assert info.value.http_status == 400


# --- REST validation: the message names the field ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "header_length", "field"),
    [
        pytest.param(second_input(datatype=None), None, "inputs[1].datatype None is not a V2 datatype", id="dt-null"),
        pytest.param(second_input(datatype=32), None, "inputs[1].datatype 32 is not a V2 datatype", id="dt-number"),
        pytest.param(second_input(datatype="FLOAT"), None, "inputs[1].datatype 'FLOAT'", id="dt-unknown"),
        pytest.param(second_input(shape=[-1, 2]), None, "inputs[1].shape must be a list of non-negative", id="shape-1"),
        pytest.param(second_input(shape="2"), None, "inputs[1].shape must be a list", id="shape-string"),
        pytest.param(second_input(data=None), None, "inputs[1].data must be a list of FP32", id="data-null"),
        pytest.param(second_input(data=1.0), None, "inputs[1].data must be a list of FP32", id="data-number"),
        pytest.param(second_input(data={"a": 1}), None, "inputs[1].data must be a list of FP32", id="data-object"),
        pytest.param(
            second_input(data=[1.0, None]), None, "inputs[1].data holds values that are not", id="data-null-item"
        ),
        pytest.param(second_input(data=[1.0]), None, "inputs[1].data has 1 elements but shape [2]", id="data-count"),
        pytest.param(second_input(data=_DROP), None, "inputs[1] has neither data nor", id="data-missing"),
        pytest.param(second_input(name="a"), None, "inputs[1].name 'a' appears twice", id="same-name"),
        pytest.param(second_input(name=""), None, "inputs[1].name must be a non-empty string", id="name-empty"),
        pytest.param(rest({"inputs": []}), None, '"inputs" must be a non-empty list', id="inputs-empty"),
        pytest.param(rest({"inputs": [entry(), 3]}), None, "inputs[1] must be an object", id="input-not-object"),
        pytest.param(rest({"inputs": [entry()], "outputs": {}}), None, '"outputs" must be a list', id="outputs-object"),
        pytest.param(
            rest({"inputs": [entry()], "outputs": [{"parameters": {}}]}),
            None,
            "outputs[0].name must be a non-empty string",
            id="output-no-name",
        ),
        pytest.param(
            rest({"inputs": [entry()], "outputs": [{"name": "y"}, {"name": "y"}]}),
            None,
            "outputs[1].name 'y' appears twice",
            id="output-twice",
        ),
        pytest.param(
            rest({"inputs": [entry()], "parameters": [1]}), None, "parameters must be an object", id="params-request"
        ),
        pytest.param(second_input(parameters="x"), None, "inputs[1].parameters must be an object", id="params-input"),
        pytest.param(
            rest({"inputs": [entry()], "outputs": [{"name": "y", "parameters": 1}]}),
            None,
            "outputs[0].parameters must be an object",
            id="params-output",
        ),
        pytest.param(second_input(parameters={"k": [1]}), None, "inputs[1].parameters.k must be a", id="param-list"),
        pytest.param(rest({"inputs": [entry()], "id": 7}), None, '"id" must be a string', id="id-number"),
        pytest.param(rest([entry()]), None, "the V2 request must be a JSON object", id="not-object"),
        pytest.param(b"{", None, "the V2 request is not valid JSON", id="not-json"),
        pytest.param(
            rest({"inputs": [entry()]}), "²", "Inference-Header-Content-Length is '²'", id="header-superscript"
        ),
        pytest.param(
            rest({"inputs": [entry()]}),
            "9" * 5000,
            "Inference-Header-Content-Length is '99999",
            id="header-5000-digits",
        ),
        pytest.param(
            rest({"inputs": [entry()]}), "-1", "Inference-Header-Content-Length is '-1'", id="header-negative"
        ),
        pytest.param(rest({"inputs": [entry()]}), "999", "but the body has", id="header-past-body"),
        pytest.param(
            rest({"inputs": [entry()]}) + b"\x00\x01",
            str(len(rest({"inputs": [entry()]}))),
            "the body has 2 bytes after the last binary",
            id="trailing",
        ),
    ],
)
def test_decode_rest_request_invalid_field_is_a_400_naming_it(
    body: bytes, header_length: str | None, field: str
) -> None:
    with pytest.raises(RequestError) as info:
        decode_rest_request(body, header_length, "m")
    assert info.value.http_status == 400
    assert field in info.value.message


def test_decode_rest_request_header_length_with_spaces_is_accepted() -> None:
    header = rest({"inputs": [entry("a", data=_DROP, parameters={"binary_data_size": 8})]})
    request = decode_rest_request(header + to_raw_bytes(np.array([1, 2], np.float32)), f" {len(header)} ", "m")
    assert request.inputs[0].data.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("size", "tail", "message"),
    [
        pytest.param(-1, b"", "inputs[0].parameters.binary_data_size must be a non-negative integer", id="negative"),
        pytest.param("8", b"", "inputs[0].parameters.binary_data_size must be a non-negative integer", id="string"),
        pytest.param(True, b"", "inputs[0].parameters.binary_data_size must be a non-negative integer", id="bool"),
        pytest.param(9, bytes(8), "inputs[0].parameters.binary_data_size (9) runs past the end", id="past-end"),
        pytest.param(4, bytes(4), "inputs[0] has 4 bytes of binary data but shape [2] of FP32 needs 8", id="short"),
        pytest.param(8, bytes(9), "the body has 1 bytes after the last binary tensor", id="trailing"),
    ],
)
def test_decode_rest_request_bad_binary_data_size_is_a_400_naming_it(size: Any, tail: bytes, message: str) -> None:
    header = rest({"inputs": [entry("a", data=_DROP, parameters={"binary_data_size": size})]})
    with pytest.raises(RequestError) as info:
        decode_rest_request(header + tail, str(len(header)), "m")
    assert info.value.http_status == 400
    assert message in info.value.message


@pytest.mark.parametrize(
    "shape", [pytest.param([0, 2**63], id="int64-overflow"), pytest.param([0, 2**64 - 1], id="uint64-max")]
)
def test_decode_rest_request_empty_tensor_with_an_absurd_dimension_is_a_413(shape: list[int]) -> None:
    with pytest.raises(LimitError, match=r"inputs\[0\]\.shape has a dimension of \d+, more than the") as info:
        decode_rest_request(rest({"inputs": [entry("a", shape=shape, data=[])]}), None, "m")
    assert info.value.http_status == 413


def test_decode_rest_request_too_many_elements_is_a_413_naming_the_flag() -> None:
    with limits.configured(max_tensor_elements=3), pytest.raises(LimitError, match="--max_tensor_elements") as info:
        decode_rest_request(rest({"inputs": [entry("a", shape=[4], data=[1, 2, 3, 4])]}), None, "m")
    assert "inputs[0] has 4 elements" in info.value.message


# --- MLServer's base64 content type -----------------------------------------------------------------


def test_decode_rest_request_base64_content_type_decodes_bytes_elements() -> None:
    data = [base64.b64encode(b"\x89PNG\x00").decode(), base64.b64encode(b"").decode()]
    document = {"inputs": [entry("a", datatype="BYTES", data=data, parameters={"content_type": "base64"})]}
    request = decode_rest_request(rest(document), None, "m")
    assert request.inputs[0].data.tolist() == [b"\x89PNG\x00", b""]


def test_decode_rest_request_base64_content_type_invalid_text_is_a_400_naming_the_element() -> None:
    document = {
        "inputs": [entry("a", datatype="BYTES", data=["aGk=", "not base64!"], parameters={"content_type": "base64"})]
    }
    with pytest.raises(RequestError, match=r"inputs\[0\]\.data\[1\] is not valid base64") as info:
        decode_rest_request(rest(document), None, "m")
    assert "drop the content_type parameter" in info.value.message


def test_decode_rest_request_base64_content_type_leaves_numeric_tensors_alone() -> None:
    request = decode_rest_request(rest({"inputs": [entry("a", parameters={"content_type": "base64"})]}), None, "m")
    assert request.inputs[0].data.tolist() == [1.0, 2.0]


# --- gRPC ---------------------------------------------------------------------------------------------


def test_encode_grpc_request_round_trips_through_decode_grpc_request() -> None:
    inputs = [V2Tensor.from_array("scores", SCORES), V2Tensor.from_array("labels", LABELS, {"content_type": "str"})]
    message = encode_grpc_request("m", inputs, [RequestedOutput("y", {"k": 1})], "r3")
    request = decode_grpc_request(message.SerializeToString())
    assert (request.model_name, request.id, request.transport) == ("m", "r3", "grpc")
    assert_same(request.inputs[0], "scores", SCORES)
    assert_same(request.inputs[1], "labels", LABELS)
    assert dict(request.inputs[1].parameters) == {"content_type": "str"}
    assert request.outputs == (RequestedOutput("y", {"k": 1}),)
    assert request.binary_output("anything")


def test_encode_grpc_response_round_trips_through_decode_grpc_response() -> None:
    request = V2Request(
        "m", (V2Tensor.from_array("x", SCORES),), outputs=(RequestedOutput("counts"),), transport="grpc"
    )
    message = encode_grpc_response(response_with(("scores", SCORES), ("counts", COUNTS)), request)
    response = decode_grpc_response(pb.ModelInferResponse.FromString(message.SerializeToString()))
    assert [tensor.name for tensor in response.outputs] == ["counts"]
    assert_same(response.outputs[0], "counts", COUNTS)


def test_decode_grpc_request_typed_contents_give_arrays() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="a", datatype="INT8", shape=[2]).contents.int_contents.extend([-3, 4])
    message.inputs.add(name="b", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hi")
    request = decode_grpc_request(message.SerializeToString())
    assert_same(request.inputs[0], "a", np.array([-3, 4], np.int8))
    assert_same(request.inputs[1], "b", np.array([b"hi"], np.object_))


def _grpc(build: Any) -> bytes:
    message = pb.ModelInferRequest(model_name="m")
    build(message)
    return message.SerializeToString()


def _raw_count_off(message: Any) -> None:
    message.inputs.add(name="a", datatype="FP32", shape=[1])
    message.inputs.add(name="b", datatype="FP32", shape=[1])
    message.raw_input_contents.append(bytes(4))


def _wrong_field(message: Any) -> None:
    message.inputs.add(name="a", datatype="FP32", shape=[2]).contents.int_contents.extend([1, 2])


def _fp16_typed(message: Any) -> None:
    message.inputs.add(name="a", datatype="FP16", shape=[1])


def _unset_parameter(message: Any) -> None:
    message.inputs.add(name="a", datatype="INT32", shape=[1]).contents.int_contents.append(1)
    message.parameters["k"]  # an entry whose oneof is unset


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(b"\xff\xff\xff\xff", "the gRPC body is not a ModelInferRequest message", id="not-protobuf"),
        pytest.param(b"", "the gRPC message has no inputs", id="empty"),
        pytest.param(
            _grpc(lambda m: m.inputs.add(name="a", datatype="FP128", shape=[1])),
            "inputs[0].datatype 'FP128' is not a V2 datatype",
            id="unknown-datatype",
        ),
        pytest.param(
            _grpc(lambda m: m.inputs.add(name="a", datatype="FP32", shape=[-1])),
            "inputs[0].shape must be a list of non-negative integers",
            id="shape-1",
        ),
        pytest.param(
            _grpc(_wrong_field),
            "inputs[0].contents carries int_contents but FP32 data goes in contents.fp32_contents",
            id="wrong-contents-field",
        ),
        pytest.param(_grpc(_fp16_typed), "FP16 data goes in raw_input_contents", id="fp16-typed"),
        pytest.param(_grpc(_raw_count_off), "has 2 inputs but 1 raw contents", id="raw-count-mismatch"),
        pytest.param(_grpc(_unset_parameter), "parameters['k'] has no value", id="parameter-unset"),
        pytest.param(
            _grpc(lambda m: m.inputs.add(name="a", datatype="INT32", shape=[2]).contents.int_contents.append(1)),
            "inputs[0].contents has 1 elements but shape [2] needs 2",
            id="typed-count",
        ),
        pytest.param(
            _grpc(lambda m: m.inputs.add(name="a", datatype="INT8", shape=[1]).contents.int_contents.append(300)),
            "inputs[0].contents has INT32 values but the model expects INT8",
            id="typed-out-of-range",
        ),
    ],
)
def test_decode_grpc_request_invalid_message_is_a_400_naming_the_field(raw: bytes, message: str) -> None:
    with pytest.raises(RequestError) as info:
        decode_grpc_request(raw)
    assert info.value.http_status == 400
    assert info.value.grpc_code == "INVALID_ARGUMENT"
    assert message in info.value.message


def test_decode_grpc_request_empty_tensor_with_an_absurd_dimension_is_a_413() -> None:
    raw = _grpc(lambda m: m.inputs.add(name="a", datatype="INT32", shape=[0, 2**62]))
    with pytest.raises(LimitError, match=r"inputs\[0\]\.shape has a dimension of 4611686018427387904"):
        decode_grpc_request(raw)


@pytest.mark.parametrize("value", [pytest.param(0.5, id="float"), pytest.param(2**63, id="beyond-int64")])
def test_encode_grpc_request_parameter_grpc_cannot_carry_is_a_400_naming_it(value: Any) -> None:
    tensor = V2Tensor.from_array("a", SCORES, {"scale": value})
    with pytest.raises(RequestError, match=r"'a'\.parameters\.scale is .* send it as a string") as info:
        encode_grpc_request("m", [tensor], [])
    assert info.value.http_status == 400


@pytest.mark.parametrize(
    ("value", "binary"), [(True, True), (False, False), ("false", False), ("true", True), (0, False)]
)
def test_binary_output_reads_boolean_parameters_sent_as_strings(value: object, binary: bool) -> None:
    request = V2Request("m", (), parameters={"binary_data_output": value})  # type: ignore[dict-item]

    assert request.binary_output("x") is binary


# --- shared memory placement (Triton's system shared memory extension) ---------------------------------

REGION = SharedRegion("kxform-7-abcdef-m-1", 128, SCORES.nbytes)
OUT_REGION = SharedRegion("kxform-7-abcdef-m-1", 192, 64)


def grpc_parameters(parameters: Any) -> dict[str, Any]:
    return {key: getattr(value, value.WhichOneof("parameter_choice")) for key, value in parameters.items()}


def region_holding(array: np.ndarray[Any, Any], offset: int = 64, slack: int = 16) -> tuple[bytearray, memoryview]:
    """A stand-in for a region Triton wrote ``array`` into, and the caller's view of that range."""
    raw = to_raw_bytes(array)
    region = bytearray(offset + len(raw) + slack)
    region[offset : offset + len(raw)] = raw
    return region, memoryview(region)[offset : offset + len(raw) + slack]


def test_encode_rest_request_placed_input_names_its_region_and_leaves_its_bytes_out_of_the_body() -> None:
    inputs = [V2Tensor.from_array("scores", SCORES, {"k": 1}), V2Tensor.from_array("counts", COUNTS)]

    body, headers = encode_rest_request(inputs, [RequestedOutput("y")], "r1", placed={"scores": REGION})

    length = int(headers[HEADER_LENGTH])
    placed, binary = orjson.loads(body[:length])["inputs"]
    assert placed == {
        "name": "scores",
        "datatype": "FP32",
        "shape": [1, 3],
        "parameters": {
            "k": 1,
            "shared_memory_region": "kxform-7-abcdef-m-1",
            "shared_memory_offset": 128,
            "shared_memory_byte_size": SCORES.nbytes,
        },
    }
    assert binary["parameters"] == {"binary_data_size": COUNTS.nbytes}
    assert body[length:] == to_raw_bytes(COUNTS)  # the placed input's bytes are in the region only


def test_encode_rest_request_with_every_input_placed_is_plain_json() -> None:
    body, headers = encode_rest_request([V2Tensor.from_array("scores", SCORES)], [], placed={"scores": REGION})

    assert headers == {"content-type": JSON_CONTENT_TYPE}
    assert "data" not in orjson.loads(body)["inputs"][0]


def test_encode_rest_request_output_asked_into_shared_memory_is_not_asked_as_binary() -> None:
    outputs = [RequestedOutput("y", OUT_REGION.parameters()), RequestedOutput("z")]

    body, headers = encode_rest_request([V2Tensor.from_array("x", SCORES)], outputs)

    document = orjson.loads(body[: int(headers[HEADER_LENGTH])])
    assert document["outputs"] == [
        {"name": "y", "parameters": OUT_REGION.parameters()},
        {"name": "z", "parameters": {"binary_data": True}},
    ]


def test_decode_rest_response_reads_an_output_sent_without_data_from_its_view_and_copies_it() -> None:
    _, view = region_holding(SCORES)
    raw = to_raw_bytes(COUNTS)
    header = rest(
        {
            "model_name": "m",
            "outputs": [
                {"name": "scores", "datatype": "FP32", "shape": [1, 3]},
                {"name": "counts", "datatype": "INT64", "shape": [2, 2], "parameters": {"binary_data_size": len(raw)}},
            ],
        }
    )

    response = decode_rest_response(header + raw, str(len(header)), {"scores": view})

    assert_same(response.outputs[0], "scores", SCORES)
    assert_same(response.outputs[1], "counts", COUNTS)
    view[:] = bytes(len(view))  # the region's next call
    assert_same(response.outputs[0], "scores", SCORES)


def _rest_reply(datatype: str, shape: list[int], views: dict[str, memoryview]) -> V2Response:
    body = rest({"outputs": [{"name": "scores", "datatype": datatype, "shape": shape}]})
    return decode_rest_response(body, None, views)


def _grpc_reply(datatype: str, shape: list[int], views: dict[str, memoryview]) -> V2Response:
    message = pb.ModelInferResponse(model_name="m")
    message.outputs.add(name="scores", datatype=datatype, shape=shape)
    message.raw_output_contents.append(b"")
    return decode_grpc_response(pb.ModelInferResponse.FromString(message.SerializeToString()), views)


@pytest.mark.parametrize("decode", [_rest_reply, _grpc_reply], ids=["rest", "grpc"])
@pytest.mark.parametrize(
    ("datatype", "size", "message"),
    [
        pytest.param(
            "FP32", SCORES.nbytes - 4, "of shape [1, 3] and datatype FP32 does not fit the 8 bytes", id="small"
        ),
        pytest.param("BYTES", 64, "of shape [1, 3] and datatype BYTES does not fit the 64 bytes", id="bytes"),
    ],
)
def test_decode_response_output_that_does_not_fit_its_view_is_a_request_error_naming_it(
    decode: Any, datatype: str, size: int, message: str
) -> None:
    with pytest.raises(RequestError, match=r"outputs\[0\] ") as info:
        decode(datatype, [1, 3], {"scores": memoryview(bytearray(size))})
    assert message in info.value.message


def test_encode_grpc_request_placed_input_has_no_raw_contents_and_the_others_keep_their_order() -> None:
    inputs = [
        V2Tensor.from_array("counts", COUNTS),
        V2Tensor.from_array("scores", SCORES),
        V2Tensor.from_array("labels", LABELS),
    ]

    message = encode_grpc_request(
        "m", inputs, [RequestedOutput("y", OUT_REGION.parameters())], placed={"scores": REGION}
    )

    assert [tensor.name for tensor in message.inputs] == ["counts", "scores", "labels"]
    assert list(message.raw_input_contents) == [to_raw_bytes(COUNTS), to_raw_bytes(LABELS)]
    assert grpc_parameters(message.inputs[1].parameters) == REGION.parameters()
    assert grpc_parameters(message.inputs[0].parameters) == {}
    assert grpc_parameters(message.outputs[0].parameters) == OUT_REGION.parameters()


def test_decode_grpc_response_reads_an_output_with_empty_raw_contents_from_its_view() -> None:
    message = pb.ModelInferResponse(model_name="m", id="r1")
    message.outputs.add(name="scores", datatype="FP32", shape=[1, 3])
    message.outputs.add(name="counts", datatype="INT64", shape=[2, 2])
    message.raw_output_contents.extend([b"", to_raw_bytes(COUNTS)])  # Triton keeps one entry per output
    _, view = region_holding(SCORES)

    response = decode_grpc_response(pb.ModelInferResponse.FromString(message.SerializeToString()), {"scores": view})

    assert_same(response.outputs[0], "scores", SCORES)
    assert_same(response.outputs[1], "counts", COUNTS)
    view[:] = bytes(len(view))
    assert_same(response.outputs[0], "scores", SCORES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    datatype=st.sampled_from([datatype for datatype in V2_DATATYPES if datatype != "BYTES"]),
    shape=st.lists(st.integers(0, 4), max_size=3),
    offset=st.integers(0, 200),
    slack=st.integers(0, 16),
    decode=st.sampled_from([_rest_reply, _grpc_reply]),
    data=st.data(),
)
def test_an_output_read_from_shared_memory_equals_the_array_written_there_bit_for_bit(
    datatype: str, shape: list[int], offset: int, slack: int, decode: Any, data: st.DataObject
) -> None:
    size = math.prod(shape) * numpy_dtype(datatype).itemsize
    raw = data.draw(st.binary(min_size=size, max_size=size))  # every bit pattern: NaNs, subnormals, odd bools
    array = np.frombuffer(raw, numpy_dtype(datatype).newbyteorder("<")).reshape(shape)
    _, view = region_holding(array, offset, slack)

    [decoded] = decode(datatype, shape, {"scores": view}).outputs

    assert (decoded.datatype, decoded.shape) == (datatype, tuple(shape))
    assert decoded.data.tobytes() == raw
    view[:] = b"\xff" * len(view)
    assert decoded.data.tobytes() == raw  # a copy: the region's next call does not change it
