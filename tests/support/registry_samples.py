"""Schemas and records for the schema-registry tests and the Avro decode measurement.

A product-analytics event (ten fields, as trackers send them) in Avro and JSON Schema,
and a small Protobuf model with what decoding must get right: a reference to another
file, a well-known type (``google.protobuf.Timestamp``), a nested message, an enum, a
map, a oneof and a second top-level message.
"""

from __future__ import annotations

import json

from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass

from connector.formats.protobuf import compile_proto

EVENT_AVRO = {
    "type": "record",
    "name": "TrackEvent",
    "namespace": "com.example.analytics",
    "fields": [
        {"name": "event", "type": "string"},
        {"name": "user_id", "type": ["null", "string"], "default": None},
        {"name": "anonymous_id", "type": "string"},
        {"name": "sent_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "session_id", "type": ["null", "long"], "default": None},
        {"name": "page_url", "type": ["null", "string"], "default": None},
        {"name": "platform", "type": {"type": "enum", "name": "Platform", "symbols": ["WEB", "IOS", "ANDROID"]}},
        {"name": "revenue", "type": ["null", "double"], "default": None},
        {"name": "is_first_visit", "type": "boolean"},
        {"name": "properties", "type": {"type": "map", "values": "string"}},
    ],
}
EVENT_AVRO_STR = json.dumps(EVENT_AVRO)

EVENT_JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "TrackEvent",
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "user_id": {"type": ["string", "null"]},
        "anonymous_id": {"type": "string"},
        "sent_at": {"type": "integer"},
        "session_id": {"type": ["integer", "null"]},
        "page_url": {"type": ["string", "null"]},
        "platform": {"enum": ["WEB", "IOS", "ANDROID"]},
        "revenue": {"type": ["number", "null"]},
        "is_first_visit": {"type": "boolean"},
        "properties": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["event", "anonymous_id", "sent_at", "platform", "is_first_visit", "properties"],
    "additionalProperties": False,
}
EVENT_JSON_SCHEMA_STR = json.dumps(EVENT_JSON_SCHEMA)


def sample_event(i: int = 0) -> dict:
    """One event, plain JSON types (``sent_at`` in epoch milliseconds)."""
    return {
        "event": ("page_view", "signup", "purchase")[i % 3],
        "user_id": None if i % 4 == 0 else f"user-{i % 5000}",
        "anonymous_id": f"anon-{i:08x}",
        "sent_at": 1_764_000_000_000 + i,
        "session_id": 1_000_000 + i // 10,
        "page_url": f"https://shop.example.com/p/{i % 100}",
        "platform": ("WEB", "IOS", "ANDROID")[i % 3],
        "revenue": 19.99 if i % 3 == 2 else None,
        "is_first_visit": i % 7 == 0,
        "properties": {"utm_source": "newsletter", "plan": "pro", "ab_bucket": str(i % 4)},
    }


MONEY_NAME = "common/money.proto"
MONEY_PROTO = """\
syntax = "proto3";
package common;

message Money {
  string currency = 1;
  int64 micros = 2;
}
"""

ORDER_NAME = "shop/order.proto"
ORDER_PROTO = """\
syntax = "proto3";
package shop;

import "common/money.proto";
import "google/protobuf/timestamp.proto";

message Order {
  string id = 1;
  common.Money total = 2;
  google.protobuf.Timestamp placed_at = 3;
  repeated Line lines = 4;
  Channel channel = 5;
  map<string, string> attributes = 6;
  oneof buyer {
    string user_id = 7;
    string anonymous_id = 8;
  }

  message Line {
    string sku = 1;
    int32 quantity = 2;
    common.Money price = 3;
  }

  enum Channel {
    CHANNEL_UNSPECIFIED = 0;
    WEB = 1;
    APP = 2;
  }
}

message Refund {
  string order_id = 1;
  common.Money amount = 2;
}
"""


def writer_classes() -> dict[str, type]:
    """Message classes for ORDER_PROTO, as a producer application would have them
    (compiled by protoc here instead of generated into _pb2 modules)."""
    pool = descriptor_pool.DescriptorPool()
    for fdp in compile_proto(ORDER_PROTO, {MONEY_NAME: MONEY_PROTO}, main_name=ORDER_NAME):
        pool.Add(fdp)
    return {
        name: GetMessageClass(pool.FindMessageTypeByName(name))
        for name in ("shop.Order", "shop.Order.Line", "shop.Refund")
    }


def sample_order(classes: dict[str, type]):
    order = classes["shop.Order"](id="o-1001", channel=2, user_id="user-42")
    order.total.currency = "EUR"
    order.total.micros = 59_970_000
    order.placed_at.seconds = 1_764_000_000
    order.placed_at.nanos = 250_000_000
    order.attributes["coupon"] = "WINTER"
    line = order.lines.add(sku="sku-1", quantity=3)
    line.price.currency = "EUR"
    line.price.micros = 19_990_000
    return order


def proto_oracle(message) -> dict:
    """What the connector's Protobuf converter must give for ``message``: protobuf's own
    JSON mapping (``json_format.MessageToDict`` with the schema's field names and every
    field without presence written), with the deliberate differences applied. The one
    that shows here: 64-bit integers are numbers, not strings (docs/mapping.md)."""
    from google.protobuf import json_format

    value = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _int64_numbers(value, message.DESCRIPTOR)


_INT64_TYPES = {3, 4, 6, 16, 18}  # INT64, UINT64, FIXED64, SFIXED64, SINT64


def _int64_numbers(value, descriptor):
    if descriptor.full_name.startswith("google.protobuf."):
        return value  # well-known types: as protobuf writes them (Int64Value is handled below)
    for field in descriptor.fields:
        if field.name not in value:
            continue
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            value[field.name] = {k: _one(v, value_field) for k, v in value[field.name].items()}
        elif field.is_repeated:
            value[field.name] = [_one(v, field) for v in value[field.name]]
        else:
            value[field.name] = _one(value[field.name], field)
    return value


def _one(v, field):
    if field.type in _INT64_TYPES:
        return int(v)
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in ("google.protobuf.Int64Value", "google.protobuf.UInt64Value"):
            return int(v)
        return _int64_numbers(v, field.message_type)
    return v
