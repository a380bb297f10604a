"""Confluent's wire format: a zero "magic" byte, the schema id as 4 big-endian bytes, then
the payload; Protobuf payloads start with the message-index array (which message of the
schema's file was written)."""

from __future__ import annotations

MAGIC = 0
HEADER = 5  # the magic byte and the schema id
MAX_INDEX_DEPTH = 64  # nested message types; protoc allows far fewer in practice


class FramingError(ValueError):
    """The bytes are not in the wire format (the reason says how)."""


def schema_id(raw: bytes) -> int:
    """The schema id of a framed value; FramingError when it is not framed."""
    if len(raw) < HEADER or raw[0] != MAGIC:
        if not raw:
            raise FramingError("it is empty")
        if raw[0] != MAGIC:
            return _not_framed(raw)
        raise FramingError(f"it is {len(raw)} bytes, shorter than the 5-byte header")
    return int.from_bytes(raw[1:HEADER], "big")


def _not_framed(raw: bytes) -> int:
    hint = ""
    if raw[:1] in (b"{", b"[", b'"'):
        hint = " (it looks like plain JSON: is the mapping's format right?)"
    raise FramingError(f"its first byte is 0x{raw[0]:02x}, not the magic byte 0x00{hint}")


def message_indexes(raw: bytes, pos: int = HEADER) -> tuple[tuple[int, ...], int]:
    """(indexes, where the Protobuf payload starts): a zigzag varint count, then that many
    zigzag varint indexes; a count of 0 (the single byte 0) means (0,), the first message."""
    count, pos = _zigzag(raw, pos)
    if count == 0:
        return (0,), pos
    if count < 0 or count > MAX_INDEX_DEPTH:
        raise FramingError(f"its message-index count is {count}, outside 1..{MAX_INDEX_DEPTH}")
    indexes = []
    for _ in range(count):
        index, pos = _zigzag(raw, pos)
        if index < 0:
            raise FramingError(f"it has a negative message index ({index})")
        indexes.append(index)
    return tuple(indexes), pos


def _zigzag(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    for _ in range(10):  # a 64-bit varint is at most 10 bytes
        if pos >= len(data):
            raise FramingError("its message-index array is cut short")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
    raise FramingError("its message-index array has a varint longer than 10 bytes")
