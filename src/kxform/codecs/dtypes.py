"""The V2 (Open Inference Protocol) datatypes, their numpy dtypes and Triton config names, and safe casts.

BF16 is served by ``ml_dtypes.bfloat16`` (numpy has no bfloat16); without ``ml_dtypes`` installed every
other datatype still works and asking for BF16 raises a :class:`~kxform.errors.RequestError`.

Casting rule of :func:`lossless_cast` (what a request may send for what a model declares):

======================  =====================================================================
source -> target        allowed when
======================  =====================================================================
same datatype           always (the array is returned as it is, no copy)
BOOL -> any number      always: 0 and 1 are exact in every numeric type
integer -> integer      every value lies in the target's range (so no negative -> UINT*)
integer -> float        every value is an integer the float represents exactly (|x| <= 2**24
                        for FP32), so JSON ``[0, 255]`` is accepted for an FP32 input
float -> float          always, rounding to the nearest value, unless a finite value
                        overflows to infinity. Narrowing (FP64 -> FP32/FP16/BF16) is allowed on
                        purpose: JSON numbers parse as FP64, and it is the cast every model
                        input of FP32 needs
numpy str/bytes ->      always (numpy ``str_`` is encoded as UTF-8); an object array is taken
BYTES                   as BYTES as it is
anything else           never: float -> integer or BOOL, integer -> BOOL, strings <-> numbers
======================  =====================================================================
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kxform.errors import RequestError

__all__ = [
    "V2_DATATYPES",
    "config_datatype_to_v2",
    "lossless_cast",
    "numpy_dtype",
    "v2_datatype",
    "v2_to_config_datatype",
]

Array = npt.NDArray[Any]  # the arrays codecs pass around; their dtype is checked at run time

_NUMPY_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),  # each element a Python ``bytes``
}
_HAS_ML_DTYPES: Final = importlib.util.find_spec("ml_dtypes") is not None
if _HAS_ML_DTYPES:
    import ml_dtypes

    _NUMPY_DTYPES["BF16"] = np.dtype(ml_dtypes.bfloat16)

V2_DATATYPES: Final[tuple[str, ...]] = (*_NUMPY_DTYPES, *(() if _HAS_ML_DTYPES else ("BF16",)))
"""Every V2 datatype name kxform knows; BF16 needs ``ml_dtypes`` at run time."""

_V2_BY_DTYPE: Final = {dtype: name for name, dtype in _NUMPY_DTYPES.items()}
_STRING_KINDS: Final = frozenset("OSU")  # object (bytes), numpy bytes_, numpy str_

# Triton's config.pbtxt names; TYPE_STRING is Triton's name for BYTES.
_CONFIG_TO_V2: Final = {f"TYPE_{name}": name for name in V2_DATATYPES if name != "BYTES"} | {"TYPE_STRING": "BYTES"}
_V2_TO_CONFIG: Final = {v2: config for config, v2 in _CONFIG_TO_V2.items()}

_INTEGERS: Final = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
# Bits of significand: every integer of at most this many bits is exact in the float.
_FLOAT_EXACT_BITS: Final = {"FP16": 11, "BF16": 8, "FP32": 24, "FP64": 53}


def _supported() -> str:
    return ", ".join(V2_DATATYPES)


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype holding V2 ``datatype`` (``"FP32"`` -> ``float32``, ``"BYTES"`` -> ``object``)."""
    try:
        return _NUMPY_DTYPES[datatype]
    except KeyError:
        if datatype == "BF16":
            raise RequestError(
                "datatype BF16 needs the ml_dtypes package, which is not installed; "
                "`pip install ml_dtypes` in the transformer's image"
            ) from None
        raise RequestError(f"unknown datatype {datatype!r}; use one of {_supported()}") from None


def v2_datatype(dtype: npt.DTypeLike) -> str:
    """The V2 datatype name of a numpy dtype; str and bytes dtypes are BYTES."""
    resolved = np.dtype(dtype)
    if resolved.kind in _STRING_KINDS:
        return "BYTES"
    name = _V2_BY_DTYPE.get(resolved.newbyteorder("="))
    if name is None:
        raise RequestError(
            f"numpy dtype {resolved} has no V2 datatype; convert the array to one of "
            f"{', '.join(str(d) for d in _V2_BY_DTYPE)}"
        )
    return name


def config_datatype_to_v2(config_datatype: str) -> str:
    """The V2 name of a Triton ``config.pbtxt`` data type: ``"TYPE_FP32"`` -> ``"FP32"``."""
    try:
        return _CONFIG_TO_V2[config_datatype]
    except KeyError:
        raise RequestError(
            f"unknown Triton data_type {config_datatype!r}; use one of {', '.join(_CONFIG_TO_V2)}"
        ) from None


def v2_to_config_datatype(datatype: str) -> str:
    """The Triton ``config.pbtxt`` name of a V2 datatype: ``"BYTES"`` -> ``"TYPE_STRING"``."""
    try:
        return _V2_TO_CONFIG[datatype]
    except KeyError:
        raise RequestError(f"unknown datatype {datatype!r}; use one of {_supported()}") from None


def lossless_cast(array: Array, datatype: str, field: str) -> Array:
    """``array`` as V2 ``datatype``, or a RequestError naming ``field`` if the cast could lose data.

    The rule is the table of this module's docstring; an array already of ``datatype`` is not copied.
    """
    target = numpy_dtype(datatype)
    if array.dtype == target:
        return array
    source = _source_datatype(array, datatype, field)
    if source == datatype:  # numpy str/bytes storage for BYTES, or the other byte order
        return _to_bytes_objects(array) if datatype == "BYTES" else array.astype(target)
    check = _CHECKS.get((_category(source), _category(datatype)))
    if check is None:
        raise _cast_error(field, source, datatype, _REFUSALS[_category(source), _category(datatype)])
    return check(array, source, datatype, field)


def _source_datatype(array: Array, datatype: str, field: str) -> str:
    try:
        return v2_datatype(array.dtype)
    except RequestError:
        raise RequestError(
            f"{field} holds {array.dtype} values, which no V2 datatype carries; "
            f"send {datatype} values as the model expects"
        ) from None


def _category(datatype: str) -> str:
    if datatype in _INTEGERS:
        return "integer"
    if datatype in _FLOAT_EXACT_BITS:
        return "float"
    return "bool" if datatype == "BOOL" else "strings"


def _cast_error(field: str, source: str, datatype: str, reason: str) -> RequestError:
    return RequestError(f"{field} has {source} values but the model expects {datatype}: {reason}")


def _from_bool(array: Array, source: str, datatype: str, field: str) -> Array:
    return array.astype(numpy_dtype(datatype))


def _integer_to_integer(array: Array, source: str, datatype: str, field: str) -> Array:
    target = numpy_dtype(datatype)
    if array.size:
        low, high = int(array.min()), int(array.max())  # Python ints: exact for INT64 and UINT64 alike
        info = np.iinfo(target)
        if low < info.min or high > info.max:
            raise _cast_error(
                field,
                source,
                datatype,
                f"{low if low < info.min else high} is outside {info.min}..{info.max}",
            )
    return array.astype(target)


def _integer_to_float(array: Array, source: str, datatype: str, field: str) -> Array:
    limit = 2 ** _FLOAT_EXACT_BITS[datatype]
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < -limit or high > limit:
            worst = low if -low > high else high
            raise _cast_error(
                field,
                source,
                datatype,
                f"{worst} is not exact in {datatype} (|x| <= {limit} is); send floats",
            )
    return array.astype(numpy_dtype(datatype))


def _float_to_float(array: Array, source: str, datatype: str, field: str) -> Array:
    with np.errstate(over="ignore"):  # overflow is reported below, as a RequestError
        result = array.astype(numpy_dtype(datatype))
    # Only a narrowing cast can overflow; infinities the request sent stay infinities.
    if result.dtype.itemsize < array.dtype.itemsize and np.any(np.isinf(result) & np.isfinite(array)):
        raise _cast_error(field, source, datatype, f"some values overflow {datatype} to infinity")
    return result


def _to_bytes_objects(array: Array) -> Array:
    if array.dtype.kind == "U":
        array = np.char.encode(array, "utf-8")
    return array.astype(np.object_)


_Check = Callable[[Array, str, str, str], Array]
_CHECKS: Final[dict[tuple[str, str], _Check]] = {
    ("bool", "integer"): _from_bool,
    ("bool", "float"): _from_bool,
    ("integer", "integer"): _integer_to_integer,
    ("integer", "float"): _integer_to_float,
    ("float", "float"): _float_to_float,
}
_REFUSALS: Final[dict[tuple[str, str], str]] = {
    ("float", "integer"): "floats cannot become integers without losing their fraction; send whole numbers",
    ("float", "bool"): "send true/false",
    ("integer", "bool"): "send true/false",
    ("strings", "integer"): "strings are not numbers; send numbers, not quoted strings",
    ("strings", "float"): "strings are not numbers; send numbers, not quoted strings",
    ("strings", "bool"): "strings are not booleans; send true/false",
    ("bool", "strings"): "send strings",
    ("integer", "strings"): "send strings",
    ("float", "strings"): "send strings",
}
