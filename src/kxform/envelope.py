"""Request and response envelopes: what a client sent, as instances for ``preprocess``, and the reply.

V1 (``{"instances": [...]}``) arrives as a dict, or as bytes when the Content-Type is not JSON —
``curl -d @image.json`` sends ``application/x-www-form-urlencoded`` — so bytes are parsed as JSON
whatever the header says. A body with an image Content-Type (or an image's magic bytes) is one
instance of raw image bytes.

V2 (REST JSON or binary, and gRPC) arrives as kserve's ``InferRequest``: the elements of the
transformer's input become the instances (one encoded image or one string per ``BYTES`` element,
one row per instance of a numeric input). The reply is an ``InferResponse``: ``{name: array}``
from postprocess as it is, per-instance dicts as one output per key, anything else as the single
output ``predictions``; kserve honours ``binary_data_output`` and per-output ``binary_data``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from kxform.errors import RequestError
from kxform.transformer import Protocol

if TYPE_CHECKING:
    from kserve.protocol.infer_type import InferRequest, InferResponse

    from kxform.predictor.metadata import TensorSpec

__all__ = ["Envelope", "decode_v1", "decode_v2", "encode_v1", "encode_v2"]

_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"RIFF",
    b"II*\x00",
    b"MM\x00*",
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """The instances of one request and what the reply must look like."""

    instances: list[Any]
    protocol: Protocol = "v1"
    request: InferRequest | None = None  # the V2 request, for its id and requested outputs


def _is_image(body: bytes, content_type: str) -> bool:
    return content_type.startswith("image/") or body.startswith(_IMAGE_MAGIC)


def _instances(payload: Any) -> list[Any]:
    if not isinstance(payload, Mapping) or "instances" not in payload:
        keys = sorted(payload) if isinstance(payload, Mapping) else type(payload).__name__
        raise RequestError(f'request body has no "instances" (got {keys}); send {{"instances": [...]}}')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise RequestError(f'"instances" must be a list, got {type(instances).__name__}')
    if not instances:
        raise RequestError('"instances" is empty; send at least one instance')
    return instances


def decode_v1(body: Any, headers: Mapping[str, str] | None) -> Envelope:
    """The instances of a V1 request body (dict, JSON bytes of any Content-Type, or raw image bytes)."""
    if isinstance(body, bytes | bytearray):
        content_type = (headers or {}).get("content-type", "").lower()
        if _is_image(bytes(body), content_type):
            return Envelope([bytes(body)])
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(
                f"request body is neither JSON nor an image ({exc}); send "
                '{"instances": [...]} as JSON, or the image bytes with Content-Type image/png or image/jpeg'
            ) from exc
    return Envelope(_instances(body))


def encode_v1(result: Any) -> dict[str, Any]:
    """``{"predictions": [...]}`` for a list (one result per instance); a dict is the reply itself."""
    if isinstance(result, Mapping):
        return dict(result)
    return {"predictions": result}


def _v2_input(request: InferRequest, declared: tuple[TensorSpec, ...]) -> Any:
    names = [tensor.name for tensor in request.inputs]
    wanted = declared[0].name if declared else None
    if wanted is None and len(names) == 1:
        return request.inputs[0]
    for tensor in request.inputs:
        if tensor.name == wanted:
            return tensor
    expected = f"one input named '{wanted}'" if wanted else "exactly one input"
    raise RequestError(f"V2 request has inputs {names}; this transformer takes {expected}")


def decode_v2(request: InferRequest, declared: tuple[TensorSpec, ...]) -> Envelope:
    """The instances of a V2 request: the elements (BYTES) or rows (numeric) of its input."""
    tensor = _v2_input(request, declared)
    try:
        array = tensor.as_numpy()
    except Exception as exc:  # kserve raises bare ValueError/InvalidInput for a bad shape or payload
        raise RequestError(
            f"V2 input '{tensor.name}' cannot be read as {tensor.datatype} {tensor.shape}: {exc}"
        ) from exc
    if array.size == 0:
        raise RequestError(f"V2 input '{tensor.name}' is empty; send at least one element")
    if tensor.datatype == "BYTES":
        instances = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
    else:
        instances = list(array) if array.ndim else [array]
    return Envelope(instances, "v2", request)


def _column(values: list[Any]) -> np.ndarray[Any, Any]:
    if values and all(isinstance(v, str | bytes) for v in values):
        return np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=np.object_)
    return np.asarray(values)


def _outputs(result: Any) -> dict[str, np.ndarray[Any, Any]]:
    if isinstance(result, Mapping):
        return {str(name): np.asarray(value) for name, value in result.items()}
    if isinstance(result, list) and result and all(isinstance(row, Mapping) for row in result):
        return {str(key): _column([row[key] for row in result]) for key in result[0]}
    return {"predictions": _column(list(result)) if isinstance(result, list) else np.asarray(result)}


def encode_v2(
    result: Any, request: InferRequest, model_name: str, declared: tuple[TensorSpec, ...] = ()
) -> InferResponse:
    """An ``InferResponse`` for the V2 request, in the encoding it asked for; declared outputs keep their dtype."""
    from kserve.protocol.infer_type import InferOutput, InferResponse

    from kxform.codecs.dtypes import lossless_cast, v2_datatype

    datatypes = {spec.name: spec.datatype for spec in declared}
    outputs = []
    for name, array in _outputs(result).items():
        if name in datatypes:
            array = lossless_cast(array, datatypes[name], f"postprocess output '{name}'")
        datatype = v2_datatype(array.dtype)
        output = InferOutput(name, list(array.shape), datatype)
        output.set_data_from_numpy(array, binary_data=request.from_grpc)
        outputs.append(output)
    return InferResponse(
        response_id=request.id or "",
        model_name=model_name,
        infer_outputs=outputs,
        from_grpc=request.from_grpc,
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )
