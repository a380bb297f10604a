"""Protobuf messages to values (formats/protobuf.py), held to protobuf's own JSON mapping
(json_format.MessageToDict) as the oracle, with the deliberate differences applied
(tests/support/registry_samples.proto_oracle); and schemas compiled from .proto text."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.formats.protobuf import ProtobufSchema, ProtobufSchemaError, compile_proto
from connector.formats.wire import FramingError
from tests.support.registry_samples import MONEY_NAME, MONEY_PROTO, ORDER_PROTO, proto_oracle

EVERYTHING = """\
syntax = "proto3";
package t;

import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/struct.proto";

enum Colour { COLOUR_UNSPECIFIED = 0; RED = 1; GREEN = 2; }

message Inner { string s = 1; int64 n = 2; repeated Inner children = 3; }

message All {
  double d = 1; float f = 2; int32 i32 = 3; int64 i64 = 4; uint32 u32 = 5; uint64 u64 = 6;
  sint32 s32 = 7; sint64 s64 = 8; fixed32 fx32 = 9; fixed64 fx64 = 10; sfixed32 sf32 = 11;
  sfixed64 sf64 = 12; bool b = 13; string s = 14; bytes by = 15; Colour colour = 16;
  Inner inner = 17; repeated int64 many = 18; repeated Inner inners = 19;
  map<string, int64> counts = 20; map<int64, Inner> by_id = 21; map<bool, string> flags = 22;
  optional string maybe = 23;
  oneof who { string user_id = 24; int64 account = 25; }
  google.protobuf.Timestamp at = 26; google.protobuf.Duration took = 27;
  google.protobuf.Int64Value big = 28; google.protobuf.StringValue label = 29;
  google.protobuf.Struct extra = 30; repeated Colour colours = 31;
}
"""

_SCHEMA = ProtobufSchema(1, EVERYTHING, ())
ALL, ALL_CONVERT = _SCHEMA.reader((1,))
INNER = _SCHEMA.reader((0,))[0]

i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=8)
finite = st.floats(allow_nan=False, allow_infinity=False)
float32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
inners = st.builds(lambda s, n: INNER(s=s, n=n), text, i64)


@st.composite
def messages(draw):
    m = ALL(
        d=draw(finite), f=draw(float32), i32=draw(i32), i64=draw(i64), u32=draw(u32), u64=draw(u64),
        s32=draw(i32), s64=draw(i64), fx32=draw(u32), fx64=draw(u64), sf32=draw(i32), sf64=draw(i64),
        b=draw(st.booleans()), s=draw(text), by=draw(st.binary(max_size=8)),
        colour=draw(st.sampled_from([0, 1, 2, 7])),  # 7: a number the schema does not name
        many=draw(st.lists(i64, max_size=3)), colours=draw(st.lists(st.sampled_from([0, 1, 2]), max_size=3)),
    )  # fmt: skip
    if draw(st.booleans()):
        m.inner.CopyFrom(draw(inners))
        m.inner.children.append(draw(inners))
    m.inners.extend(draw(st.lists(inners, max_size=2)))
    m.counts.update(draw(st.dictionaries(text, i64, max_size=3)))
    for key, inner in draw(st.dictionaries(i64, inners, max_size=2)).items():
        m.by_id[key].CopyFrom(inner)
    m.flags.update(draw(st.dictionaries(st.booleans(), text, max_size=2)))
    if draw(st.booleans()):
        m.maybe = draw(text)
    who = draw(st.sampled_from(["none", "user_id", "account"]))
    if who == "user_id":
        m.user_id = draw(text)
    elif who == "account":
        m.account = draw(i64)
    if draw(st.booleans()):
        m.at.seconds, m.at.nanos = draw(st.integers(0, 253402300799)), draw(st.integers(0, 999_999_999))
        m.took.seconds = draw(st.integers(0, 10**6))
        m.big.value = draw(i64)
        m.label.value = draw(text)
        m.extra.update({"k": draw(text), "n": draw(st.integers(-1000, 1000))})
    return m


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_every_message_converts_as_the_oracle_says(message):
    parsed = ALL()
    parsed.ParseFromString(message.SerializeToString())
    assert ALL_CONVERT(parsed) == proto_oracle(parsed)


def test_the_deliberate_differences_from_message_to_dict():
    from google.protobuf import json_format

    m = ALL(i64=2**62, u64=2**64 - 1, d=math.nan)
    ours = ALL_CONVERT(m)
    theirs = json_format.MessageToDict(m, preserving_proto_field_name=True)
    assert (ours["i64"], theirs["i64"]) == (2**62, str(2**62))  # numbers, not strings
    assert (ours["u64"], theirs["u64"]) == (2**64 - 1, str(2**64 - 1))
    assert math.isnan(ours["d"]) and theirs["d"] == "NaN"  # a float NaN; the sink writes it as null
    # Fields without presence are always there, with their defaults; MessageToDict leaves them out.
    assert ours["s"] == "" and ours["colour"] == "COLOUR_UNSPECIFIED" and ours["many"] == [] and ours["counts"] == {}
    assert "s" not in theirs
    # Fields with presence (messages, optional, oneof members) are there only when set.
    assert not {"inner", "maybe", "user_id", "account", "at"} & ours.keys()


def test_names_are_the_schemas_and_enums_are_named():
    m = ALL(user_id="u-1", colour=2)
    m.at.seconds = 1_764_000_000
    m.at.nanos = 250_000_000
    m.took.FromMilliseconds(1500)
    ours = ALL_CONVERT(m)
    assert ours["user_id"] == "u-1" and "userId" not in ours  # the schema's name, not the JSON name
    assert ours["colour"] == "GREEN"
    assert ours["at"] == "2025-11-24T16:00:00.250Z"  # usable as the mapping's timestamp directly
    assert ours["took"] == "1.500s"


def test_references_compile_and_the_indexes_find_nested_messages():
    schema = ProtobufSchema(9, ORDER_PROTO, ((MONEY_NAME, MONEY_PROTO),))
    order_cls, _ = schema.reader((0,))
    line_cls, _ = schema.reader((0, 1))  # Order's second nested type: the map's AttributesEntry is first
    refund_cls, _ = schema.reader((1,))
    assert [c.DESCRIPTOR.full_name for c in (order_cls, line_cls, refund_cls)] == [
        "shop.Order",
        "shop.Order.Line",
        "shop.Refund",
    ]
    with pytest.raises(FramingError, match="points past"):
        schema.reader((5,))


def test_a_schema_that_does_not_compile_says_where():
    with pytest.raises(ProtobufSchemaError, match="strng"):
        ProtobufSchema(1, 'syntax = "proto3";\nmessage M { strng a = 1; }\n', ())
    with pytest.raises(ProtobufSchemaError, match="common/money.proto"):
        ProtobufSchema(1, ORDER_PROTO, ())  # the reference is missing
    with pytest.raises(ProtobufSchemaError, match="relative"):
        compile_proto(ORDER_PROTO, {"../money.proto": MONEY_PROTO})


def test_a_base64_descriptor_is_read_without_protoc():
    import base64

    (fdp,) = compile_proto(MONEY_PROTO, main_name="money.proto")
    schema = ProtobufSchema(3, base64.b64encode(fdp.SerializeToString()).decode(), ())
    cls, convert = schema.reader((0,))
    assert convert(cls(currency="EUR", micros=5)) == {"currency": "EUR", "micros": 5}
