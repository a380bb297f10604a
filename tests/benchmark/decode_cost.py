"""CPU per record of decoding a value: Avro (fastavro), JSON (orjson), Protobuf (dynamic class).

    python -m tests.benchmark.decode_cost [--records 2000] [--repeat 7] [--serde]

The record is the ten-field product-analytics event of tests/support/registry_samples.py,
in Avro (schemaless, the Confluent payload after its 5-byte header) and as the JSON text
of the same event; for scale, also the Protobuf order of the same module (a reference, a
Timestamp, a repeated nested message, a map), decoded through a class built at run time
as connector/formats/protobuf.py does; and the connector's own decoders (connector/formats/,
the schema cached) on the benchmark's web event in Avro (tests/benchmark/events.py) and on
the order, beside orjson and fastavro alone on the same event. Each figure is the best of ``--repeat`` passes
over ``--records`` distinct records, in microseconds per record, on one core.

``--serde`` also starts the test schema registry (a few seconds) and times confluent-kafka's
AvroDeserializer on the framed records, its schema cached after the first: what a
decoder built on the stock deserializer would pay.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import platform
import tempfile
import timeit

import fastavro
import orjson
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message_factory import GetMessageClass

from connector.formats.protobuf import compile_proto
from tests.support.registry_samples import (
    EVENT_AVRO,
    MONEY_NAME,
    MONEY_PROTO,
    ORDER_PROTO,
    sample_event,
    sample_order,
    writer_classes,
)


def _best_us(fn, items: list, repeat: int) -> float:
    def one_pass():
        for item in items:
            fn(item)

    return min(timeit.repeat(one_pass, number=1, repeat=repeat)) / len(items) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.decode_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--serde", action="store_true", help="also time AvroDeserializer against the test registry")
    args = parser.parse_args(argv)
    if not (1 <= args.records <= 1_000_000 and 1 <= args.repeat <= 100):
        parser.error("--records 1..1000000, --repeat 1..100")

    events = [sample_event(i) for i in range(args.records)]
    parsed = fastavro.parse_schema(EVENT_AVRO)
    raw_schema = json.loads(json.dumps(EVENT_AVRO))
    raw_schema["fields"][3]["type"] = "long"  # the same bytes, without the timestamp-millis conversion
    parsed_raw = fastavro.parse_schema(raw_schema)

    def avro_bytes(event: dict) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed_raw, event)
        return buf.getvalue()

    avro = [avro_bytes(e) for e in events]
    texts = [orjson.dumps(e) for e in events]
    assert fastavro.schemaless_reader(io.BytesIO(avro[5]), parsed_raw, None) == events[5]
    assert orjson.loads(texts[5]) == events[5]

    rows = [
        (
            "avro: fastavro.schemaless_reader (timestamp-millis to datetime)",
            _best_us(lambda b: fastavro.schemaless_reader(io.BytesIO(b), parsed, None), avro, args.repeat),
        ),
        (
            "avro: fastavro.schemaless_reader (sent_at as a plain long)",
            _best_us(lambda b: fastavro.schemaless_reader(io.BytesIO(b), parsed_raw, None), avro, args.repeat),
        ),
        ("json: orjson.loads of the same event", _best_us(orjson.loads, texts, args.repeat)),
    ]

    classes = writer_classes()
    pool = descriptor_pool.DescriptorPool()
    for fdp in compile_proto(ORDER_PROTO, {MONEY_NAME: MONEY_PROTO}):
        pool.Add(fdp)
    order_cls = GetMessageClass(pool.FindMessageTypeByName("shop.Order"))
    orders = []
    for i in range(args.records):
        order = sample_order(classes)
        order.id = f"o-{i}"
        orders.append(order.SerializeToString())

    def proto_decode(b: bytes) -> dict:
        msg = order_cls()
        msg.ParseFromString(b)
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)

    rows.append(
        (
            "protobuf: ParseFromString + MessageToDict (Order, dynamic class)",
            _best_us(proto_decode, orders, args.repeat),
        )
    )
    rows.append(
        ("protobuf: ParseFromString only", _best_us(lambda b: order_cls().ParseFromString(b), orders, args.repeat))
    )

    rows.extend(_connector_rows(args.records, args.repeat, orders))
    if args.serde:
        rows.extend(_serde_rows(events, args.repeat))

    from google.protobuf.internal import api_implementation

    print(
        f"python {platform.python_version()}, fastavro {fastavro.__version__}, orjson {orjson.__version__}, "
        f"protobuf {api_implementation.Type()} backend; {args.records} records, best of {args.repeat}"
    )
    print(
        f"avro payload {sum(map(len, avro)) / len(avro):.0f} B, json {sum(map(len, texts)) / len(texts):.0f} B, "
        f"protobuf {sum(map(len, orders)) / len(orders):.0f} B (average)"
    )
    for label, us in rows:
        print(f"{us:8.2f} us  {label}")
    return 0


def _connector_rows(records: int, repeat: int, orders: list[bytes]) -> list[tuple[str, float]]:
    """The connector's own decoders (connector/formats/), with the schema already cached, on the
    benchmark's web event (tests/benchmark/events.py: nine nested records, about 30 values)
    and on the Protobuf order; beside what fastavro and orjson alone cost for the same event."""
    import struct

    from confluent_kafka.schema_registry import Schema

    from connector.config.model import LimitsSettings, SchemaRegistrySettings
    from connector.formats import Decoders
    from connector.formats.registry import Registry
    from tests.benchmark.events import AVRO_SCHEMA, EventFactory, avro_record
    from tests.support.registry_fakes import FakeRegistryClient

    client = FakeRegistryClient({1: Schema(json.dumps(AVRO_SCHEMA), "AVRO")})
    decoders = Decoders(Registry(SchemaRegistrySettings(urls=("http://r",)), lambda _: client), LimitsSettings())
    factory, parsed = EventFactory(), fastavro.parse_schema(AVRO_SCHEMA)
    web_avro, web_json = [], []
    for i in range(records):
        ms = 1_764_000_000_000 + i
        _, doc, _ = factory.record(ms)
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, avro_record(doc, ms))
        web_avro.append(b"\x00" + struct.pack(">I", 1) + out.getvalue())
        web_json.append(orjson.dumps(doc))
    plain = json.loads(json.dumps(AVRO_SCHEMA).replace('"logicalType": "timestamp-millis"', '"as": "written"'))
    plain_parsed = fastavro.parse_schema(plain)
    avro = decoders.decoder("avro")
    rows = [
        ("web event, json: orjson.loads", _best_us(orjson.loads, web_json, repeat)),
        (
            "web event, avro: fastavro.schemaless_reader alone",
            _best_us(lambda b: fastavro.schemaless_reader(io.BytesIO(b[5:]), plain_parsed, None), web_avro, repeat),
        ),
        ("web event, avro: the connector's decoder (framing, cache, fastavro)", _best_us(avro, web_avro, repeat)),
    ]
    client.schemas[3] = Schema(ORDER_PROTO, "PROTOBUF", [_reference()])  # the .proto text, importing Money
    client.versions[("money", 1)] = Schema(MONEY_PROTO, "PROTOBUF")
    framed = [b"\x00" + struct.pack(">I", 3) + b"\x00" + o for o in orders]
    protobuf = decoders.decoder("protobuf")
    rows.append(
        (
            "protobuf: the connector's decoder (Order; ParseFromString + its converter)",
            _best_us(protobuf, framed, repeat),
        )
    )
    assert protobuf(framed[0])["total"] == {"currency": "EUR", "micros": 59_970_000}
    return rows


def _reference():
    from confluent_kafka.schema_registry import SchemaReference

    return SchemaReference(MONEY_NAME, "money", 1)


def _serde_rows(events: list[dict], repeat: int) -> list[tuple[str, float]]:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from tests.support.registry_samples import EVENT_AVRO_STR
    from tests.support.schema_registry import SchemaRegistry, ensure_app

    with (
        tempfile.TemporaryDirectory(prefix="decode-cost-") as tmp,
        SchemaRegistry(pathlib.Path(tmp), ensure_app()) as registry,
    ):
        client = SchemaRegistryClient({"url": registry.url, "timeout": 10})
        ctx = SerializationContext("decode-cost", MessageField.VALUE)
        serializer = AvroSerializer(client, EVENT_AVRO_STR)
        framed = [serializer(e, ctx) for e in events]
        deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry.url, "timeout": 10}))
        deserializer(framed[0], ctx)  # fetch and parse the schema once
        return [
            (
                "avro: confluent-kafka AvroDeserializer (schema cached)",
                _best_us(lambda b: deserializer(b, ctx), framed, repeat),
            )
        ]


if __name__ == "__main__":
    raise SystemExit(main())
