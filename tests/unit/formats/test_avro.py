"""Avro values as the mappings see them (formats/avro.py): the conversions table of
docs/mapping.md, schema evolution by writer schema, and, as a property, that any record
fastavro writes under a generated schema either maps or says why."""

from __future__ import annotations

import datetime
import decimal
import io
import json
import struct
import uuid

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config.model import LimitsSettings, SchemaRegistrySettings
from connector.errors import InvalidMessage
from connector.formats.avro import AvroSchemaError, compile_reader
from connector.formats.decoders import Decoders, _avro_reader, _Schema
from connector.formats.registry import FetchedSchema, Registry
from connector.mapping.event import compile_mapping
from connector.mapping.mapper import MessageMapper
from connector.validation import Problems
from tests.support.fakes import FakeMessage
from tests.support.registry_fakes import FakeRegistryClient

SETTINGS = SchemaRegistrySettings(urls=("http://registry.test:8081",))


def framed(schema: dict, record: dict, schema_id: int = 1, named: dict | None = None) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema, named), record)
    return b"\x00" + struct.pack(">I", schema_id) + out.getvalue()


def reader(schema: dict, references: tuple = ()):
    fetched = FetchedSchema(1, "AVRO", json.dumps(schema), references, "t-value")
    return _avro_reader(_Schema(1, "avro", "t-value"), fetched, LimitsSettings())


def record(*fields: tuple[str, object]) -> dict:
    return {"type": "record", "name": "R", "fields": [{"name": n, "type": t} for n, t in fields]}


def decode(schema: dict, value: dict) -> dict:
    return reader(schema)(framed(schema, value), "the value")


TABLE = [
    # (the field's Avro type, the value written, the value the mapping reads)
    ("null", None, None),
    ("boolean", True, True),
    ("int", -7, -7),
    ("long", 2**62, 2**62),
    ("double", 1.5, 1.5),
    ("float", 0.5, 0.5),
    ("string", "héllo", "héllo"),
    ("bytes", b"\x00\xff", "AP8="),  # base64
    ({"type": "fixed", "name": "F", "size": 2}, b"\x00\xff", "AP8="),
    ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, "B", "B"),
    ({"type": "array", "items": "bytes"}, [b"a"], ["YQ=="]),
    ({"type": "map", "values": "long"}, {"a": 1}, {"a": 1}),
    (["null", "string"], "x", "x"),
    (["null", "bytes"], b"a", "YQ=="),
    (["null", "bytes"], None, None),
    ({"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "int"}]}, {"a": 1}, {"a": 1}),
    # logical types
    ({"type": "long", "logicalType": "timestamp-millis"}, 1_764_000_000_250, 1_764_000_000_250),
    ({"type": "long", "logicalType": "timestamp-micros"}, 1_764_000_000_250_123, 1_764_000_000_250_123),
    ({"type": "long", "logicalType": "local-timestamp-millis"}, 1_764_000_000_250, 1_764_000_000_250),
    ({"type": "int", "logicalType": "date"}, 20_416, "2025-11-24"),
    ({"type": "int", "logicalType": "time-millis"}, 58_830_250, "16:20:30.250000"),
    ({"type": "long", "logicalType": "time-micros"}, 58_830_000_000, "16:20:30"),
    ({"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}, (1999).to_bytes(2, "big"), "19.99"),
    (
        {"type": "fixed", "name": "D", "size": 4, "logicalType": "decimal", "precision": 9, "scale": 3},
        (-5).to_bytes(4, "big", signed=True),
        "-0.005",
    ),
    (
        {"type": "string", "logicalType": "uuid"},
        "0b7f6a0e-4c1e-4a5e-9a43-1c2b7c1e3d10",
        "0b7f6a0e-4c1e-4a5e-9a43-1c2b7c1e3d10",
    ),
    (
        {"type": "fixed", "name": "U", "size": 16, "logicalType": "uuid"},
        uuid.UUID("0b7f6a0e-4c1e-4a5e-9a43-1c2b7c1e3d10").bytes,
        "0b7f6a0e-4c1e-4a5e-9a43-1c2b7c1e3d10",
    ),
    ({"type": "string", "logicalType": "no-such-type"}, "as written", "as written"),  # unknown: the base type
]


@pytest.mark.parametrize("avro_type, written, seen", TABLE, ids=[json.dumps(t[0])[:40] for t in TABLE])
def test_the_conversions_table(avro_type, written, seen):
    schema = record(("f", avro_type))
    assert decode(schema, {"f": written}) == {"f": seen}
    # What fastavro writes for a logical value, read back as written (the writer side uses the value):
    assert json.dumps(decode(schema, {"f": written}))  # JSON, as the sink will write it


def test_fastavro_is_not_let_convert_logical_types():
    # AvroDeserializer (and fastavro with logical types) would give a datetime here.
    schema = record(("at", {"type": "long", "logicalType": "timestamp-millis"}))
    at = datetime.datetime(2025, 11, 24, 16, 0, tzinfo=datetime.UTC)
    assert decode(schema, {"at": at}) == {"at": 1_764_000_000_000}


def test_a_decimal_keeps_every_digit():
    schema = record(("amount", {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 10}))
    value = decimal.Decimal("12345678901234567890.0123456789")
    assert decode(schema, {"amount": value}) == {"amount": "12345678901234567890.0123456789"}


def test_unions_of_records_and_recursive_records():
    leaf = {"type": "record", "name": "Leaf", "fields": [{"name": "b", "type": "bytes"}]}
    other = {"type": "record", "name": "Other", "fields": [{"name": "n", "type": "int"}]}
    schema = record(("x", ["null", leaf, other]))
    assert decode(schema, {"x": {"b": b"a"}}) == {"x": {"b": "YQ=="}}
    assert decode(schema, {"x": {"n": 3}}) == {"x": {"n": 3}}
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "data", "type": "bytes"}, {"name": "next", "type": ["null", "Node"]}],
    }
    assert decode(node, {"data": b"a", "next": {"data": b"b", "next": None}}) == {
        "data": "YQ==",
        "next": {"data": "Yg==", "next": None},
    }


def test_named_type_references_come_from_the_registry():
    address = {"type": "record", "name": "Address", "namespace": "ex", "fields": [{"name": "zip", "type": "bytes"}]}
    person = {"type": "record", "name": "Person", "namespace": "ex", "fields": [{"name": "home", "type": "ex.Address"}]}
    named: dict = {}
    fastavro.parse_schema(address, named)
    data = framed(person, {"home": {"zip": b"z"}}, named=named)
    read = reader(person, (("ex.Address", json.dumps(address)),))
    assert read(data, "the value") == {"home": {"zip": "eg=="}}


def test_evolution_each_record_with_its_writer_schema():
    v1 = record(("event", "string"), ("plan", "string"))
    v2 = {
        **record(("event", "string")),
        "fields": [
            {"name": "event", "type": "string"},
            {"name": "seats", "type": "int", "default": 1},  # added with a default; plan removed
        ],
    }
    assert reader(v1)(framed(v1, {"event": "a", "plan": "pro"}), "v") == {"event": "a", "plan": "pro"}
    assert reader(v2)(framed(v2, {"event": "b", "seats": 3}, 2), "v") == {"event": "b", "seats": 3}


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x00\x00\x00\x00\x01", "ends too soon"),
        (b"\x00\x00\x00\x00\x01\x02zzz", "bytes are left after the record"),
        (b"\x00\x00\x00\x00\x01\x7f", "does not decode with schema id 1 \\(subject t-value\\)"),
    ],
)
def test_payloads_that_do_not_decode_are_invalid(data, reason):
    with pytest.raises(InvalidMessage, match=reason) as info:
        reader(record(("s", "string")))(data, "the value")
    assert info.value.stage == "deserialize"


def test_a_schema_that_does_not_parse():
    with pytest.raises(AvroSchemaError, match="does not parse"):
        compile_reader(json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}), ())
    with pytest.raises(AvroSchemaError):
        compile_reader("{not json", ())


# -- the property: a generated schema, a record fastavro writes, the mapping's answer ---------

names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
PRIMITIVE = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
LOGICAL = [
    {"type": "long", "logicalType": "timestamp-millis"},
    {"type": "long", "logicalType": "timestamp-micros"},
    {"type": "int", "logicalType": "date"},
    {"type": "int", "logicalType": "time-millis"},
    {"type": "string", "logicalType": "uuid"},
    {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
]
_counter = iter(range(10**9))


def _unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


def avro_types():
    leaf = (
        st.sampled_from(PRIMITIVE + LOGICAL)
        | st.builds(lambda n: {"type": "enum", "name": _unique("E"), "symbols": ["A", "B", "C"][:n]}, st.integers(1, 3))
        | st.builds(lambda n: {"type": "fixed", "name": _unique("F"), "size": n}, st.integers(1, 4))
    )

    def extend(children):
        return (
            st.builds(lambda t: {"type": "array", "items": t}, children)
            | st.builds(lambda t: {"type": "map", "values": t}, children)
            | st.builds(lambda t: ["null", t], children.filter(lambda t: t != "null" and not isinstance(t, list)))
            | st.builds(
                lambda fs: {"type": "record", "name": _unique("R"), "fields": [{"name": n, "type": t} for n, t in fs]},
                st.lists(st.tuples(names, children), min_size=1, max_size=4, unique_by=lambda f: f[0]),
            )
        )

    return st.recursive(leaf, extend, max_leaves=8)


def values_for(t):
    if isinstance(t, list):
        return st.one_of(*[values_for(b) for b in t])
    if isinstance(t, str):
        return {
            "null": st.none(), "boolean": st.booleans(), "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1), "float": st.floats(width=32), "double": st.floats(),
            "bytes": st.binary(max_size=6), "string": st.text(max_size=6),
        }[t]  # fmt: skip
    logical = t.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros"):
        return st.integers(-(2**40), 2**50)
    if logical == "date":
        return st.integers(-700_000, 2_900_000)
    if logical == "time-millis":
        return st.integers(0, 86_399_999)
    if logical == "uuid":
        return st.uuids().map(str)
    if logical == "decimal":
        return st.decimals(min_value=-(10**7), max_value=10**7, places=2)
    kind = t["type"]
    if kind == "enum":
        return st.sampled_from(t["symbols"])
    if kind == "fixed":
        return st.binary(min_size=t["size"], max_size=t["size"])
    if kind == "array":
        return st.lists(values_for(t["items"]), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=4), values_for(t["values"]), max_size=3)
    return st.fixed_dictionaries({f["name"]: values_for(f["type"]) for f in t["fields"]})


@st.composite
def schemas_and_records(draw):
    fields = draw(st.lists(st.tuples(names, avro_types()), min_size=1, max_size=5, unique_by=lambda f: f[0]))
    schema = {"type": "record", "name": _unique("Top"), "fields": [{"name": n, "type": t} for n, t in fields]}
    return schema, draw(values_for(schema))


MAPPING = {
    "topics": ["t"],
    "event": {"name": ["event", "=generated"], "anonymousId": [".", "=anon"], "properties": "."},
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(schemas_and_records(), st.sampled_from(["event", "user", "when"]))
def test_any_written_record_maps_or_says_why(schema_and_record, field):
    schema, value = schema_and_record
    try:
        data = framed(schema, value)
    except (ValueError, TypeError, OverflowError):
        return  # fastavro refuses to write it: nothing for the connector to read
    client = FakeRegistryClient({1: Schema(json.dumps(schema), "AVRO")})
    decoders = Decoders(Registry(SETTINGS, lambda _: client), LimitsSettings())
    problems = Problems()
    spec = {**MAPPING, "value_format": "avro"}
    spec["event"] = {**MAPPING["event"], "userId": field, "timestamp": field}
    mapping = compile_mapping(spec, 0, problems, False)
    assert mapping is not None, problems.lines
    mapper = MessageMapper([mapping], LimitsSettings(), decoders)
    try:
        _, event = mapper.map(FakeMessage(topic="t", value=data))
    except InvalidMessage as exc:
        assert exc.stage in ("deserialize", "map") and exc.reason
        return
    assert event is not None and isinstance(event["properties"], dict)
    json.dumps(event, allow_nan=True)  # everything in it is JSON (NaN aside: orjson writes null)
