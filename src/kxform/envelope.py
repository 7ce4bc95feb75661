"""Request and response envelopes: what a client sent, as instances for ``preprocess``, and the reply.

V1 (``{"instances": [...]}``) arrives as body bytes: its ``Content-Encoding`` is undone first and a
CloudEvent (binary or structured) unwrapped. JSON is parsed whatever the Content-Type says —
``curl -d @image.json`` sends ``application/x-www-form-urlencoded`` — and a body that is an image
(an ``image/*`` Content-Type, or an image's magic bytes under any other type or none) is one
instance of raw image bytes.

V2 (REST JSON or binary, and gRPC) arrives as a validated ``kxform.v2.V2Request``: the elements of
the transformer's input become the instances (one encoded image or one string per ``BYTES``
element, one row per instance of a numeric input). The reply is a ``V2Response``: ``{name: array}``
from postprocess as it is, per-instance dicts as one output per key, anything else as the single
output ``predictions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kxform import limits
from kxform.body import decode_content_encoding
from kxform.cloudevents import CloudEvent, decode_cloudevent
from kxform.codecs.image import looks_like_image
from kxform.codecs.jsonbody import load_json
from kxform.errors import RequestError
from kxform.transformer import Protocol
from kxform.v2 import V2Request, V2Response, V2Tensor

if TYPE_CHECKING:
    from kxform.spec import TensorSpec

__all__ = ["Envelope", "decode_v1", "decode_v2", "encode_v1", "encode_v2", "instances_of"]

_FIX_V1 = '{"instances": [...]} as JSON, or the image bytes as the body (Content-Type image/png or image/jpeg)'


@dataclass(frozen=True, slots=True)
class Envelope:
    """The instances of one request and what the reply must look like."""

    instances: list[Any]
    protocol: Protocol = "v1"
    request: V2Request | None = None  # the V2 request, for its id and requested outputs
    event: CloudEvent | None = None  # the CloudEvent a V1 request came in: the reply is one too


def _is_image(body: bytes, content_type: str) -> bool:
    return content_type.startswith("image/") or looks_like_image(body)


def instances_of(payload: Any) -> list[Any]:
    if not isinstance(payload, Mapping) or "instances" not in payload:
        keys = sorted(payload) if isinstance(payload, Mapping) else type(payload).__name__
        raise RequestError(f'request body has no "instances" (got {keys}); send {{"instances": [...]}}')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise RequestError(f'"instances" must be a list, got {type(instances).__name__}')
    if not instances:
        raise RequestError('"instances" is empty; send at least one instance')
    limits.current().check_instances(len(instances))
    return instances


def _from_bytes(body: bytes, content_type: str) -> list[Any]:
    if _is_image(body, content_type):
        return [body]
    return instances_of(load_json(body, "the request body", f"send {_FIX_V1}"))


def decode_v1(body: bytes, headers: Mapping[str, str]) -> Envelope:
    """The instances of a V1 request body (headers lower-cased, as HTTP/2 and ASGI give them)."""
    body = decode_content_encoding(body, headers.get("content-encoding"))
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    event = decode_cloudevent(body, headers)
    if event is None:
        return Envelope(_from_bytes(body, content_type))
    if isinstance(event.data, bytes):
        return Envelope(_from_bytes(event.data, event.content_type), event=event)
    return Envelope(instances_of(event.data), event=event)


def encode_v1(result: Any) -> dict[str, Any]:
    """``{"predictions": [...]}`` for a list (one result per instance); a dict is the reply itself."""
    if isinstance(result, Mapping):
        return dict(result)
    return {"predictions": result}


def _v2_input(request: V2Request, declared: tuple[TensorSpec, ...]) -> V2Tensor:
    names = request.input_names()
    wanted = declared[0].name if declared else None
    if wanted is None and len(names) == 1:
        return request.inputs[0]
    for tensor in request.inputs:
        if tensor.name == wanted:
            return tensor
    expected = f"one input named '{wanted}'" if wanted else "exactly one input"
    raise RequestError(f"V2 request has inputs {names}; this transformer takes {expected}")


def decode_v2(request: V2Request, declared: tuple[TensorSpec, ...]) -> Envelope:
    """The instances of a V2 request: the elements (BYTES) or rows (numeric) of its input."""
    tensor = _v2_input(request, declared)
    array = tensor.data
    if array.size == 0:
        raise RequestError(f"V2 input '{tensor.name}' is empty; send at least one element")
    instances = list(array.reshape(-1)) if tensor.datatype == "BYTES" else list(array) if array.ndim else [array]
    limits.current().check_instances(len(instances))
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


def encode_v2(result: Any, request: V2Request, model_name: str, declared: tuple[TensorSpec, ...] = ()) -> V2Response:
    """The ``V2Response`` of ``result``; declared outputs keep their dtype."""
    from kxform.codecs.dtypes import lossless_cast

    datatypes = {spec.name: spec.datatype for spec in declared}
    outputs = []
    for name, array in _outputs(result).items():
        if name in datatypes:
            array = lossless_cast(array, datatypes[name], f"postprocess output '{name}'")
        outputs.append(V2Tensor.from_array(name, array))
    return V2Response(model_name=model_name, outputs=tuple(outputs), id=request.id)
