"""V2 tensors through JSON and through the binary extension, for every datatype."""

from __future__ import annotations

import json
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.utils
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kxform.codecs.dtypes import V2_DATATYPES, numpy_dtype
from kxform.codecs.tensor import (
    decode_nested_list,
    decode_strings,
    encode_array,
    encode_strings,
    from_raw_bytes,
    to_raw_bytes,
)
from kxform.errors import RequestError

# 14 datatypes x 3 properties: fewer examples each keeps the suite within seconds.
round_trips = settings(max_examples=40, deadline=None)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


def arrays_of(datatype: str, *, utf8: bool) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``datatype``, with every edge value hypothesis knows (NaN, -0.0, extremes, empties)."""
    if datatype == "BYTES":
        elements = st.text().map(str.encode) if utf8 else st.binary()
        return hnp.arrays(np.object_, SHAPES, elements=elements)
    if datatype == "BF16":  # every bit pattern: hypothesis knows no ml_dtypes
        return hnp.arrays(np.uint16, SHAPES).map(lambda bits: bits.view(ml_dtypes.bfloat16))
    return hnp.arrays(numpy_dtype(datatype), SHAPES)


def assert_same_tensor(decoded: np.ndarray, original: np.ndarray) -> None:
    assert decoded.dtype == original.dtype
    assert decoded.shape == original.shape
    if original.dtype == np.object_:
        assert decoded.tolist() == original.tolist()
        return
    with np.errstate(invalid="ignore"):  # BF16 NaN -> float64 warns
        decoded, original = decoded.astype(np.float64), original.astype(np.float64)
    np.testing.assert_array_equal(decoded, original)  # NaN equals NaN here
    signed = ~np.isnan(original)  # JSON keeps the sign of -0.0, not that of NaN
    np.testing.assert_array_equal(np.signbit(decoded[signed]), np.signbit(original[signed]))


@pytest.mark.parametrize("datatype", V2_DATATYPES)
@given(data=st.data())
@round_trips
def test_encode_array_round_trips_through_json_and_decode_nested_list(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays_of(datatype, utf8=True))
    wire = json.loads(json.dumps(encode_array(array)))
    assert wire["datatype"] == datatype
    decoded = decode_nested_list(wire["data"], wire["datatype"], wire["shape"], "outputs[0]")
    assert_same_tensor(decoded, array)


@pytest.mark.parametrize("datatype", V2_DATATYPES)
@given(data=st.data())
@round_trips
def test_decode_nested_list_nested_and_flat_data_give_the_same_array(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays_of(datatype, utf8=True).filter(lambda a: a.ndim > 0))
    flat = encode_array(array)
    nested = np.vectorize(bytes.decode, otypes=[object])(array).tolist() if datatype == "BYTES" else array.tolist()
    decoded = decode_nested_list(nested, datatype, flat["shape"], "inputs[0]")
    assert_same_tensor(decoded, decode_nested_list(flat["data"], datatype, flat["shape"], "inputs[0]"))


@pytest.mark.parametrize("datatype", V2_DATATYPES)
@given(data=st.data())
@round_trips
def test_to_raw_bytes_round_trips_every_bit_through_from_raw_bytes(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays_of(datatype, utf8=False))
    decoded = from_raw_bytes(to_raw_bytes(array), datatype, list(array.shape), "inputs[0]")
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    if datatype == "BYTES":
        assert decoded.tolist() == array.tolist()
    else:
        assert decoded.tobytes() == array.tobytes()


@given(array=hnp.arrays(np.object_, SHAPES, elements=st.binary()))
@round_trips
def test_to_raw_bytes_bytes_matches_tritonclient_serialization(array: np.ndarray) -> None:
    raw = to_raw_bytes(array)
    if array.size:
        assert raw == tritonclient.utils.serialize_byte_tensor(array).item()
        expected = tritonclient.utils.deserialize_bytes_tensor(raw).tolist()
        assert from_raw_bytes(raw, "BYTES", [array.size], "inputs[0]").tolist() == expected
    else:
        assert raw == b""


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.arange(6, dtype=">i4").reshape(2, 3), id="big-endian"),
        pytest.param(np.arange(12, dtype="<f4").reshape(3, 4)[:, ::2], id="strided"),
        pytest.param(np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)), id="fortran-order"),
    ],
)
def test_to_raw_bytes_writes_little_endian_row_major(array: np.ndarray) -> None:
    expected = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    assert to_raw_bytes(array) == expected
    assert to_raw_bytes(array) == np.array(array.tolist(), dtype="<" + array.dtype.str[1:]).tobytes()


def test_from_raw_bytes_numeric_is_a_read_only_view_without_copy() -> None:
    raw = np.arange(6, dtype=np.float32).tobytes()
    decoded = from_raw_bytes(raw, "FP32", [2, 3], "inputs[0]")
    assert not decoded.flags.owndata
    assert not decoded.flags.writeable
    np.testing.assert_array_equal(decoded, np.arange(6, dtype=np.float32).reshape(2, 3))


def test_encode_array_emits_flat_row_major_data_and_str_for_bytes() -> None:
    assert encode_array(np.array([[1, 2], [3, 4]], np.int32)) == {
        "datatype": "INT32",
        "shape": [2, 2],
        "data": [1, 2, 3, 4],
    }
    assert encode_array(np.array([[b"a", "é".encode()]], object)) == {
        "datatype": "BYTES",
        "shape": [1, 2],
        "data": ["a", "é"],
    }


def test_decode_strings_encodes_str_as_utf8_and_keeps_bytes() -> None:
    decoded = decode_strings(["é", b"\xff", bytearray(b"z")], "inputs[0].data")
    assert decoded.dtype == np.object_
    assert decoded.tolist() == ["é".encode(), b"\xff", b"z"]
    assert encode_strings(decoded[[0, 2]]) == ["é", "z"]


@pytest.mark.parametrize(
    ("data", "datatype", "shape", "message"),
    [
        pytest.param(
            [1, 2, 3], "FP32", [2, 2], r"inputs\[1\]\.data has 3 elements but shape \[2, 2\] needs 4; ", id="count"
        ),
        pytest.param(
            [[1, 2], [3]], "FP32", [3], r"inputs\[1\]\.data is not a list of numbers or of equal-length", id="ragged"
        ),
        pytest.param([1, None], "FP32", [2], r"inputs\[1\]\.data holds values that are not numbers", id="null"),
        pytest.param([2**70], "INT64", [1], r"inputs\[1\]\.data holds values that are not numbers", id="huge-int"),
        pytest.param(
            [1.5, 2], "INT32", [2], r"inputs\[1\]\.data has FP64 values but the model expects INT32", id="float-int"
        ),
        pytest.param(
            [-1], "UINT8", [1], r"inputs\[1\]\.data has INT64 values .* -1 is outside 0\.\.255", id="negative-uint"
        ),
        pytest.param(
            ["1"], "FP32", [1], r"inputs\[1\]\.data has BYTES values .* strings are not numbers", id="string-num"
        ),
        pytest.param(5, "FP32", [1], r"inputs\[1\]\.data must be a list of FP32 values, got int", id="scalar"),
        pytest.param([1], "FP32", [-1], r"inputs\[1\]\.shape must be a list of non-negative integers", id="neg-dim"),
        pytest.param([1], "FP32", [True], r"inputs\[1\]\.shape must be a list of non-negative integers", id="bool-dim"),
        pytest.param(["a", 3], "BYTES", [2], r"inputs\[1\]\.data\[1\] is int, not a string", id="bytes-int"),
        pytest.param([1], "FP8", [1], r"unknown datatype 'FP8'", id="datatype"),
    ],
)
def test_decode_nested_list_bad_data_raises_naming_the_field(
    data: Any, datatype: str, shape: list[int], message: str
) -> None:
    with pytest.raises(RequestError, match=message) as info:
        decode_nested_list(data, datatype, shape, "inputs[1]")
    assert info.value.http_status == 400


def test_decode_nested_list_empty_tensor_has_the_declared_dtype() -> None:
    decoded = decode_nested_list([[], []], "INT32", [2, 0], "inputs[0]")
    assert (decoded.dtype, decoded.shape) == (np.dtype(np.int32), (2, 0))


def test_encode_array_non_utf8_bytes_raises_pointing_to_binary_data() -> None:
    with pytest.raises(RequestError, match=r"outputs\[0\]\[1\] is not valid UTF-8 .* binary_data"):
        encode_array(np.array([b"ok", b"\xff"], object), "outputs[0]")


@pytest.mark.parametrize(
    ("raw", "datatype", "shape", "message"),
    [
        pytest.param(
            b"\x00" * 7, "FP32", [2], r"inputs\[0\] has 7 bytes .* needs 8 \(2 x 4\); send 8 bytes", id="short"
        ),
        pytest.param(b"\x00" * 9, "FP32", [2], r"inputs\[0\] has 9 bytes .* needs 8", id="long"),
        pytest.param(b"\x05\x00\x00\x00abc", "BYTES", [1], r"ends inside BYTES element 0 of 1", id="cut-element"),
        pytest.param(
            b"\x01\x00\x00\x00a\x01\x00\x00", "BYTES", [2], r"ends inside BYTES element 1 of 2", id="cut-prefix"
        ),
        pytest.param(
            b"\x01\x00\x00\x00ab", "BYTES", [1], r"has 1 bytes of binary data after its 1 BYTES", id="trailing"
        ),
        pytest.param(b"", "BYTES", [10**12], r"too few for 1000000000000 BYTES elements", id="absurd-shape"),
    ],
)
def test_from_raw_bytes_wrong_length_raises_naming_the_field(
    raw: bytes, datatype: str, shape: list[int], message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        from_raw_bytes(raw, datatype, shape, "inputs[0]")
