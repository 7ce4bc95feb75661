"""kxform.v2: the V2 wire over REST (JSON and binary) and gRPC, its validation, and the messages it gives."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest

from kxform import limits
from kxform.codecs.tensor import to_raw_bytes
from kxform.errors import LimitError, RequestError
from kxform.v2 import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    RequestedOutput,
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
