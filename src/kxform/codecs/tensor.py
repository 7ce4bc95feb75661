"""V2 tensors on the wire: JSON ``data`` lists and binary-extension bytes, to numpy arrays and back.

``field`` is always the path of the tensor in the request (``"inputs[0]"``); messages name
``<field>.data``, ``<field>.shape`` or one element of the data, and say what to send instead.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Final, TypedDict

import numpy as np

from kxform import limits
from kxform.codecs.dtypes import Array, lossless_cast, numpy_dtype, v2_datatype
from kxform.errors import RequestError

__all__ = [
    "BINARY_CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "JsonTensor",
    "decode_nested_list",
    "decode_strings",
    "element_count",
    "encode_array",
    "encode_strings",
    "from_raw_bytes",
    "to_raw_bytes",
]

JSON_CONTENT_TYPE: Final = "application/json"
"""A V2 request or response whose tensors are all JSON."""
BINARY_CONTENT_TYPE: Final = "application/octet-stream"
"""A V2 request or response using the binary tensor data extension (JSON header, then raw tensors)."""

# The binary extension's BYTES layout, as in tritonclient.utils.serialize_byte_tensor.
_LENGTH_PREFIX: Final = struct.Struct("<I")


class JsonTensor(TypedDict):
    """The tensor fields of a V2 JSON input or output, ``data`` flat in row-major order."""

    datatype: str
    shape: list[int]
    data: list[Any]


def element_count(shape: Sequence[int], field: str) -> int:
    """How many elements ``shape`` holds, or a RequestError if it is not a list of non-negative ints."""
    if not isinstance(shape, Sequence) or not all(_is_dimension(dim) for dim in shape):
        raise RequestError(f"{field}.shape must be a list of non-negative integers, got {shape!r}")
    count = math.prod(shape)
    if count == 0:  # no elements, yet numpy cannot make [0, 2**63]: every dimension within the limit
        limits.current().check_shape(shape, field)
    return count


def _is_dimension(dim: object) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def decode_nested_list(data: object, datatype: str, shape: Sequence[int], field: str) -> Array:
    """The array of V2 JSON ``data``: nested lists or a flat list in row-major order, as V2 allows."""
    count = element_count(shape, field)
    dtype = numpy_dtype(datatype)
    if not isinstance(data, list | tuple):
        raise RequestError(f"{field}.data must be a list of {datatype} values, got {type(data).__name__}")
    flat = _flat_values(data, datatype, field)
    if flat.size != count:
        raise RequestError(
            f"{field}.data has {flat.size} elements but shape {list(shape)} needs {count}; "
            "send that many values in row-major order, or fix the shape"
        )
    if count == 0:
        return np.empty(tuple(shape), dtype)
    return lossless_cast(flat.reshape(tuple(shape)), datatype, f"{field}.data")


def _flat_values(data: Sequence[object], datatype: str, field: str) -> Array:
    if datatype == "BYTES":
        return decode_strings(_flatten(data), f"{field}.data")
    return _numbers(data, datatype, field)


def _numbers(data: Sequence[object], datatype: str, field: str) -> Array:
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError) as exc:
        raise RequestError(
            f"{field}.data is not a list of numbers or of equal-length lists ({exc}); "
            "send a flat list in row-major order"
        ) from exc
    if array.dtype == np.object_:
        raise RequestError(
            f"{field}.data holds values that are not numbers (null, objects, or integers beyond 64 bits); "
            "send numbers only"
        )
    if array.dtype.kind == "f" and datatype == "UINT64":
        return _uint64(data, array)
    return array


def _uint64(data: Sequence[object], inferred: Array) -> Array:
    """Ints on both sides of 2**63 that numpy inferred as FP64; exact as UINT64 if all are ints >= 0."""
    values = np.asarray(data, dtype=np.object_).ravel().tolist()
    if not all(type(value) is int and value >= 0 for value in values):
        return inferred  # floats or negatives: lossless_cast refuses them
    return np.array(values, dtype=np.uint64).reshape(inferred.shape)


def _flatten(values: Sequence[object]) -> list[object]:
    if not any(isinstance(value, list | tuple) for value in values):
        return list(values)
    flat: list[object] = []
    for value in values:
        flat.extend(_flatten(value) if isinstance(value, list | tuple) else (value,))
    return flat


def encode_array(array: Array, field: str = "tensor") -> JsonTensor:
    """The V2 JSON tensor fields of ``array``; BYTES elements become str, so they must be UTF-8."""
    datatype = v2_datatype(array.dtype)
    data = encode_strings(array, field) if datatype == "BYTES" else array.ravel().tolist()
    return {"datatype": datatype, "shape": list(array.shape), "data": data}


def decode_strings(values: Sequence[object], field: str) -> Array:
    """A 1-D BYTES array (object array of ``bytes``) of ``values``; str is encoded as UTF-8."""
    array = np.empty(len(values), dtype=np.object_)
    for index, value in enumerate(values):
        if isinstance(value, str):
            array[index] = value.encode("utf-8")
        elif isinstance(value, bytes | bytearray | memoryview):
            array[index] = bytes(value)
        else:
            raise RequestError(
                f"{field}[{index}] is {type(value).__name__}, not a string; BYTES data is a list of strings"
            )
    return array


def encode_strings(array: Array, field: str = "tensor") -> list[str]:
    """The elements of a BYTES array as str, flat in row-major order; each must be valid UTF-8."""
    return [_as_text(value, field, index) for index, value in enumerate(array.ravel().tolist())]


def _as_text(value: object, field: str, index: int) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        raise RequestError(f"{field}[{index}] is {type(value).__name__}; a BYTES tensor holds bytes or str")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"{field}[{index}] is not valid UTF-8 ({exc.reason}), so JSON cannot carry it; "
            "ask for binary data (the binary_data parameter)"
        ) from exc


def to_raw_bytes(array: Array, field: str = "tensor") -> bytes:
    """``array`` as the binary extension sends it: little-endian, row-major; BYTES length-prefixed."""
    if v2_datatype(array.dtype) == "BYTES":
        return _serialize_strings(array, field)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _serialize_strings(array: Array, field: str) -> bytes:
    parts: list[bytes] = []
    for index, value in enumerate(array.ravel().tolist()):
        data = value.encode("utf-8") if isinstance(value, str) else value
        if not isinstance(data, bytes):
            raise RequestError(f"{field}[{index}] is {type(value).__name__}; a BYTES tensor holds bytes or str")
        parts += (_LENGTH_PREFIX.pack(len(data)), data)
    return b"".join(parts)


def from_raw_bytes(raw: bytes | memoryview, datatype: str, shape: Sequence[int], field: str) -> Array:
    """The array of binary-extension bytes; numeric arrays are read-only views of ``raw`` (no copy)."""
    count = element_count(shape, field)
    if datatype == "BYTES":
        return _deserialize_strings(raw, count, field).reshape(tuple(shape))
    dtype = numpy_dtype(datatype).newbyteorder("<")
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise RequestError(
            f"{field} has {len(raw)} bytes of binary data but shape {list(shape)} of {datatype} needs "
            f"{expected} ({count} x {dtype.itemsize}); send {expected} bytes or fix the shape"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def _deserialize_strings(raw: bytes | memoryview, count: int, field: str) -> Array:
    view = memoryview(raw)
    if count * _LENGTH_PREFIX.size > len(view):  # checked before allocating: the shape may be absurd
        raise RequestError(
            f"{field} has {len(view)} bytes of binary data, too few for {count} BYTES elements of at "
            "least 4 bytes each; send one length-prefixed element per element of the shape"
        )
    array = np.empty(count, dtype=np.object_)
    offset = 0
    for index in range(count):
        if offset + _LENGTH_PREFIX.size > len(view):
            raise _truncated(field, index, count)
        (length,) = _LENGTH_PREFIX.unpack_from(view, offset)
        offset += _LENGTH_PREFIX.size
        if offset + length > len(view):
            raise _truncated(field, index, count)
        array[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise RequestError(
            f"{field} has {len(view) - offset} bytes of binary data after its {count} BYTES elements; "
            "send exactly one length-prefixed element per element of the shape"
        )
    return array


def _truncated(field: str, index: int, count: int) -> RequestError:
    return RequestError(
        f"{field} binary data ends inside BYTES element {index} of {count}; each element is a 4-byte "
        "little-endian length followed by that many bytes, one per element of the shape"
    )
