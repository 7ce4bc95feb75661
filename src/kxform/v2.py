"""The V2 (Open Inference Protocol) wire: kxform's own frozen request and response, over REST and gRPC.

One codec, both directions, both sides: the server decodes clients' requests and encodes its
replies; the predictor clients encode requests to Triton and decode its replies, with the same
functions. REST bodies are JSON (``application/json``) or a JSON header followed by raw tensors
(the binary tensor extension, ``application/octet-stream`` with ``Inference-Header-Content-Length``);
gRPC messages are ``inference.ModelInferRequest``/``ModelInferResponse`` with typed or raw contents.
Tensors in shared memory (``kxform.predictor.shm``, Triton's system shared memory extension) are
the predictor clients' business only: an input placed in a ``SharedRegion`` travels as that
region's name, offset and size instead of its bytes, and an output asked into a region is read
from the caller's view of it when Triton's reply names it without data.
``kxform serve --server kserve`` hands a transformer kserve's ``InferRequest``: ``from_infer_request``
re-encodes it with kserve's public ``to_rest``/``to_grpc`` and decodes that here (validated as any
other request); ``to_infer_response`` turns the reply into kserve's ``InferResponse``.

Everything a client sends is validated here, against the protocol: a known datatype, a shape of
non-negative ints whose product is the element count (and within ``--max_tensor_elements``),
``data`` of the type the datatype needs, unique input names, ``outputs`` a list of ``{name,
parameters?}``, ``parameters`` objects of strings, numbers and booleans. A violation is a
``RequestError`` naming the field (``inputs[1].shape``) and what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from kxform import limits
from kxform.codecs.dtypes import V2_DATATYPES, Array, lossless_cast, numpy_dtype, v2_datatype
from kxform.codecs.jsonbody import JSON_CONTENT_TYPE, dump_json, load_json
from kxform.codecs.tensor import decode_nested_list, element_count, encode_array, from_raw_bytes, to_raw_bytes
from kxform.errors import RequestError

if TYPE_CHECKING:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.infer_type import InferRequest, InferResponse

__all__ = [
    "BINARY_CONTENT_TYPE",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "Parameter",
    "RequestedOutput",
    "SharedRegion",
    "V2Request",
    "V2Response",
    "V2Tensor",
    "decode_grpc_request",
    "decode_grpc_response",
    "decode_rest_request",
    "decode_rest_response",
    "encode_grpc_request",
    "encode_grpc_response",
    "encode_rest_request",
    "encode_rest_response",
    "from_infer_request",
    "to_infer_response",
]

HEADER_LENGTH: Final = "inference-header-content-length"
BINARY_CONTENT_TYPE: Final = "application/octet-stream"
_MAX_RANK: Final = 32  # numpy's limit on dimensions
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_FIX_REQUEST: Final = 'send {"inputs": [{"name": ..., "shape": [...], "datatype": ..., "data": [...]}]}'

Parameter = bool | int | float | str
"""A V2 parameter value: the protocol allows strings, numbers and booleans."""


@dataclass(frozen=True, slots=True)
class V2Tensor:
    """One input or output: ``data`` is a numpy array of ``shape`` (BYTES: an object array of bytes)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Array
    parameters: Mapping[str, Parameter] = field(default_factory=lambda: _EMPTY)

    @classmethod
    def from_array(cls, name: str, array: Array, parameters: Mapping[str, Parameter] = _EMPTY) -> V2Tensor:
        return cls(name, v2_datatype(array.dtype), tuple(int(d) for d in array.shape), array, parameters)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An entry of a request's ``outputs``: a name, and parameters such as ``binary_data``."""

    name: str
    parameters: Mapping[str, Parameter] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class SharedRegion:
    """Where a tensor's bytes are instead of the message: a region registered with Triton, and a range of it."""

    region: str
    offset: int
    byte_size: int

    def parameters(self) -> dict[str, Parameter]:
        """The tensor's (or requested output's) parameters of Triton's system shared memory extension."""
        return {
            "shared_memory_region": self.region,
            "shared_memory_offset": self.offset,
            "shared_memory_byte_size": self.byte_size,
        }


Placed = Mapping[str, SharedRegion]
"""Tensors of one predictor call that are in shared memory, by name."""
Views = Mapping[str, memoryview]
"""The caller's views of the regions that outputs were asked into, by output name."""


@dataclass(frozen=True, slots=True)
class V2Request:
    """A validated inference request, whichever transport it came over."""

    model_name: str
    inputs: tuple[V2Tensor, ...]
    id: str = ""
    outputs: tuple[RequestedOutput, ...] = ()
    parameters: Mapping[str, Parameter] = field(default_factory=lambda: _EMPTY)
    transport: Literal["rest", "grpc"] = "rest"
    model_version: str = ""

    def input_names(self) -> list[str]:
        return [tensor.name for tensor in self.inputs]

    def binary_output(self, name: str) -> bool:
        """Whether output ``name`` goes back as binary data (REST); gRPC always sends raw contents."""
        if self.transport == "grpc":
            return True
        for output in self.outputs:
            if output.name == name and "binary_data" in output.parameters:
                return _flag(output.parameters["binary_data"])
        return _flag(self.parameters.get("binary_data_output", False))


def _flag(value: Parameter) -> bool:
    """A boolean parameter; clients that send the string "false" mean false."""
    return value.strip().lower() in ("true", "1", "yes") if isinstance(value, str) else bool(value)


@dataclass(frozen=True, slots=True)
class V2Response:
    """An inference response: outputs in order, with the request's id."""

    model_name: str
    outputs: tuple[V2Tensor, ...]
    id: str = ""
    model_version: str = ""
    parameters: Mapping[str, Parameter] = field(default_factory=lambda: _EMPTY)

    def arrays(self) -> dict[str, Array]:
        return {tensor.name: tensor.data for tensor in self.outputs}


# --- validation shared by REST and gRPC ------------------------------------------------------------


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise RequestError(f"{field}.name must be a non-empty string, got {_describe(value)}")
    return value


def _datatype(value: object, field: str) -> str:
    if not isinstance(value, str) or value not in V2_DATATYPES:
        raise RequestError(
            f"{field}.datatype {_describe(value)} is not a V2 datatype; use one of {', '.join(V2_DATATYPES)}"
        )
    return value


def _shape(value: object, field: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(_is_dimension(dim) for dim in value):
        raise RequestError(
            f"{field}.shape must be a list of non-negative integers (the tensor's actual shape; -1 is for "
            f"metadata only), got {_describe(value)}"
        )
    if len(value) > _MAX_RANK:
        raise RequestError(f"{field}.shape has {len(value)} dimensions; at most {_MAX_RANK} are supported")
    shape = tuple(int(dim) for dim in value)
    limits.current().check_shape(shape, field)
    return shape


def _is_dimension(dim: object) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _parameters(value: object, field: str) -> Mapping[str, Parameter]:
    if value is None:
        return _EMPTY
    if not isinstance(value, dict):
        raise RequestError(
            f"{field} must be an object of names to strings, numbers or booleans, got {_describe(value)}"
        )
    for key, item in value.items():
        if not isinstance(item, bool | int | float | str):
            raise RequestError(f"{field}.{key} must be a string, number or boolean, got {_describe(item)}")
    return MappingProxyType(dict(value))


def _unique(tensors: Sequence[V2Tensor | RequestedOutput], what: str) -> None:
    seen: set[str] = set()
    for index, tensor in enumerate(tensors):
        if tensor.name in seen:
            raise RequestError(f"{what}[{index}].name '{tensor.name}' appears twice; send each {what[:-1]} once")
        seen.add(tensor.name)


def _base64_elements(array: Array, field: str) -> Array:
    """MLServer's ``content_type: base64``: each BYTES element is the base64 text of the bytes meant."""
    decoded = np.empty(array.size, dtype=np.object_)
    for index, value in enumerate(array.reshape(-1)):
        try:
            decoded[index] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(
                f'{field}.data[{index}] is not valid base64 ({exc}), yet parameters.content_type is "base64"; '
                "send base64 text, or drop the content_type parameter"
            ) from exc
    return decoded.reshape(array.shape)


def _content(tensor: V2Tensor, field: str) -> V2Tensor:
    if tensor.parameters.get("content_type") == "base64" and tensor.datatype == "BYTES":
        data = _base64_elements(tensor.data, field)
        return V2Tensor(tensor.name, tensor.datatype, tensor.shape, data, tensor.parameters)
    return tensor


# --- REST -------------------------------------------------------------------------------------------


def _json_length(header_length: str | None, body_size: int) -> int:
    if header_length is None:
        return body_size
    text = header_length.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or int(text) > body_size:
        raise RequestError(
            f"Inference-Header-Content-Length is {_describe(header_length)} but the body has {body_size} bytes; "
            "send the byte length of the JSON header as plain digits"
        )
    return int(text)


def _rest_document(body: bytes, header_length: str | None, what: str) -> tuple[dict[str, Any], int]:
    length = _json_length(header_length, len(body))
    document = load_json(memoryview(body)[:length], f"the {what}", _FIX_REQUEST)
    if not isinstance(document, dict):
        raise RequestError(f"the {what} must be a JSON object, got {type(document).__name__}; {_FIX_REQUEST}")
    return document, length


def _rest_tensor(entry: object, field: str, body: bytes, offset: int, views: Views) -> tuple[V2Tensor, int]:
    if not isinstance(entry, dict):
        raise RequestError(f"{field} must be an object with name, shape, datatype and data, got {_describe(entry)}")
    name = _name(entry.get("name"), field)
    datatype = _datatype(entry.get("datatype"), field)
    shape = _shape(entry.get("shape"), field)
    parameters = _parameters(entry.get("parameters"), f"{field}.parameters")
    if "binary_data_size" in parameters:
        data, offset = _binary_data(parameters["binary_data_size"], entry, field, body, offset, datatype, shape)
        # A detail of this body's layout, not of the tensor: re-encoding writes its own.
        parameters = MappingProxyType({k: v for k, v in parameters.items() if k != "binary_data_size"})
    elif "data" in entry:
        data = decode_nested_list(entry["data"], datatype, shape, field)
    elif name in views:
        data = _from_region(views[name], datatype, shape, field)
    else:
        raise RequestError(f"{field} has neither data nor parameters.binary_data_size; send the tensor's data")
    return _content(V2Tensor(name, datatype, shape, data, parameters), field), offset


def _binary_data(
    size: object, entry: Mapping[str, Any], field: str, body: bytes, offset: int, datatype: str, shape: tuple[int, ...]
) -> tuple[Array, int]:
    if "data" in entry:
        raise RequestError(f"{field} has both data and parameters.binary_data_size; send one of them")
    if not _is_dimension(size):
        raise RequestError(f"{field}.parameters.binary_data_size must be a non-negative integer, got {_describe(size)}")
    assert isinstance(size, int)
    if offset + size > len(body):
        raise RequestError(
            f"{field}.parameters.binary_data_size ({size}) runs past the end of the body ({len(body) - offset} "
            "bytes left); send the tensors' bytes after the JSON header, in the order of the inputs"
        )
    return from_raw_bytes(memoryview(body)[offset : offset + size], datatype, shape, field), offset + size


def _from_region(view: memoryview, datatype: str, shape: tuple[int, ...], field: str) -> Array:
    """A copy of an output Triton wrote into shared memory: the region is reused by the next call."""
    size = element_count(shape, field) * numpy_dtype(datatype).itemsize
    if datatype == "BYTES" or size > len(view):
        raise RequestError(
            f"{field} of shape {list(shape)} and datatype {datatype} does not fit the {len(view)} bytes of "
            "shared memory it was asked into"
        )
    return from_raw_bytes(view[:size], datatype, shape, field).copy()


def _rest_tensors(
    entries: object, key: str, body: bytes, offset: int, views: Views = _EMPTY
) -> tuple[tuple[V2Tensor, ...], int]:
    if not isinstance(entries, list) or not entries:
        raise RequestError(f'"{key}" must be a non-empty list of tensors; {_FIX_REQUEST}')
    tensors = []
    for index, entry in enumerate(entries):
        tensor, offset = _rest_tensor(entry, f"{key}[{index}]", body, offset, views)
        tensors.append(tensor)
    _unique(tensors, key)
    if offset != len(body):
        raise RequestError(
            f"the body has {len(body) - offset} bytes after the last binary tensor; binary_data_size values "
            "must add up to the bytes after the JSON header"
        )
    return tuple(tensors), offset


def _requested_outputs(value: object) -> tuple[RequestedOutput, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RequestError(f'"outputs" must be a list of {{"name": ...}} objects, got {_describe(value)}')
    outputs = []
    for index, entry in enumerate(value):
        field = f"outputs[{index}]"
        if not isinstance(entry, dict):
            raise RequestError(
                f'{field} must be an object {{"name": ..., "parameters": {{...}}}}, got {_describe(entry)}'
            )
        outputs.append(
            RequestedOutput(
                _name(entry.get("name"), field), _parameters(entry.get("parameters"), f"{field}.parameters")
            )
        )
    _unique(outputs, "outputs")
    return tuple(outputs)


def _optional_id(value: object, field: str = "id") -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError(f'"{field}" must be a string, got {_describe(value)}')
    return value


def decode_rest_request(body: bytes, header_length: str | None, model_name: str) -> V2Request:
    """A request from a V2 REST body: JSON, or a JSON header of ``header_length`` bytes + binary tensors."""
    limits.current().check_request_bytes(len(body))
    document, offset = _rest_document(body, header_length, "V2 request")
    inputs, _ = _rest_tensors(document.get("inputs"), "inputs", body, offset)
    return V2Request(
        model_name=model_name,
        inputs=inputs,
        id=_optional_id(document.get("id")),
        outputs=_requested_outputs(document.get("outputs")),
        parameters=_parameters(document.get("parameters"), "parameters"),
    )


def _rest_entries(
    tensors: Sequence[V2Tensor],
    binary: Sequence[bool],
    extra: Sequence[Mapping[str, Parameter]],
    placed: Placed = _EMPTY,
) -> tuple[list[dict[str, Any]], list[bytes]]:
    entries, chunks = [], []
    for tensor, as_binary, parameters in zip(tensors, binary, extra, strict=True):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        params = dict(tensor.parameters) | dict(parameters)
        if tensor.name in placed:
            params |= placed[tensor.name].parameters()
        elif as_binary:
            raw = to_raw_bytes(tensor.data, f"output '{tensor.name}'")
            params["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            entry["data"] = encode_array(tensor.data, f"output '{tensor.name}'")["data"]
        if params:
            entry["parameters"] = params
        entries.append(entry)
    return entries, chunks


def _rest_body(document: dict[str, Any], chunks: list[bytes]) -> tuple[bytes, dict[str, str]]:
    header = dump_json(document)
    if not chunks:
        return header, {"content-type": JSON_CONTENT_TYPE}
    return b"".join([header, *chunks]), {"content-type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(header))}


def selected_outputs(response: V2Response, request: V2Request) -> tuple[V2Tensor, ...]:
    """The outputs the request asked for, in its order (all of them when it named none)."""
    if not request.outputs:
        return response.outputs
    by_name = {tensor.name: tensor for tensor in response.outputs}
    missing = [output.name for output in request.outputs if output.name not in by_name]
    if missing:
        raise RequestError(
            f"requested output(s) {', '.join(repr(m) for m in missing)} are not among the outputs "
            f'{", ".join(by_name) or "(none)"}; ask for those, or send no "outputs" to get all'
        )
    return tuple(by_name[output.name] for output in request.outputs)


def encode_rest_response(response: V2Response, request: V2Request) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a V2 REST reply: JSON, or binary where the request asked for it."""
    outputs = selected_outputs(response, request)
    binary = [request.binary_output(tensor.name) for tensor in outputs]
    entries, chunks = _rest_entries(outputs, binary, [_EMPTY] * len(outputs))
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = dict(response.parameters)
    document["outputs"] = entries
    return _rest_body(document, chunks)


def encode_rest_request(
    inputs: Sequence[V2Tensor], outputs: Sequence[RequestedOutput], request_id: str = "", placed: Placed = _EMPTY
) -> tuple[bytes, dict[str, str]]:
    """A V2 REST request: inputs as binary data (or ``placed`` in shared memory), outputs asked back as binary."""
    entries, chunks = _rest_entries(inputs, [True] * len(inputs), [_EMPTY] * len(inputs), placed)
    document: dict[str, Any] = {"inputs": entries}
    if request_id:
        document["id"] = request_id
    document["outputs"] = [_rest_requested_output(output) for output in outputs]
    return _rest_body(document, chunks)


def _rest_requested_output(output: RequestedOutput) -> dict[str, Any]:
    if "shared_memory_region" in output.parameters:  # Triton writes it there, not into the reply
        return {"name": output.name, "parameters": dict(output.parameters)}
    return {"name": output.name, "parameters": {"binary_data": True, **output.parameters}}


def decode_rest_response(body: bytes, header_length: str | None, views: Views = _EMPTY) -> V2Response:
    """A V2 REST reply (Triton's); errors are RequestErrors the predictor client re-raises as its own.

    An output that Triton wrote into shared memory comes without data; it is read from ``views``.
    """
    document, offset = _rest_document(body, header_length, "V2 response")
    outputs, _ = _rest_tensors(document.get("outputs"), "outputs", body, offset, views)
    return V2Response(
        model_name=str(document.get("model_name", "")),
        outputs=outputs,
        id=str(document.get("id") or ""),
        model_version=str(document.get("model_version") or ""),
        parameters=_parameters(document.get("parameters"), "parameters"),
    )


# --- gRPC -------------------------------------------------------------------------------------------

# The typed contents field of each datatype (FP16 and BF16 travel only as raw contents).
_CONTENTS: Final = {
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
_CONTENT_FIELDS: Final = tuple(sorted(set(_CONTENTS.values())))


def grpc_protos() -> Any:
    """kserve's V2 protos (``inference.*``): imported on first use, out of ``import kxform``'s path."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2

    return grpc_predict_v2_pb2


def _grpc_parameters(parameters: Any, field: str) -> Mapping[str, Parameter]:
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise RequestError(f"{field}['{key}'] has no value; set one of bool_param, int64_param, string_param")
        values[key] = getattr(parameter, choice)
    return MappingProxyType(values)


_INT64: Final = range(-(2**63), 2**63)


def _set_grpc_parameters(target: Any, parameters: Mapping[str, Parameter], field: str) -> None:
    # kserve's InferParameter has bool_param, int64_param and string_param only: no double, no uint64.
    for key, value in parameters.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int) and value in _INT64:
            target[key].int64_param = value
        elif isinstance(value, str):
            target[key].string_param = value
        else:
            raise RequestError(
                f"{field}.{key} is {_describe(value)}, which a gRPC InferParameter cannot carry (it holds booleans, "
                "64-bit signed integers and strings); send it as a string or an integer within int64"
            )


def _typed_contents(contents: Any, datatype: str, shape: tuple[int, ...], field: str) -> Array:
    wanted = _CONTENTS.get(datatype)
    filled = [name for name in _CONTENT_FIELDS if len(getattr(contents, name))]
    if wanted is None or filled not in ([], [wanted]):
        expected = f"contents.{wanted}" if wanted else "raw_input_contents (it has no typed contents field)"
        carried = ", ".join(filled) or "no data"
        raise RequestError(f"{field} carries {carried} but {datatype} data goes in {expected}; send it there")
    values = list(getattr(contents, wanted))
    count = math.prod(shape)
    if len(values) != count:
        raise RequestError(
            f"{field} has {len(values)} elements but shape {list(shape)} needs {count}; "
            "send that many values in row-major order, or fix the shape"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=np.object_)
        array[:] = values
        return array.reshape(shape)
    source = np.asarray(values, dtype=numpy_dtype(_source_datatype(datatype)))
    return lossless_cast(source, datatype, field).reshape(shape)


def _source_datatype(datatype: str) -> str:
    """The datatype the typed contents field of ``datatype`` holds (int_contents: INT32 values)."""
    return {"INT8": "INT32", "INT16": "INT32", "UINT8": "UINT32", "UINT16": "UINT32"}.get(datatype, datatype)


def _grpc_tensors(entries: Any, raw: Sequence[bytes], key: str, views: Views = _EMPTY) -> tuple[V2Tensor, ...]:
    if not entries:
        raise RequestError(f"the gRPC message has no {key}; add at least one tensor")
    if raw and len(raw) != len(entries):
        raise RequestError(
            f"the gRPC message has {len(entries)} {key} but {len(raw)} raw contents; send raw contents for "
            "all tensors or for none"
        )
    tensors = []
    for index, entry in enumerate(entries):
        field = f"{key}[{index}]"
        name = _name(entry.name, field)
        datatype = _datatype(entry.datatype, field)
        shape = _shape(list(entry.shape), field)
        parameters = _grpc_parameters(entry.parameters, f"{field}.parameters")
        if name in views:  # written into shared memory; Triton sends an empty raw content in its place
            data = _from_region(views[name], datatype, shape, field)
        elif raw:
            if any(len(getattr(entry.contents, f)) for f in _CONTENT_FIELDS):
                raise RequestError(f"{field} has both contents and raw contents; send one of them")
            data = from_raw_bytes(raw[index], datatype, shape, field)
        else:
            data = _typed_contents(entry.contents, datatype, shape, f"{field}.contents")
        tensors.append(_content(V2Tensor(name, datatype, shape, data, parameters), field))
    _unique(tensors, key)
    return tuple(tensors)


def decode_grpc_request(raw: bytes) -> V2Request:
    """A request from the serialized bytes of a ``ModelInferRequest``."""
    from google.protobuf.message import DecodeError as ProtobufDecodeError

    limits.current().check_request_bytes(len(raw), "the gRPC message")
    try:
        message = grpc_protos().ModelInferRequest.FromString(raw)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise RequestError(f"the gRPC body is not a ModelInferRequest message ({exc}); send one") from exc
    outputs = tuple(
        RequestedOutput(_name(o.name, f"outputs[{i}]"), _grpc_parameters(o.parameters, f"outputs[{i}].parameters"))
        for i, o in enumerate(message.outputs)
    )
    _unique(outputs, "outputs")
    return V2Request(
        model_name=message.model_name,
        inputs=_grpc_tensors(message.inputs, message.raw_input_contents, "inputs"),
        id=message.id,
        outputs=outputs,
        parameters=_grpc_parameters(message.parameters, "parameters"),
        transport="grpc",
        model_version=message.model_version,
    )


def _add_raw_tensors(entries: Any, raw: Any, tensors: Sequence[V2Tensor], placed: Placed = _EMPTY) -> None:
    for tensor in tensors:
        entry = entries.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        _set_grpc_parameters(entry.parameters, tensor.parameters, f"'{tensor.name}'.parameters")
        if tensor.name in placed:  # Triton reads it from the region; raw contents are for the others, in order
            _set_grpc_parameters(entry.parameters, placed[tensor.name].parameters(), f"'{tensor.name}'.parameters")
        else:
            raw.append(to_raw_bytes(tensor.data, f"'{tensor.name}'"))


def encode_grpc_response(response: V2Response, request: V2Request) -> pb.ModelInferResponse:
    """A ``ModelInferResponse`` with the requested outputs as raw contents."""
    message = grpc_protos().ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    _set_grpc_parameters(message.parameters, response.parameters, "the response's parameters")
    _add_raw_tensors(message.outputs, message.raw_output_contents, selected_outputs(response, request))
    return message


def encode_grpc_request(
    model: str,
    inputs: Sequence[V2Tensor],
    outputs: Sequence[RequestedOutput],
    request_id: str = "",
    placed: Placed = _EMPTY,
) -> pb.ModelInferRequest:
    """A ``ModelInferRequest`` with every input as raw contents, or ``placed`` in shared memory."""
    protos = grpc_protos()
    message = protos.ModelInferRequest(model_name=model, id=request_id)
    _add_raw_tensors(message.inputs, message.raw_input_contents, inputs, placed)
    for output in outputs:
        target = message.outputs.add(name=output.name).parameters
        _set_grpc_parameters(target, output.parameters, f"outputs '{output.name}'.parameters")
    return message


def decode_grpc_response(message: pb.ModelInferResponse, views: Views = _EMPTY) -> V2Response:
    """The outputs of a ``ModelInferResponse`` (raw or typed contents; those in shared memory from ``views``)."""
    return V2Response(
        model_name=message.model_name,
        outputs=_grpc_tensors(message.outputs, message.raw_output_contents, "outputs", views),
        id=message.id,
        model_version=message.model_version,
        parameters=_grpc_parameters(message.parameters, "parameters"),
    )


# --- kserve's InferRequest / InferResponse (kxform serve --server kserve) ----------------------------


def from_infer_request(request: InferRequest) -> V2Request:
    """kserve's decoded request as a validated ``V2Request``: re-encoded by kserve, decoded here.

    Going through the wire format keeps one decoder, with all its checks, for every front; kserve
    has already parsed the body (its REST decoder turns binary BYTES into UTF-8 text, see README).
    """
    if request.from_grpc:
        return decode_grpc_request(request.to_grpc().SerializeToString())
    body, json_length = request.to_rest()
    if isinstance(body, dict):
        body["id"] = request.id or ""  # to_rest invents a uuid for a request that had none
        return decode_rest_request(dump_json(body), None, request.model_name)
    return decode_rest_request(body, str(json_length), request.model_name)


def to_infer_response(response: V2Response, request: V2Request, transport_request: InferRequest) -> InferResponse:
    """``response`` as kserve's ``InferResponse``; kserve's ``to_rest``/``to_grpc`` then write it.

    Each output says whether it goes back binary (kxform's rule: the output's ``binary_data``, else
    the request's ``binary_data_output``); gRPC replies always carry raw contents.
    """
    from kserve.protocol.infer_type import InferOutput, InferResponse
    from kserve.protocol.infer_type import RequestedOutput as KserveRequestedOutput

    outputs = selected_outputs(response, request)
    binary = [KserveRequestedOutput(t.name, {"binary_data": request.binary_output(t.name)}) for t in outputs]
    return InferResponse(
        response_id=response.id,
        model_name=response.model_name,
        infer_outputs=[
            InferOutput(t.name, list(t.shape), t.datatype, data=t.data, parameters=dict(t.parameters) or None)
            for t in outputs
        ],
        model_version=response.model_version or None,
        from_grpc=transport_request.from_grpc,
        parameters=dict(response.parameters) or None,
        requested_outputs=None if transport_request.from_grpc else binary,
    )
