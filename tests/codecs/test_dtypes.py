"""The V2 datatype table and the casts a request may ask of it."""

from __future__ import annotations

import re
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from kxform.codecs import dtypes
from kxform.codecs.dtypes import (
    V2_DATATYPES,
    config_datatype_to_v2,
    lossless_cast,
    numpy_dtype,
    v2_datatype,
    v2_to_config_datatype,
)
from kxform.errors import RequestError

EXPECTED_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BF16": ml_dtypes.bfloat16,
    "BYTES": np.object_,
}


def test_v2_datatypes_are_the_fourteen_of_the_protocol() -> None:
    assert sorted(V2_DATATYPES) == sorted(EXPECTED_DTYPES)


@pytest.mark.parametrize("datatype", list(EXPECTED_DTYPES))
def test_numpy_dtype_and_v2_datatype_map_both_ways(datatype: str) -> None:
    assert numpy_dtype(datatype) == np.dtype(EXPECTED_DTYPES[datatype])
    assert v2_datatype(numpy_dtype(datatype)) == datatype


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        pytest.param(np.dtype(">i4"), "INT32", id="big-endian"),
        pytest.param(np.dtype("S5"), "BYTES", id="numpy-bytes"),
        pytest.param(np.dtype("U5"), "BYTES", id="numpy-str"),
        pytest.param(float, "FP64", id="python-float"),
    ],
)
def test_v2_datatype_accepts_other_spellings_of_a_dtype(dtype: Any, datatype: str) -> None:
    assert v2_datatype(dtype) == datatype


@pytest.mark.parametrize("name", ["FLOAT32", "fp32", "TYPE_FP32", ""])
def test_numpy_dtype_unknown_name_raises_listing_the_supported_ones(name: str) -> None:
    with pytest.raises(RequestError, match=rf"unknown datatype '{name}'; use one of BOOL, .*FP32") as info:
        numpy_dtype(name)
    assert info.value.http_status == 400


@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(np.complex64, id="complex"),
        pytest.param(np.dtype("datetime64[s]"), id="datetime"),
        pytest.param(np.dtype([("a", "i4")]), id="structured"),
    ],
)
def test_v2_datatype_unknown_dtype_raises_naming_it(dtype: Any) -> None:
    expected = re.escape(f"numpy dtype {np.dtype(dtype)} has no V2 datatype; convert the array to one of bool")
    with pytest.raises(RequestError, match=expected):
        v2_datatype(dtype)


def test_numpy_dtype_bf16_without_ml_dtypes_says_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(dtypes._NUMPY_DTYPES, "BF16")
    with pytest.raises(RequestError, match=r"BF16 needs the ml_dtypes package.*pip install ml_dtypes"):
        numpy_dtype("BF16")


@pytest.mark.parametrize(
    ("config", "v2"),
    [pytest.param(f"TYPE_{name}", name, id=name) for name in V2_DATATYPES if name != "BYTES"]
    + [pytest.param("TYPE_STRING", "BYTES", id="STRING")],
)
def test_config_datatype_to_v2_maps_both_ways(config: str, v2: str) -> None:
    assert config_datatype_to_v2(config) == v2
    assert v2_to_config_datatype(v2) == config


@pytest.mark.parametrize(
    ("convert", "name"),
    [
        pytest.param(config_datatype_to_v2, "TYPE_INVALID", id="config-invalid"),
        pytest.param(config_datatype_to_v2, "FP32", id="config-given-v2"),
        pytest.param(v2_to_config_datatype, "TYPE_FP32", id="v2-given-config"),
    ],
)
def test_config_names_unknown_raise_naming_the_name(convert: Any, name: str) -> None:
    with pytest.raises(RequestError, match=f"unknown .*'{name}'; use one of"):
        convert(name)


@pytest.mark.parametrize(
    ("values", "datatype", "expected"),
    [
        pytest.param(np.array([0, 255]), "FP32", np.array([0.0, 255.0], np.float32), id="json-ints-to-fp32"),
        pytest.param(np.array([2**24, -(2**24)]), "FP32", np.array([2**24, -(2**24)], np.float32), id="fp32-edge"),
        pytest.param(np.array([2**53]), "FP64", np.array([2**53], np.float64), id="fp64-edge"),
        pytest.param(np.array([True, False]), "INT8", np.array([1, 0], np.int8), id="bool-to-int"),
        pytest.param(np.array([True]), "BF16", np.array([1], ml_dtypes.bfloat16), id="bool-to-bf16"),
        pytest.param(np.array([-128, 127]), "INT8", np.array([-128, 127], np.int8), id="int64-to-int8"),
        pytest.param(np.array([0, 255]), "UINT8", np.array([0, 255], np.uint8), id="int64-to-uint8"),
        pytest.param(np.array([2**64 - 1]), "UINT64", np.array([2**64 - 1], np.uint64), id="uint64-max"),
        pytest.param(np.array([0.1, 1e30]), "FP32", np.array([0.1, 1e30], np.float32), id="fp64-to-fp32"),
        pytest.param(np.array([0.1, -65504.0]), "FP16", np.array([0.1, -65504], np.float16), id="fp64-to-fp16"),
        pytest.param(np.array([0.1]), "BF16", np.array([0.1], ml_dtypes.bfloat16), id="fp64-to-bf16"),
        pytest.param(np.array([np.inf, np.nan]), "FP16", np.array([np.inf, np.nan], np.float16), id="inf-stays"),
        pytest.param(np.array([0.5], np.float32), "FP64", np.array([0.5]), id="fp32-to-fp64"),
        pytest.param(np.array(["é", "b"]), "BYTES", np.array(["é".encode(), b"b"], object), id="str-to-bytes"),
        pytest.param(np.array([b"a\x00"], "S2"), "BYTES", np.array([b"a"], object), id="numpy-bytes"),
    ],
)
def test_lossless_cast_accepts_casts_that_keep_every_value(
    values: np.ndarray, datatype: str, expected: np.ndarray
) -> None:
    cast = lossless_cast(values, datatype, "inputs[0].data")
    assert cast.dtype == numpy_dtype(datatype)
    np.testing.assert_array_equal(cast.astype(expected.dtype), expected)


def test_lossless_cast_same_dtype_returns_the_array_itself() -> None:
    array = np.arange(4, dtype=np.float32)
    assert lossless_cast(array, "FP32", "inputs[0].data") is array


@pytest.mark.parametrize(
    ("values", "datatype", "reason"),
    [
        pytest.param(np.array([1.5]), "INT32", "floats cannot become integers", id="float-to-int"),
        pytest.param(np.array([1.0]), "INT64", "send whole numbers", id="integral-float-to-int"),
        pytest.param(np.array([-1, 3]), "UINT8", "-1 is outside 0..255", id="negative-to-uint"),
        pytest.param(np.array([300]), "UINT8", "300 is outside 0..255", id="overflow-uint8"),
        pytest.param(np.array([2**63], np.uint64), "INT64", "is outside", id="uint64-to-int64"),
        pytest.param(np.array([2**24 + 1]), "FP32", "16777217 is not exact in FP32", id="int-not-exact"),
        pytest.param(np.array([-4097]), "BF16", "-4097 is not exact in BF16", id="int-not-exact-bf16"),
        pytest.param(np.array([1e6]), "FP16", "overflow FP16 to infinity", id="fp16-overflow"),
        pytest.param(np.array(["1.5"]), "FP32", "strings are not numbers", id="strings-to-numbers"),
        pytest.param(np.array([0, 1]), "BOOL", "send true/false", id="int-to-bool"),
        pytest.param(np.array([1.0]), "BYTES", "send strings", id="numbers-to-strings"),
        pytest.param(np.array([1j]), "FP32", "complex128 values, which no V2 datatype carries", id="complex"),
    ],
)
def test_lossless_cast_refuses_casts_that_lose_data_naming_field_and_datatypes(
    values: np.ndarray, datatype: str, reason: str
) -> None:
    with pytest.raises(RequestError, match=reason) as info:
        lossless_cast(values, datatype, "inputs[2].data")
    assert info.value.message.startswith("inputs[2].data ")
    assert datatype in info.value.message
