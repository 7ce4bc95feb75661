"""CloudEvents over HTTP (spec 1.0), as kserve accepts them on V1 ``:predict``, in binary and structured mode.

Binary mode: the ``ce-*`` headers carry the attributes, the body is the data (JSON or an image).
Structured mode: ``Content-Type: application/cloudevents+json``, one JSON event whose ``data`` (or
``data_base64``) is the request. The reply is an event of the same mode, with kserve's default
``type`` (``io.kserve.inference.response``) and ``source`` (``io.kserve.inference.<model>``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from kxform.codecs.jsonbody import JSON_CONTENT_TYPE, dump_json, load_json
from kxform.errors import RequestError

__all__ = ["STRUCTURED_CONTENT_TYPE", "CloudEvent", "decode_cloudevent", "encode_cloudevent_reply"]

STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
_REQUIRED: Final = ("specversion", "id", "source", "type")
_FIX: Final = "send specversion, id, source and type (CloudEvents 1.0)"


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """The event a request arrived in; ``data`` is what the V1 decoder reads as the body."""

    mode: Literal["binary", "structured"]
    attributes: Mapping[str, Any]
    data: Any  # bytes (binary mode, data_base64) or the decoded JSON value of ``data``
    content_type: str


def _is_binary_event(headers: Mapping[str, str]) -> bool:
    return "ce-specversion" in headers


def _check_attributes(attributes: Mapping[str, Any], prefix: str) -> None:
    missing = [f"{prefix}{name}" for name in _REQUIRED if not isinstance(attributes.get(name), str | int)]
    if missing:
        raise RequestError(f"the CloudEvent lacks {', '.join(missing)}; {_FIX}")
    if str(attributes["specversion"]) != "1.0":
        raise RequestError(f"{prefix}specversion is {attributes['specversion']!r}; only CloudEvents 1.0 is served")


def decode_cloudevent(body: bytes, headers: Mapping[str, str]) -> CloudEvent | None:
    """The CloudEvent of a request (None when it is not one)."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if _is_binary_event(headers):
        attributes = {key[3:]: value for key, value in headers.items() if key.startswith("ce-")}
        _check_attributes(attributes, "ce-")
        return CloudEvent("binary", attributes, body, content_type)
    if content_type != STRUCTURED_CONTENT_TYPE:
        return None
    event = load_json(body, "the structured CloudEvent", _FIX)
    if not isinstance(event, dict):
        raise RequestError(f"the structured CloudEvent must be a JSON object, got {type(event).__name__}; {_FIX}")
    _check_attributes(event, "")
    return CloudEvent("structured", event, _structured_data(event), str(event.get("datacontenttype", "")))


def _structured_data(event: Mapping[str, Any]) -> Any:
    if "data_base64" in event:
        value = event["data_base64"]
        try:
            return base64.b64decode(value, validate=True) if isinstance(value, str) else _bad_base64()
        except (binascii.Error, ValueError) as exc:  # ValueError: a non-ASCII character
            raise RequestError(
                f"the CloudEvent's data_base64 is not valid base64 ({exc}); send the data's bytes base64-encoded"
            ) from exc
    if "data" not in event:
        raise RequestError('the structured CloudEvent has no "data" (or "data_base64"); put the request in "data"')
    return event["data"]


def _bad_base64() -> bytes:
    raise RequestError("the CloudEvent's data_base64 must be a base64 string")


def encode_cloudevent_reply(event: CloudEvent, model: str, reply: Any) -> tuple[bytes, dict[str, str]]:
    """The reply as a CloudEvent of the request's mode: headers and body."""
    attributes = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": f"io.kserve.inference.{model}",
        "type": "io.kserve.inference.response",
        "time": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    if event.mode == "binary":
        headers = {f"ce-{key}": value for key, value in attributes.items()}
        return dump_json(reply), {"content-type": JSON_CONTENT_TYPE, **headers}
    structured = {**attributes, "datacontenttype": JSON_CONTENT_TYPE, "data": reply}
    return dump_json(structured), {"content-type": STRUCTURED_CONTENT_TYPE}
