"""uvicorn's httptools protocol with bounded request headers, and a response written in one go.

httptools collects a header until it ends, however long: a 1 GB header would be held in memory
first. Here the bytes of a request's head are counted as they arrive, and the request line plus
headers may not exceed ``--max_header_bytes`` nor ``--max_headers`` in number: 431 naming the limit,
before the app runs.

uvicorn writes a response's head and its body as two writes, two trips through the kernel (on
loopback each also runs the receiver's side of TCP). The writes of one event-loop turn are joined
here into one ``writelines``: under load that was a tenth of the transformer's CPU time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kxform import limits
from kxform.codecs.jsonbody import dump_json
from kxform.errors import HeadersTooLargeError

__all__ = ["BoundedHttpToolsProtocol"]

_BODY_HIGH_WATER = 4 * 1024 * 1024


class _OneWritePerTurn:
    """What a request/response cycle sees of the transport: writes of one loop turn leave together."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            if not self._transport.is_closing():
                self._transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...: the transport's own
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Counts head bytes and headers per request; over a limit the connection gets 431 and is closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0  # bytes received while this request's head was incomplete
        self._header_count = 0
        self._refusal: HeadersTooLargeError | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._header_count = True, 0, 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._check(0)
        super().on_header(name, value)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._writer = _OneWritePerTurn(transport, self.loop)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        if self.cycle is not None:  # None for an upgrade request uvicorn hands on (WebSocket)
            self.cycle.transport = self._writer  # type: ignore[assignment]  # writes like a transport

    def _check(self, more: int) -> None:
        try:
            limits.current().check_headers(self._header_count, self._head_bytes + more)
        except HeadersTooLargeError as exc:
            self._refusal = exc
            raise

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        super().data_received(data)
        if self._in_head and self._refusal is None and not self.transport.is_closing():
            self._head_bytes += len(data)  # the whole chunk was head: the parser still waits for its end
            try:
                self._check(0)
            except HeadersTooLargeError:
                self.send_400_response("")

    def on_body(self, body: bytes) -> None:
        # uvicorn pauses reading whenever 64 KiB wait for the app: a 5 MB tensor then takes ~80 turns of
        # pause, resume and wake-up. The whole body is buffered by the app anyway (kxform.front.http), so
        # the socket is paused only past _BODY_HIGH_WATER.
        cycle = self.cycle
        if cycle is None or cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            return
        cycle.body += body
        if len(cycle.body) > _BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()

    def shutdown(self) -> None:
        self._writer.flush()  # uvicorn closes an idle connection at once: its last response goes first
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        self._writer.flush()  # a response still pending goes first
        if self._refusal is None:
            super().send_400_response(msg)
            return
        body = dump_json({"error": self._refusal.message})
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            + b"content-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self.transport.close()
