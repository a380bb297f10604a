"""The Confluent Protobuf framing, as tests/support/protobuf_wire.py reads it (no registry)."""

from __future__ import annotations

import struct

import pytest

from tests.support.protobuf_wire import WireFormatError, parse_framing, serialized_descriptor


def frame(schema_id: int, index_bytes: bytes, payload: bytes = b"\x0a\x01x") -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + index_bytes + payload


def test_the_first_message_is_the_single_byte_zero():
    assert parse_framing(frame(7, b"\x00")) == (7, [0], b"\x0a\x01x")


def test_indexes_are_a_zigzag_count_then_zigzag_values():
    # count 2 -> zigzag 4; indexes 1 and 2 -> zigzag 2 and 4
    assert parse_framing(frame(2**32 - 1, b"\x04\x02\x04")) == (2**32 - 1, [1, 2], b"\x0a\x01x")
    # an index of 70 takes two bytes: zigzag 140 = 0x8c 0x01
    assert parse_framing(frame(1, b"\x02\x8c\x01", b""))[1] == [70]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x00\x00\x00\x01", "too short"),
        (b"\x01" + b"\x00" * 6, "magic byte 1"),
        (frame(1, b"\x03"), "count -2"),  # zigzag 3 is -2
        (frame(1, b"\xfe\x01"), "count 127"),  # over the depth bound
        (frame(1, b"\x04\x02", b""), "truncated"),
        (frame(1, b"\x02\x03"), "negative message index"),
        (frame(1, b"\x02" + b"\xff" * 11), "longer than 10 bytes"),
    ],
)
def test_malformed_framing_is_refused(data: bytes, reason: str):
    with pytest.raises(WireFormatError, match=reason):
        parse_framing(data)


def test_only_base64_descriptors_are_taken_for_serialized_schemas():
    assert serialized_descriptor('syntax = "proto3"; message M { string a = 1; }') is None
    assert serialized_descriptor("") is None
    fdp = serialized_descriptor("CgdhLnByb3RvIgMKAU0=")  # name "a.proto", message M
    assert fdp is not None and fdp.name == "a.proto" and fdp.message_type[0].name == "M"
