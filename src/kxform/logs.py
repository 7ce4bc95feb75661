"""How kxform's processes log: one line per record (text, or JSON with ``--log_format json``), kxform's
loggers at ``--log_level``, and the request id and trace id of the request being served on every line.

The fronts call ``bind_request`` as a request starts; the id travels with the request's task and its
worker threads (``kxform.offload`` runs them in the request's context), and a filter on the handler
adds it to each record. The failed-request line of ``kxform.errormap`` also carries ``model``,
``status``, ``error_kind`` and ``stage``:

    {"time": "...", "level": "INFO", "logger": "kxform.requests", "message": "... -> 400: ...",
     "request_id": "...", "trace_id": "...", "model": "cifar10", "status": 400, "error_kind": "DecodeError",
     "stage": "decode"}
"""

from __future__ import annotations

import contextvars
import logging
from datetime import UTC, datetime
from typing import Protocol

import orjson

__all__ = ["FORMATS", "JsonFormatter", "TextFormatter", "bind_request", "bound_model", "configure_logging"]

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_FIELDS = ("model", "status", "error_kind", "stage")
"""Fields of the failed-request line beyond the ids (``logging``'s ``extra``)."""


class _Traced(Protocol):
    @property
    def request_id(self) -> str: ...

    @property
    def trace_id(self) -> str: ...


# The request being served: its id, its trace (which knows the trace id) when traced, its model.
_current: contextvars.ContextVar[tuple[str, _Traced | None, str] | None] = contextvars.ContextVar(
    "kxform_request", default=None
)


def bind_request(request_id: str, trace: _Traced | None = None, model: str = "") -> None:
    """The request this task (and the worker threads it starts) serves, for every line it logs."""
    _current.set((request_id, trace, model))


def bound_model() -> str:
    """The model of the request being served ("" when unknown)."""
    current = _current.get()
    return current[2] if current is not None else ""


class _RequestIds(logging.Filter):
    """Adds ``request_id``, ``trace_id`` and ``model`` (empty outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _current.get()
        request_id, trace, model = current if current is not None else ("", None, "")
        if not hasattr(record, "request_id"):
            record.request_id = request_id
        if not hasattr(record, "trace_id"):
            record.trace_id = trace.trace_id if trace is not None else ""
        if not getattr(record, "model", ""):
            record.model = model
        return True


class TextFormatter(logging.Formatter):
    """kxform's text line, with ``request=... trace=...`` after the message of a request's lines."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id, trace_id = getattr(record, "request_id", ""), getattr(record, "trace_id", "")
        parts = [f"request {request_id}"] if request_id and request_id not in record.getMessage() else []
        parts += [f"trace {trace_id}"] if trace_id else []
        if not parts:
            return line
        suffix = f" [{' '.join(parts)}]"
        head, newline, tail = line.partition("\n")  # after the message, before a traceback
        return head + suffix + newline + tail


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, the request fields, a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "trace_id", *REQUEST_FIELDS):
            value = getattr(record, key, "")
            if value != "":
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def configure_logging(level: str, log_format: str = "text") -> None:
    """kxform's loggers at ``level``, everyone else's at WARNING; each line ``log_format`` (text or json)."""
    if log_format not in FORMATS:
        raise ValueError(f"--log_format {log_format!r}: use one of {', '.join(FORMATS)}")
    logging.basicConfig(format=_TEXT, level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
        if not any(isinstance(f, _RequestIds) for f in handler.filters):
            handler.addFilter(_RequestIds())
    logging.getLogger("kxform").setLevel(level)
