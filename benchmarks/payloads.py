"""Request bodies, built once per scenario and replayed by the load generator unchanged; replies decoded."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from kxform.codecs.dtypes import Array, numpy_dtype

__all__ = [
    "Payload",
    "decode_reply",
    "tensor_binary_payload",
    "triton_images_payload",
    "v1_images_payload",
    "v2_images_payload",
]

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Payload:
    """One HTTP POST: path, body and the headers that describe the body."""

    path: str
    body: bytes
    content_type: str = JSON
    header_length: int | None = None  # Inference-Header-Content-Length of a V2 binary body

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(self.header_length)
        return headers


def v1_images_payload(model: str, images: list[bytes]) -> Payload:
    """``{"instances": [{"image_bytes": {"b64": ...}}, ...]}``, the seeds' request, sent as JSON.

    The seeds' ``curl -d @image.json`` sends ``application/x-www-form-urlencoded``, which kserve hands
    to the seed's ``preprocess`` as bytes (and it fails); both implementations get ``application/json``.
    """
    instances = [{"image_bytes": {"b64": base64.b64encode(image).decode()}} for image in images]
    return Payload(f"/v1/models/{model}:predict", orjson.dumps({"instances": instances}))


def _binary_input(name: str, datatype: str, shape: list[int], raw: bytes) -> dict[str, object]:
    return {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}


def _binary_body(inputs: list[dict[str, object]], raw: list[bytes], outputs: list[str]) -> tuple[bytes, int]:
    header: dict[str, object] = {"inputs": inputs}
    if outputs:
        header["outputs"] = [{"name": name, "parameters": {"binary_data": True}} for name in outputs]
    json_header = orjson.dumps(header)
    return json_header + b"".join(raw), len(json_header)


def _bytes_elements(images: list[bytes]) -> bytes:
    """BYTES elements in the binary tensor extension: each a 4-byte little-endian length, then the bytes."""
    return b"".join(len(image).to_bytes(4, "little") + image for image in images)


def v2_images_payload(model: str, input_name: str, images: list[bytes]) -> Payload:
    """A V2 REST request with one BYTES element per encoded image, in the binary tensor extension."""
    raw = _bytes_elements(images)
    entry = _binary_input(input_name, "BYTES", [len(images)], raw)
    body, length = _binary_body([entry], [raw], outputs=[])
    return Payload(f"/v2/models/{model}/infer", body, OCTET_STREAM, length)


def triton_images_payload(model: str, input_name: str, images: list[bytes], output_name: str) -> Payload:
    """The same BYTES elements for a Triton model that batches them, binary in and out.

    Such a model declares the input with ``dims: [1]`` (Triton has no scalar per batch item), so the
    shape is ``[N, 1]``; the output comes back binary, as the ``triton`` run's does.
    """
    raw = _bytes_elements(images)
    entry = _binary_input(input_name, "BYTES", [len(images), 1], raw)
    body, length = _binary_body([entry], [raw], outputs=[output_name])
    return Payload(f"/v2/models/{model}/infer", body, OCTET_STREAM, length)


def tensor_binary_payload(model: str, input_name: str, tensor: Array, output_name: str) -> Payload:
    """A V2 REST request with one FP32 tensor, binary in and out: what a transformer sends Triton."""
    raw = np.ascontiguousarray(tensor, dtype=np.float32).tobytes()
    entry = _binary_input(input_name, "FP32", list(tensor.shape), raw)
    body, length = _binary_body([entry], [raw], outputs=[output_name])
    return Payload(f"/v2/models/{model}/infer", body, OCTET_STREAM, length)


def decode_reply(body: bytes, header_length: int | None) -> Any:
    """A reply's JSON; the numeric binary outputs of a V2 binary reply (``header_length`` given) as ``data`` lists."""
    if header_length is None:
        return orjson.loads(body)
    header = orjson.loads(body[:header_length])
    offset = header_length
    for output in header.get("outputs", []):
        size = output.get("parameters", {}).pop("binary_data_size", None)
        if size is None:
            continue
        if output["datatype"] != "BYTES":  # only numbers are compared; strings stay undecoded
            output["data"] = np.frombuffer(body[offset : offset + size], numpy_dtype(output["datatype"])).tolist()
        offset += size
    return header
