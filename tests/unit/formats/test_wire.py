"""Confluent's wire format as formats/wire.py reads it, and what protobuf.py takes for a
serialized (base64) descriptor; no registry."""

from __future__ import annotations

import struct

import pytest

from connector.formats.protobuf import serialized_descriptor
from connector.formats.wire import FramingError, message_indexes, schema_id


def frame(sid: int, index_bytes: bytes = b"", payload: bytes = b"\x0a\x01x") -> bytes:
    return b"\x00" + struct.pack(">I", sid) + index_bytes + payload


def test_the_schema_id_is_four_big_endian_bytes_after_the_magic_byte():
    assert schema_id(frame(7)) == 7
    assert schema_id(frame(2**32 - 1)) == 2**32 - 1


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"\x00\x00\x00\x01", "shorter than the 5-byte header"),
        (b'{"event": "x"}', "0x7b, not the magic byte 0x00 \\(it looks like plain JSON"),
        (b"\x01" + b"\x00" * 6, "0x01, not the magic byte"),
    ],
)
def test_what_is_not_framed_says_how(data: bytes, reason: str):
    with pytest.raises(FramingError, match=reason):
        schema_id(data)


def test_the_first_message_is_the_single_byte_zero():
    data = frame(7, b"\x00")
    assert message_indexes(data) == ((0,), 6)
    assert data[6:] == b"\x0a\x01x"


def test_indexes_are_a_zigzag_count_then_zigzag_values():
    # count 2 -> zigzag 4; indexes 1 and 2 -> zigzag 2 and 4
    assert message_indexes(frame(2**32 - 1, b"\x04\x02\x04"))[0] == (1, 2)
    # an index of 70 takes two bytes: zigzag 140 = 0x8c 0x01
    assert message_indexes(frame(1, b"\x02\x8c\x01", b""))[0] == (70,)


@pytest.mark.parametrize(
    "data, reason",
    [
        (frame(1, b"\x03"), "count is -2"),  # zigzag 3 is -2
        (frame(1, b"\xfe\x01"), "count is 127"),  # over the depth bound
        (frame(1, b"\x04\x02", b""), "cut short"),
        (frame(1, b"\x02\x03"), "negative message index"),
        (frame(1, b"\x02" + b"\xff" * 11), "longer than 10 bytes"),
    ],
)
def test_malformed_indexes_are_refused(data: bytes, reason: str):
    with pytest.raises(FramingError, match=reason):
        message_indexes(data)


def test_only_base64_descriptors_are_taken_for_serialized_schemas():
    assert serialized_descriptor('syntax = "proto3"; message M { string a = 1; }') is None
    assert serialized_descriptor("") is None
    fdp = serialized_descriptor("CgdhLnByb3RvIgMKAU0=")  # name "a.proto", message M
    assert fdp is not None and fdp.name == "a.proto" and fdp.message_type[0].name == "M"
