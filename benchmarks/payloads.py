"""Request bodies, built once per scenario and replayed by the load generator unchanged."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import orjson

from kxform.codecs.dtypes import Array

__all__ = ["Payload", "tensor_binary_payload", "v1_images_payload", "v2_images_payload"]

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


def v2_images_payload(model: str, input_name: str, images: list[bytes]) -> Payload:
    """A V2 REST request with one BYTES element per encoded image, in the binary tensor extension."""
    raw = b"".join(len(image).to_bytes(4, "little") + image for image in images)
    entry = _binary_input(input_name, "BYTES", [len(images)], raw)
    body, length = _binary_body([entry], [raw], outputs=[])
    return Payload(f"/v2/models/{model}/infer", body, OCTET_STREAM, length)


def tensor_binary_payload(model: str, input_name: str, tensor: Array, output_name: str) -> Payload:
    """A V2 REST request with one FP32 tensor, binary in and out: what a transformer sends Triton."""
    raw = np.ascontiguousarray(tensor, dtype=np.float32).tobytes()
    entry = _binary_input(input_name, "FP32", list(tensor.shape), raw)
    body, length = _binary_body([entry], [raw], outputs=[output_name])
    return Payload(f"/v2/models/{model}/infer", body, OCTET_STREAM, length)
