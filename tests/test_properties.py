"""Property-based tests of the request edge: every parser and codec returns a valid result or a 4xx KxformError.

The promise of ``kxform.v2``, ``kxform.envelope``, ``kxform.body``, ``kxform.cloudevents``,
``kxform.codecs.jsonbody`` and the image and text codecs: for *any* bytes, JSON value or protobuf
message a client sends, they either return a valid result or raise a ``KxformError`` whose
``http_status`` is 4xx — never another exception (KeyError, ValueError, OverflowError, ...), never a
5xx. ``rejected_or`` runs one call under that rule; anything else escapes and hypothesis shrinks it.
Round trips check that every datatype survives REST JSON, REST binary and gRPC bit for bit.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import math
import zlib
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import ml_dtypes
import numpy as np
import orjson
import pytest
from google.protobuf.message import DecodeError as DecodeProtobufError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from kxform import limits
from kxform.codecs.dtypes import V2_DATATYPES, numpy_dtype
from kxform.codecs.image import ImagePipeline, image_bytes, open_image, resized_size
from kxform.codecs.jsonbody import load_json
from kxform.codecs.tensor import encode_array, to_raw_bytes
from kxform.codecs.text import text_bytes
from kxform.envelope import Envelope, decode_v1, decode_v2
from kxform.errors import KxformError
from kxform.spec import TensorSpec
from kxform.v2 import (
    HEADER_LENGTH,
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

T = TypeVar("T")

# Few examples per property: the file runs within seconds on two cores, and CI runs it on every push.
# Each bug these properties found is pinned below with @example, so it is checked on every run.
fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
fuzz_few = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
round_trip = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pb = grpc_protos()


def rejected_or(call: Callable[[], T]) -> T | None:
    """``call()``'s result, or None when it raised a 4xx KxformError with a message; anything else escapes."""
    try:
        return call()
    except KxformError as exc:
        error = exc
    assert 400 <= error.http_status < 500, f"{type(error).__name__} {error.http_status}: {error}"
    assert error.message
    return None


# --- strategies ---------------------------------------------------------------------------------------

# Text with lone surrogates too (hypothesis leaves category Cs out by default).
ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=8)
BIG_INTS = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**30)])
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    BIG_INTS,
    st.floats(),
    ANY_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=12,
)
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.sampled_from([[], {}, [None], {"a": 1}, [[1]], "²", -1]),
)
NAMES = st.sampled_from(["a", "b", "image"])
DATATYPES = st.sampled_from(V2_DATATYPES)
ODD_DATATYPES = st.one_of(JUNK, st.sampled_from(["fp32", "STRING", "INT128", "", " FP32", "TYPE_FP32"]))
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
ODD_SHAPES = st.one_of(
    JUNK,
    st.lists(st.one_of(st.integers(-2, 5), BIG_INTS, st.booleans(), st.floats(0, 3), st.text(max_size=2)), max_size=4),
    st.sampled_from([[-1], [0, 2**63], [0, 2**64 - 1], [0, 10**19], [0, 10**30], [1] * 40, [2**32, 2**32]]),
)


def to_json(value: object) -> bytes:
    """orjson's bytes, or the standard library's where orjson refuses (huge ints, lone surrogates, NaN)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value).encode()


def finite_arrays(datatype: str, shapes: st.SearchStrategy[tuple[int, ...]] = SHAPES) -> st.SearchStrategy[Any]:
    """Arrays JSON can carry: finite floats, UTF-8 text for BYTES."""
    if datatype == "BYTES":
        return hnp.arrays(np.object_, shapes, elements=st.text(max_size=4).map(str.encode))
    if datatype == "BF16":
        return hnp.arrays(np.float32, shapes, elements=st.floats(-1e4, 1e4, width=32)).map(
            lambda a: a.astype(ml_dtypes.bfloat16)
        )
    dtype = numpy_dtype(datatype)
    elements = st.floats(allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8) if dtype.kind == "f" else None
    return hnp.arrays(dtype, shapes, elements=elements)


def all_bit_arrays(datatype: str, shapes: st.SearchStrategy[tuple[int, ...]] = SHAPES) -> st.SearchStrategy[Any]:
    """Arrays with every value a binary wire can carry: NaN, infinities, -0.0, any bytes."""
    if datatype == "BYTES":
        return hnp.arrays(np.object_, shapes, elements=st.binary(max_size=4))
    if datatype == "BF16":
        return hnp.arrays(np.uint16, shapes).map(lambda bits: bits.view(ml_dtypes.bfloat16))
    return hnp.arrays(numpy_dtype(datatype), shapes)


def odd_parameters() -> st.SearchStrategy[Any]:
    values = st.one_of(JUNK, BIG_INTS, st.integers(-5, 100))
    return st.one_of(
        JUNK,
        st.dictionaries(st.sampled_from(["binary_data_size", "content_type", "binary_data", "x"]), values, max_size=3),
        st.just({"content_type": "base64"}),
        st.dictionaries(st.text(max_size=3), JSON_VALUES, max_size=2),
    )


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in ``one_in`` draws; shrinks to False, so failures shrink to fewer faults."""
    return draw(st.integers(1, one_in)) == one_in


GOOD_PARAMETERS = st.dictionaries(
    st.sampled_from(["x", "scale", "mode"]),
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=3),
    ),
    max_size=2,
)
EMPTY_SHAPES = st.sampled_from([[0], [0, 2**63], [0, 2**64 - 1], [2**40, 0], [0, 10**19], [3, 0, 2**62]])


@st.composite
def rest_entries(draw: st.DrawFn, binary: bool) -> tuple[Any, bytes]:
    """One V2 REST tensor entry (valid, then perhaps broken in a field or two) and its binary chunk."""
    datatype = draw(DATATYPES)
    array = draw(finite_arrays(datatype))
    entry: dict[str, Any] = {"name": draw(NAMES), "datatype": datatype, "shape": list(array.shape)}
    parameters = draw(GOOD_PARAMETERS)
    if parameters:
        entry["parameters"] = parameters
    chunk = b""
    if binary and draw(st.booleans()):
        chunk = to_raw_bytes(array)
        entry["parameters"] = {**parameters, "binary_data_size": len(chunk)}
    else:
        flat = encode_array(array)["data"]
        entry["data"] = flat if datatype == "BYTES" or not draw(st.booleans()) else array.tolist()
    if datatype == "BYTES" and sometimes(draw, 4):  # MLServer's base64 content type
        entry["parameters"] = {**entry.get("parameters", {}), "content_type": "base64"}
        if "data" in entry and draw(st.booleans()):
            entry["data"] = [base64.b64encode(v).decode() for v in array.ravel().tolist()]
    while sometimes(draw, 3):
        key = draw(st.sampled_from(["name", "datatype", "shape", "empty", "data", "parameters", "size", "drop"]))
        if key == "name":
            entry["name"] = draw(st.one_of(JUNK, st.just("")))
        elif key == "datatype":
            entry["datatype"] = draw(ODD_DATATYPES)
        elif key == "shape":
            entry["shape"] = draw(ODD_SHAPES)
        elif key == "empty":  # no elements, yet dimensions numpy cannot allocate
            entry["shape"] = draw(EMPTY_SHAPES)
            if "data" in entry:
                entry["data"] = []
            else:
                entry["parameters"] = {"binary_data_size": 0}
                chunk = b""
        elif key == "data":
            entry["data"] = draw(JSON_VALUES)
        elif key == "parameters":
            entry["parameters"] = draw(odd_parameters())
        elif key == "size":
            entry["parameters"] = {"binary_data_size": draw(st.one_of(JUNK, BIG_INTS, st.integers(-2, 64)))}
        elif entry:
            del entry[draw(st.sampled_from(sorted(entry)))]
    if sometimes(draw, 12):
        return draw(JUNK), chunk
    return entry, chunk


@st.composite
def rest_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A V2 REST body (JSON, or JSON header + binary tail) and its Inference-Header-Content-Length."""
    binary = draw(st.booleans())
    drawn = draw(st.lists(rest_entries(binary), min_size=1, max_size=3))
    if not sometimes(draw, 6):  # one name each, but now and then the same name twice
        for (entry, _), name in zip(drawn, ("a", "b", "image"), strict=False):
            if isinstance(entry, dict) and entry.get("name") in ("a", "b", "image"):
                entry["name"] = name
    document: dict[str, Any] = {"inputs": [entry for entry, _ in drawn]}
    if sometimes(draw, 12):
        document["inputs"] = draw(JUNK)
    if draw(st.booleans()):
        document["id"] = draw(st.text(max_size=4)) if not sometimes(draw, 4) else draw(JUNK)
    if draw(st.booleans()):
        output = st.fixed_dictionaries({"name": NAMES}, optional={"parameters": GOOD_PARAMETERS})
        document["outputs"] = draw(st.lists(output, max_size=3))
        if sometimes(draw, 3):
            odd = st.fixed_dictionaries({"name": st.one_of(NAMES, JUNK)}, optional={"parameters": odd_parameters()})
            document["outputs"] = draw(st.one_of(JUNK, st.lists(st.one_of(JUNK, odd), max_size=3)))
    if draw(st.booleans()):
        document["parameters"] = draw(st.fixed_dictionaries({"binary_data_output": st.booleans()}))
        if sometimes(draw, 3):
            document["parameters"] = draw(
                st.one_of(odd_parameters(), st.fixed_dictionaries({"binary_data_output": JUNK}))
            )
    header = to_json(document)
    tail = b"".join(chunk for _, chunk in drawn)
    if sometimes(draw, 6):
        tail += draw(st.binary(min_size=1, max_size=4))
    if tail and sometimes(draw, 6):
        tail = tail[: draw(st.integers(0, len(tail) - 1))]
    length = len(header)
    header_length: str | None = str(length) if tail or binary else None
    if sometimes(draw, 4):
        header_length = draw(
            st.one_of(
                st.sampled_from(["²", "9" * 5000, "-1", f" {length} ", "", "0", str(length + 1), str(length - 1)]),
                st.sampled_from(["١٢", "1e3", "0x10", "+5", str(length + len(tail) + 1), "18446744073709551616"]),
                st.text(max_size=4),
                st.none(),
                st.just(str(length)),
            )
        )
    return header + tail, header_length


def assert_valid_tensor(tensor: V2Tensor) -> None:
    assert isinstance(tensor.name, str)
    assert tensor.name
    assert tensor.datatype in V2_DATATYPES
    assert all(type(dim) is int and dim >= 0 for dim in tensor.shape)
    assert tensor.data.shape == tensor.shape
    assert tensor.data.dtype == numpy_dtype(tensor.datatype)
    assert tensor.data.size <= limits.current().max_tensor_elements
    if tensor.datatype == "BYTES":
        assert all(type(value) is bytes for value in tensor.data.ravel().tolist())
    assert_valid_parameters(tensor.parameters)


def assert_valid_parameters(parameters: Any) -> None:
    assert all(isinstance(key, str) for key in parameters)
    assert all(isinstance(value, bool | int | float | str) for value in parameters.values())


def assert_valid_request(request: V2Request) -> None:
    assert request.inputs
    for tensor in request.inputs:
        assert_valid_tensor(tensor)
    assert len(set(request.input_names())) == len(request.inputs)
    assert len({output.name for output in request.outputs}) == len(request.outputs)
    assert all(isinstance(output.name, str) and output.name for output in request.outputs)
    assert isinstance(request.id, str)
    assert_valid_parameters(request.parameters)


def forward(request: V2Request) -> None:
    """What the server does next with a valid request: reply to it, and pass its tensors on."""
    response = V2Response("m", request.inputs, id=request.id)
    rejected_or(lambda: encode_rest_response(response, request))
    rejected_or(lambda: encode_grpc_response(response, request).SerializeToString())
    rejected_or(lambda: encode_rest_request(request.inputs, request.outputs, request.id))
    rejected_or(lambda: encode_grpc_request("m", request.inputs, request.outputs, request.id).SerializeToString())
    envelope = rejected_or(lambda: decode_v2(request, ()))
    if envelope is not None:
        assert 0 < len(envelope.instances) <= limits.current().max_instances


# --- JSON and REST ------------------------------------------------------------------------------------


@given(st.one_of(st.binary(max_size=64), JSON_VALUES.map(to_json)))
@fuzz
def test_load_json_any_bytes_give_a_value_or_a_4xx(data: bytes) -> None:
    with limits.configured(max_json_depth=3):
        value = rejected_or(lambda: load_json(data, "the body", "send JSON"))
    if value is not None:
        assert value == orjson.loads(data)


@given(st.integers(1, 200), st.sampled_from(["[", '{"a":']))
@fuzz_few
def test_load_json_deep_nesting_is_a_4xx_not_a_recursion_error(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    data = (opener * depth + "1" + closer * depth).encode()
    with limits.configured(max_json_depth=16):
        assert (rejected_or(lambda: load_json(data, "the body", "send JSON")) is None) == (depth > 16)


@given(st.binary(max_size=96), st.one_of(st.none(), st.text(max_size=6)))
@fuzz
def test_decode_rest_request_any_bytes_give_a_request_or_a_4xx(body: bytes, header_length: str | None) -> None:
    request = rejected_or(lambda: decode_rest_request(body, header_length, "m"))
    if request is not None:
        assert_valid_request(request)


@given(JSON_VALUES.map(to_json))
@fuzz
def test_decode_rest_request_any_json_gives_a_request_or_a_4xx(body: bytes) -> None:
    request = rejected_or(lambda: decode_rest_request(body, None, "m"))
    if request is not None:
        assert_valid_request(request)


def _empty_input(shape: list[int], *, binary: bool) -> tuple[bytes, str | None]:
    entry: dict[str, Any] = {"name": "a", "datatype": "FP32", "shape": shape}
    entry.update({"parameters": {"binary_data_size": 0}} if binary else {"data": []})
    header = orjson.dumps({"inputs": [entry]})
    return header, str(len(header)) if binary else None


_FLOAT_PARAMETER = orjson.dumps(
    {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1], "parameters": {"s": 0.5}}]}
)


@given(rest_bodies())
@example(_empty_input([0, 2**63], binary=False))  # numpy: "Maximum allowed dimension exceeded" (ValueError)
@example(_empty_input([0, 2**64 - 1], binary=True))
@example((_FLOAT_PARAMETER, None))  # kserve's InferParameter has no double_param: AttributeError on forwarding
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decode_rest_request_structured_documents_give_a_request_or_a_4xx(wire: tuple[bytes, str | None]) -> None:
    body, header_length = wire
    request = rejected_or(lambda: decode_rest_request(body, header_length, "m"))
    if request is not None:
        assert_valid_request(request)
        forward(request)


@given(rest_bodies())
@fuzz
def test_decode_rest_request_small_limits_give_a_request_or_a_4xx(wire: tuple[bytes, str | None]) -> None:
    body, header_length = wire
    with limits.configured(max_tensor_elements=4, max_json_depth=4, max_request_bytes=160, max_instances=2):
        request = rejected_or(lambda: decode_rest_request(body, header_length, "m"))
        if request is not None:
            assert_valid_request(request)
            forward(request)


def as_response(body: bytes, header_length: str | None) -> tuple[bytes, str | None]:
    """The same wire with the request's "inputs" as a reply's "outputs", where its JSON header parses."""
    text = (header_length or "").strip()
    digits = text.isascii() and text.isdigit() and len(text) <= 19
    length = int(text) if digits and int(text) <= len(body) else len(body)
    try:
        document = orjson.loads(body[:length])
    except orjson.JSONDecodeError:
        return body, header_length
    if not isinstance(document, dict):
        return body, header_length
    document["outputs"] = document.pop("inputs", None)
    header = to_json(document)
    tail = body[length:]
    return header + tail, str(len(header)) if tail or header_length is not None else None


@given(rest_bodies())
@fuzz
def test_decode_rest_response_structured_documents_give_a_response_or_a_4xx(wire: tuple[bytes, str | None]) -> None:
    response = rejected_or(lambda: decode_rest_response(*as_response(*wire)))
    if response is not None:
        assert response.outputs
        for tensor in response.outputs:
            assert_valid_tensor(tensor)
        assert len({tensor.name for tensor in response.outputs}) == len(response.outputs)


# --- gRPC ---------------------------------------------------------------------------------------------

_TYPED_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=4),
}
_FIELD_OF = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def fill_parameters(draw: st.DrawFn, target: Any) -> None:
    for key in draw(st.lists(st.sampled_from(["x", "scale", "binary_data", ""]), max_size=2, unique=True)):
        parameter = target[key]  # created with no value set: the oneof is unset, unless set below
        choice = "unset" if sometimes(draw, 8) else draw(st.sampled_from(["bool", "int64", "string"]))
        if choice == "bool":
            parameter.bool_param = draw(st.booleans())
        elif choice == "int64":
            parameter.int64_param = draw(st.integers(-(2**63), 2**63 - 1))
        elif choice == "string":
            parameter.string_param = draw(st.sampled_from(["base64", "x", ""]))


GRPC_SHAPES = st.lists(
    st.one_of(st.integers(-3, 4), st.integers(-(2**63), 2**63 - 1), st.sampled_from([2**62, 2**40, 0])), max_size=4
)


@st.composite
def grpc_messages(draw: st.DrawFn) -> bytes:
    """A ModelInferRequest: valid tensors, then wrong datatypes, shapes, contents fields and raw counts."""
    message = pb.ModelInferRequest(model_name=draw(st.text(max_size=3)), id=draw(st.text(max_size=3)))
    raw_mode = draw(st.booleans())
    names = ["a", "b", "image"] if not sometimes(draw, 6) else ["a", "a", "a"]
    for name in names[: draw(st.integers(1, 3)) if not sometimes(draw, 10) else 0]:
        datatype = draw(DATATYPES)
        array = draw(all_bit_arrays(datatype))
        entry = message.inputs.add(name=name if not sometimes(draw, 10) else "", datatype=datatype, shape=array.shape)
        if sometimes(draw, 8):
            entry.datatype = draw(st.sampled_from(["", "fp32", "STRING", "INT128", "TYPE_FP32"]))
        if sometimes(draw, 6):
            entry.ClearField("shape")
            entry.shape.extend(draw(st.one_of(GRPC_SHAPES, EMPTY_SHAPES.filter(lambda s: max(s) < 2**63))))
            if math.prod(entry.shape) == 0:
                array = array.reshape(-1)[:0]
        fill_parameters(draw, entry.parameters)
        if datatype == "BYTES" and sometimes(draw, 4):
            entry.parameters["content_type"].string_param = "base64"
        if raw_mode or datatype not in _FIELD_OF:
            message.raw_input_contents.append(to_raw_bytes(array))
        else:
            getattr(entry.contents, _FIELD_OF[datatype]).extend(array.ravel().tolist())
        if sometimes(draw, 8):  # something in the wrong typed field
            field = draw(st.sampled_from(sorted(_TYPED_FIELDS)))
            getattr(entry.contents, field).extend(draw(st.lists(_TYPED_FIELDS[field], max_size=3)))
    if sometimes(draw, 8):  # raw contents count off by one
        if len(message.raw_input_contents) and draw(st.booleans()):
            del message.raw_input_contents[-1]
        else:
            message.raw_input_contents.append(draw(st.binary(max_size=8)))
    outputs = draw(st.lists(st.sampled_from(["a", "b"]), max_size=2, unique=not sometimes(draw, 6)))
    for name in [*outputs, ""] if sometimes(draw, 8) else outputs:
        fill_parameters(draw, message.outputs.add(name=name).parameters)
    fill_parameters(draw, message.parameters)
    raw = message.SerializeToString()
    if raw and sometimes(draw, 10):  # a corrupt byte
        index = draw(st.integers(0, len(raw) - 1))
        raw = raw[:index] + bytes([draw(st.integers(0, 255))]) + raw[index + 1 :]
    if sometimes(draw, 10):  # cut short
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@given(st.binary(max_size=128))
@fuzz
def test_decode_grpc_request_any_bytes_give_a_request_or_a_4xx(raw: bytes) -> None:
    request = rejected_or(lambda: decode_grpc_request(raw))
    if request is not None:
        assert_valid_request(request)


def _grpc_empty_input(datatype: str, shape: list[int]) -> bytes:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="a", datatype=datatype, shape=shape)
    return message.SerializeToString()


@given(grpc_messages())
@example(_grpc_empty_input("INT32", [0, 2**62]))  # numpy: "array is too big" (ValueError)
@example(_grpc_empty_input("FP16", [1]))  # FP16 has no typed contents field
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decode_grpc_request_structured_messages_give_a_request_or_a_4xx(raw: bytes) -> None:
    request = rejected_or(lambda: decode_grpc_request(raw))
    if request is not None:
        assert_valid_request(request)
        assert request.transport == "grpc"
        forward(request)


@given(grpc_messages())
@fuzz_few
def test_decode_grpc_request_small_limits_give_a_request_or_a_4xx(raw: bytes) -> None:
    with limits.configured(max_tensor_elements=3, max_request_bytes=64):
        request = rejected_or(lambda: decode_grpc_request(raw))
        if request is not None:
            assert_valid_request(request)


@given(grpc_messages())
@fuzz_few
def test_decode_grpc_response_structured_messages_give_a_response_or_a_4xx(raw: bytes) -> None:
    try:
        request = pb.ModelInferRequest.FromString(raw)
    except DecodeProtobufError:
        request = pb.ModelInferRequest()  # a response with no outputs, then
    message = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
    for entry in request.inputs:  # the tensor messages share their field numbers
        message.outputs.add().ParseFromString(entry.SerializeToString())
    message.raw_output_contents.extend(request.raw_input_contents)
    response = rejected_or(lambda: decode_grpc_response(message))
    if response is not None:
        assert response.outputs
        for tensor in response.outputs:
            assert_valid_tensor(tensor)


# --- round trips --------------------------------------------------------------------------------------


def assert_same_tensor(decoded: V2Tensor, original: V2Tensor) -> None:
    assert (decoded.name, decoded.datatype, decoded.shape) == (original.name, original.datatype, original.shape)
    assert dict(decoded.parameters) == dict(original.parameters)
    assert decoded.data.dtype == original.data.dtype
    assert decoded.data.shape == original.data.shape
    if original.datatype == "BYTES":
        assert decoded.data.tolist() == original.data.tolist()
    else:  # bit for bit: NaN payloads and -0.0 included
        assert to_raw_bytes(decoded.data) == to_raw_bytes(original.data)


def tensors_of(datatype: str, arrays: Callable[[str], st.SearchStrategy[Any]]) -> st.SearchStrategy[list[V2Tensor]]:
    """One tensor of ``datatype`` and perhaps a second (another datatype), each with its own name."""
    first = arrays(datatype).map(lambda a: V2Tensor.from_array("first", a))
    second = DATATYPES.flatmap(arrays).map(lambda a: V2Tensor.from_array("second", a))
    return st.tuples(first, st.lists(second, max_size=1)).map(lambda pair: [pair[0], *pair[1]])


def request_for(binary: bool, transport: Literal["rest", "grpc"] = "rest") -> V2Request:
    """A request that asks for every output, as JSON or as binary data."""
    stand_in = V2Tensor.from_array("x", np.zeros(1, np.float32))
    return V2Request("m", (stand_in,), parameters={"binary_data_output": binary}, transport=transport)


@pytest.mark.parametrize("datatype", V2_DATATYPES)
@given(data=st.data())
@round_trip
def test_rest_json_round_trip_every_datatype(datatype: str, data: st.DataObject) -> None:
    tensors = data.draw(tensors_of(datatype, finite_arrays))
    document = {"inputs": [{"name": t.name, **encode_array(t.data)} for t in tensors], "id": "r1"}
    request = decode_rest_request(orjson.dumps(document), None, "m")
    assert request.id == "r1"
    for decoded, original in zip(request.inputs, tensors, strict=True):
        assert_same_tensor(decoded, original)
    body, headers = encode_rest_response(V2Response("m", tuple(tensors), id="r1"), request_for(binary=False))
    assert HEADER_LENGTH not in headers
    response = decode_rest_response(body, headers.get(HEADER_LENGTH))
    assert response.id == "r1"
    for decoded, original in zip(response.outputs, tensors, strict=True):
        assert_same_tensor(decoded, original)


@pytest.mark.parametrize("datatype", V2_DATATYPES)
@given(data=st.data())
@round_trip
def test_rest_binary_round_trip_every_datatype(datatype: str, data: st.DataObject) -> None:
    tensors = data.draw(tensors_of(datatype, all_bit_arrays))
    body, headers = encode_rest_request(tensors, [RequestedOutput("first")], "r2")
    request = decode_rest_request(body, headers[HEADER_LENGTH], "m")
    assert request.id == "r2"
    assert [output.name for output in request.outputs] == ["first"]
    for decoded, original in zip(request.inputs, tensors, strict=True):
        assert_same_tensor(decoded, original)
    body, headers = encode_rest_response(V2Response("m", tuple(tensors)), request_for(binary=True))
    response = decode_rest_response(body, headers[HEADER_LENGTH])
    for decoded, original in zip(response.outputs, tensors, strict=True):
        assert_same_tensor(decoded, original)


@pytest.mark.parametrize("datatype", V2_DATATYPES)
@given(data=st.data())
@round_trip
def test_grpc_round_trip_every_datatype(datatype: str, data: st.DataObject) -> None:
    tensors = data.draw(tensors_of(datatype, all_bit_arrays))
    message = encode_grpc_request("m", tensors, [RequestedOutput("first")], "r3")
    request = decode_grpc_request(message.SerializeToString())
    assert (request.model_name, request.id, request.transport) == ("m", "r3", "grpc")
    for decoded, original in zip(request.inputs, tensors, strict=True):
        assert_same_tensor(decoded, original)
    reply = encode_grpc_response(V2Response("m", tuple(tensors), id="r3"), request_for(binary=True, transport="grpc"))
    response = decode_grpc_response(pb.ModelInferResponse.FromString(reply.SerializeToString()))
    for decoded, original in zip(response.outputs, tensors, strict=True):
        assert_same_tensor(decoded, original)


# --- V1 bodies, Content-Encoding, CloudEvents -----------------------------------------------------------


def _png(width: int = 3, height: int = 2) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()
V1_PAYLOADS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"instances": st.one_of(JSON_VALUES, st.lists(JSON_VALUES, max_size=4))}),
)
V1_BODIES = st.one_of(
    st.binary(max_size=48), V1_PAYLOADS.map(to_json), st.sampled_from([b"", PNG, PNG[:20], b"\xff\xd8\xff\xe0"])
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/cloudevents+json",
            "Application/CloudEvents+JSON; charset=utf-8",
            "image/png",
            "image/jpeg",
            "text/plain",
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
    st.text(max_size=8),
)


@st.composite
def structured_events(draw: st.DrawFn) -> bytes:
    event: dict[str, Any] = {}
    for name, good in (("specversion", "1.0"), ("id", "1"), ("source", "s"), ("type", "t")):
        if draw(st.integers(0, 5)):
            event[name] = good if draw(st.integers(0, 4)) else draw(st.one_of(JUNK, st.just("0.3")))
    choice = draw(st.sampled_from(["data", "data_base64", "bad_base64", "none"]))
    if choice == "data":
        event["data"] = draw(V1_PAYLOADS)
    elif choice == "data_base64":
        event["data_base64"] = base64.b64encode(draw(V1_BODIES)).decode()
    elif choice == "bad_base64":
        event["data_base64"] = draw(st.one_of(JUNK, st.sampled_from(["é", "ab=c", "****", "\u00ff\u00fe"])))
    if draw(st.booleans()):
        event["datacontenttype"] = draw(st.one_of(CONTENT_TYPES, JUNK))
    return to_json(event)


def _encode_body(draw: st.DrawFn, body: bytes) -> tuple[bytes, str | None]:
    coding = draw(
        st.sampled_from(
            [None, "identity", "gzip", "x-gzip", "deflate", "gzip, deflate", "br", "garbage", "", " GZIP ", "compress"]
        )
    )
    if coding is None or not draw(st.integers(0, 4)):
        return body, coding
    for step in (c.strip().lower() for c in coding.split(",")):  # applied in the order listed
        if step in ("gzip", "x-gzip"):
            body = gzip.compress(body, mtime=0)
        elif step == "deflate":
            body = zlib.compress(body)
    if draw(st.integers(0, 4)) == 0 and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    return body, coding


@st.composite
def v1_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    headers: dict[str, str] = {}
    structured = draw(st.integers(0, 3)) == 0
    body = draw(structured_events()) if structured else draw(V1_BODIES)
    if draw(st.integers(0, 5)) == 0:  # an inflate bomb: 64 KiB of zeros in a few hundred bytes
        body = bytes(65536)
    headers["content-type"] = "application/cloudevents+json" if structured else draw(CONTENT_TYPES)
    body, coding = _encode_body(draw, body)
    if coding is not None:
        headers["content-encoding"] = coding
    if draw(st.integers(0, 3)) == 0:  # binary-mode CloudEvent
        for name in draw(st.lists(st.sampled_from(["specversion", "id", "source", "type", "time"]), max_size=5)):
            headers[f"ce-{name}"] = draw(st.sampled_from(["1.0", "0.3", "", "x"]))
    return body, headers


def assert_valid_envelope(envelope: Envelope) -> None:
    assert isinstance(envelope.instances, list)
    assert 0 < len(envelope.instances) <= limits.current().max_instances
    assert envelope.protocol == "v1"


_STRUCTURED = {"content-type": "application/cloudevents+json"}
_EVENT = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}


@given(v1_requests())
@example((orjson.dumps({**_EVENT, "data_base64": "é"}), _STRUCTURED))  # base64: ValueError, not binascii.Error
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decode_v1_any_body_and_headers_give_instances_or_a_4xx(wire: tuple[bytes, dict[str, str]]) -> None:
    body, headers = wire
    envelope = rejected_or(lambda: decode_v1(body, headers))
    if envelope is not None:
        assert_valid_envelope(envelope)


@given(v1_requests())
@fuzz
def test_decode_v1_small_limits_give_instances_or_a_4xx(wire: tuple[bytes, dict[str, str]]) -> None:
    body, headers = wire
    with limits.configured(max_request_bytes=1024, max_instances=2, max_json_depth=3):
        envelope = rejected_or(lambda: decode_v1(body, headers))
        if envelope is not None:
            assert_valid_envelope(envelope)


@given(
    st.binary(max_size=64),
    st.dictionaries(
        st.sampled_from(["content-type", "content-encoding", "ce-specversion", "ce-id"]), st.text(max_size=12)
    ),
)
@fuzz
def test_decode_v1_any_bytes_and_header_text_give_instances_or_a_4xx(body: bytes, headers: dict[str, str]) -> None:
    envelope = rejected_or(lambda: decode_v1(body, headers))
    if envelope is not None:
        assert_valid_envelope(envelope)


@st.composite
def v2_requests(draw: st.DrawFn) -> V2Request:
    """Valid requests: one to three tensors of any datatype and shape (empty ones too), uniquely named."""
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    tensors = [V2Tensor.from_array(name, draw(DATATYPES.flatmap(all_bit_arrays))) for name in names]
    return V2Request("m", tuple(tensors), transport=draw(st.sampled_from(["rest", "grpc"])))


@given(v2_requests(), st.lists(st.sampled_from(["a", "b", "image", "other"]), max_size=2))
@fuzz
def test_decode_v2_any_request_and_declared_inputs_give_instances_or_a_4xx(
    request: V2Request, names: list[str]
) -> None:
    declared = tuple(TensorSpec(name, "BYTES", (-1,)) for name in names)
    with limits.configured(max_instances=3):
        envelope = rejected_or(lambda: decode_v2(request, declared))
    if envelope is not None:
        assert envelope.protocol == "v2"
        assert envelope.request is request
        assert 0 < len(envelope.instances) <= 3


# --- images and text --------------------------------------------------------------------------------

_IMAGE_MODES = {
    "PNG": ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"],
    "JPEG": ["RGB", "L", "CMYK"],
    "GIF": ["P", "L"],
    "BMP": ["RGB", "L", "P", "1"],
    "TIFF": ["RGB", "RGBA", "L", "CMYK", "I;16", "F", "1"],
    "WEBP": ["RGB", "RGBA"],
}


@st.composite
def image_files(draw: st.DrawFn) -> tuple[bytes, tuple[int, int]]:
    """A small image file of a served format and mode, perhaps with an EXIF orientation; and its size."""
    image_format = draw(st.sampled_from(sorted(_IMAGE_MODES)))
    mode = draw(st.sampled_from(_IMAGE_MODES[image_format]))
    width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    params: dict[str, Any] = {}
    if image_format in ("JPEG", "PNG", "TIFF", "WEBP") and draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(0, 9))  # Orientation; 0 and 9 are out of range
        params["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue(), (width, height)


@st.composite
def broken_images(draw: st.DrawFn) -> bytes:
    data, _ = draw(image_files())
    how = draw(st.sampled_from(["truncate", "flip", "both", "header"]))
    if how in ("truncate", "both"):
        data = data[: draw(st.integers(0, len(data) - 1))]
    if how in ("flip", "both") and data:
        for _ in range(draw(st.integers(1, 4))):
            index = draw(st.integers(0, len(data) - 1))
            data = data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1 :]
    if how == "header":  # a real signature, then noise
        data = data[:8] + draw(st.binary(max_size=64))
    return data


SIZES = st.one_of(st.none(), st.integers(1, 12), st.tuples(st.integers(1, 12), st.integers(1, 12)))


@given(st.one_of(st.binary(max_size=64), broken_images()))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow warns of the corrupt files it is given
def test_open_image_any_bytes_give_an_image_or_a_4xx(data: bytes) -> None:
    image = rejected_or(lambda: open_image(data, "instances[0]"))
    if image is not None:
        assert image.width * image.height <= limits.current().max_image_pixels
    pipeline = ImagePipeline(mode="RGB", resize=4, crop=4)
    tensor = rejected_or(lambda: pipeline(data, "instances[0]"))
    if tensor is not None:
        assert tensor.shape == (3, 4, 4)


@given(image_files(), SIZES, SIZES, st.sampled_from(["RGB", "L"]))
@fuzz
def test_image_pipeline_valid_images_give_the_configured_shape(
    file: tuple[bytes, tuple[int, int]], resize: Any, crop: Any, mode: str
) -> None:
    data, (width, height) = file
    pipeline = ImagePipeline(mode=mode, resize=resize, crop=crop)
    with limits.configured(max_image_aspect_ratio=1000.0):
        tensor = pipeline(data, "instances[0]")
    if crop is not None:
        expected = (crop, crop) if isinstance(crop, int) else crop
    elif resize is not None:
        rotated = open_image(data, "x").size  # EXIF orientation may swap width and height
        expected = resized_size(*rotated, resize)[::-1]
    else:
        expected = open_image(data, "x").size[::-1]
    assert tensor.shape == (pipeline.channels, *expected)
    assert tensor.dtype == np.float32
    assert np.all((tensor >= 0) & (tensor <= 1))
    assert sorted(open_image(data, "x").size) == sorted((width, height))


@given(image_files())
@fuzz_few
def test_open_image_limits_give_an_image_or_a_4xx(file: tuple[bytes, tuple[int, int]]) -> None:
    data, (width, height) = file
    with limits.configured(max_image_pixels=100, max_image_aspect_ratio=2.0):
        image = rejected_or(lambda: open_image(data, "instances[0]"))
    fits = width * height <= 100 and max(width, height) / min(width, height) <= 2.0
    assert (image is not None) == fits


INSTANCE_SHAPES = st.one_of(
    JSON_VALUES,
    st.binary(max_size=16),
    st.just(PNG),
    st.just(base64.b64encode(PNG).decode()),
    st.just("data:image/png;base64," + base64.b64encode(PNG).decode()),
    st.fixed_dictionaries({"b64": st.one_of(JUNK, st.just(base64.b64encode(PNG).decode()), ANY_TEXT)}),
    st.fixed_dictionaries({"image_bytes": st.one_of(JUNK, st.fixed_dictionaries({"b64": st.one_of(JUNK, ANY_TEXT)}))}),
    st.fixed_dictionaries({"image": st.one_of(JUNK, st.fixed_dictionaries({"b64": st.one_of(JUNK, ANY_TEXT)}))}),
)


@given(st.lists(INSTANCE_SHAPES, min_size=0, max_size=3))
@fuzz
def test_image_bytes_and_batch_any_instance_give_bytes_or_a_4xx(instances: list[Any]) -> None:
    for index, instance in enumerate(instances):
        data = rejected_or(lambda instance=instance, index=index: image_bytes(instance, f"instances[{index}]"))
        assert data is None or isinstance(data, bytes)
    batch = rejected_or(lambda: ImagePipeline(mode="RGB", resize=2, crop=2).batch(instances))
    if batch is not None:
        assert batch.shape == (len(instances), 3, 2, 2)


@given(
    st.one_of(
        ANY_TEXT,
        st.text(max_size=80),
        st.binary(max_size=80),
        st.fixed_dictionaries({"text": st.one_of(ANY_TEXT, st.binary(max_size=8), JUNK)}),
        JSON_VALUES,
    )
)
@fuzz
def test_text_bytes_any_instance_gives_utf8_or_a_4xx(instance: Any) -> None:
    with limits.configured(max_string_bytes=32):
        data = rejected_or(lambda: text_bytes(instance, "instances[0]"))
    if data is not None:
        assert len(data) <= 32
        data.decode("utf-8")  # valid UTF-8, or this raises
