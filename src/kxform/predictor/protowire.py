"""The protobuf wire format, for the few Triton gRPC messages kxform writes and reads by hand.

Triton's ``grpc_service.proto`` defines ``inference.*`` messages that collide with kserve's in
protobuf's default pool (see ``kxform.predictor.grpc``), so its ModelConfig and system shared memory
messages, a handful of string and integer fields each, are encoded and decoded here.
"""

from __future__ import annotations

__all__ = ["fields", "string_field", "uint_field"]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def string_field(number: int, text: str) -> bytes:
    """Field ``number`` holding ``text`` (wire type 2: length-delimited)."""
    data = text.encode()
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def uint_field(number: int, value: int) -> bytes:
    """Field ``number`` holding ``value`` (wire type 0: varint)."""
    return _varint(number << 3) + _varint(value)


def fields(data: bytes) -> list[tuple[int, bytes | int]]:
    """The (number, value) of each field of a message: bytes if length-delimited, else the varint.

    Raises ``ValueError`` on a fixed32/fixed64 field (none in the messages read here) and
    ``IndexError`` on a truncated message.
    """
    found: list[tuple[int, bytes | int]] = []
    position = 0
    while position < len(data):
        tag, position = _read_varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 2:
            length, position = _read_varint(data, position)
            if position + length > len(data):
                raise IndexError(f"field {number} runs past the end of the message")
            found.append((number, data[position : position + length]))
            position += length
        elif wire_type == 0:
            value, position = _read_varint(data, position)
            found.append((number, value))
        else:
            raise ValueError(f"unexpected protobuf wire type {wire_type}")
    return found
