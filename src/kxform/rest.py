"""V2 REST infer with the binary tensor extension, without turning tensors into Python lists.

kserve 0.21 decodes a binary request by converting every binary input to JSON-able lists (and
fails on encoded images, which are not UTF-8). kxform serves ``POST /v2/models/{name}/infer``
itself: the JSON header is parsed with orjson and each binary input keeps its raw bytes, which
``InferInput.as_numpy`` then reads without a copy. The reply is kserve's ``InferResponse.to_rest``,
which honours ``binary_data_output`` and per-output ``binary_data``.
"""

from __future__ import annotations

from typing import Any

import orjson
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from kxform.errors import RequestError

__all__ = ["HEADER_LENGTH", "decode_infer_request", "encode_infer_response"]

HEADER_LENGTH = "inference-header-content-length"


def _json_header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], int]:
    length = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise RequestError(
                f"Inference-Header-Content-Length is {header_length!r} but the body has {len(body)} bytes; "
                "send the byte length of the JSON header"
            )
        length = int(header_length)
    try:
        header = orjson.loads(body[:length])
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the V2 request header is not JSON ({exc}); send a V2 inference request") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise RequestError('the V2 request has no "inputs" list; send {"inputs": [{"name", "shape", "datatype", ...}]}')
    return header, length


def _input(entry: Any, index: int, body: bytes, offset: int) -> tuple[InferInput, int]:
    field = f"inputs[{index}]"
    if not isinstance(entry, dict) or not {"name", "shape", "datatype"} <= entry.keys():
        raise RequestError(f"{field} needs name, shape and datatype")
    parameters = entry.get("parameters") or {}
    tensor = InferInput(entry["name"], entry["shape"], entry["datatype"], parameters=parameters)
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if not isinstance(size, int) or offset + size > len(body):
            raise RequestError(f"{field}.parameters.binary_data_size ({size}) runs past the end of the body")
        tensor._raw_data = body[offset : offset + size]  # kserve reads _raw_data in as_numpy (frombuffer)
        return tensor, offset + size
    if "data" not in entry:
        raise RequestError(f"{field} has neither data nor parameters.binary_data_size")
    tensor.data = entry["data"]
    return tensor, offset


def decode_infer_request(body: bytes, header_length: str | None, model_name: str) -> InferRequest:
    """An ``InferRequest`` from a V2 REST body (JSON, or JSON header + binary tensors)."""
    header, offset = _json_header(body, header_length)
    inputs = []
    for index, entry in enumerate(header["inputs"]):
        tensor, offset = _input(entry, index, body, offset)
        inputs.append(tensor)
    outputs = header.get("outputs")
    requested = [RequestedOutput(o["name"], o.get("parameters")) for o in outputs] if outputs else None
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=header.get("id"),
        parameters=header.get("parameters"),
        request_outputs=requested,
    )


def encode_infer_response(response: Any) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a V2 REST reply (binary extension when any output is binary)."""
    payload, json_length = response.to_rest() if hasattr(response, "to_rest") else (response, None)
    if json_length is None:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), {"content-type": "application/json"}
    return payload, {"content-type": "application/octet-stream", HEADER_LENGTH: str(json_length)}
