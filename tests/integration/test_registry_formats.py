"""End to end: Avro, Protobuf and JSON Schema topics written with confluent-kafka's own
serializers, through the real schema registry (Apicurio, tests/support/schema_registry.py),
read by the real CLI from the real broker and delivered to the stand-in; the registry
stopped mid-run and started again; what cannot be decoded dead-lettered with its reason."""

from __future__ import annotations

import json
import struct

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.conftest import API_KEY
from tests.support.connector_process import ConnectorProcess, base_config, free_port, http_get, write_config
from tests.support.kafka_tools import all_committed, end_offsets, new_topic, produce, read_all, unique, wait_until
from tests.support.registry_samples import (
    EVENT_AVRO,
    EVENT_AVRO_STR,
    EVENT_JSON_SCHEMA_STR,
    sample_event,
    sample_order,
    writer_classes,
)
from tests.support.schema_registry import RegistryError, SchemaRegistry, ensure_app

pytestmark = [pytest.mark.kafka, pytest.mark.schema_registry]

EVENT_MAPPING = {
    "name": "event",
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "timestamp": "sent_at",
    "properties": {"from": ".", "exclude": ["event", "user_id", "anonymous_id", "sent_at"]},
}


def client(registry: SchemaRegistry) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry.url, "timeout": 10})


def ctx(topic: str, field: str = MessageField.VALUE) -> SerializationContext:
    return SerializationContext(topic, field)


def by_anon(events: list[dict]) -> dict[str, dict]:
    return {e["anonymousId"]: e for e in events}


def test_avro_protobuf_and_json_schema_arrive_as_the_same_json_would(
    kafka_bootstrap, schema_registry, standin, tmp_path
):
    json_topic, avro_topic, js_topic, proto_topic = (
        new_topic(kafka_bootstrap, n) for n in ("json", "avro", "js", "proto")
    )
    sr = client(schema_registry)
    events = [sample_event(i) for i in range(30)]
    produce(kafka_bootstrap, json_topic, events)
    avro = AvroSerializer(sr, EVENT_AVRO_STR)
    key_schema = json.dumps({"type": "record", "name": "Key", "fields": [{"name": "tenant", "type": "string"}]})
    avro_key = AvroSerializer(sr, key_schema)
    produce(
        kafka_bootstrap,
        avro_topic,
        [avro(e, ctx(avro_topic)) for e in events],
        key=lambda i: avro_key({"tenant": f"tenant-{i % 3}"}, ctx(avro_topic, MessageField.KEY)),
    )
    js = JSONSerializer(EVENT_JSON_SCHEMA_STR, sr)
    produce(kafka_bootstrap, js_topic, [js(e, ctx(js_topic)) for e in events])
    classes = writer_classes()
    proto = ProtobufSerializer(classes["shop.Order"], sr)
    orders = []
    for i in range(5):
        order = sample_order(classes)
        order.id = f"o-{i}"
        orders.append(proto(order, ctx(proto_topic)))
    produce(kafka_bootstrap, proto_topic, orders)

    group = unique("formats")
    avro_event = {**EVENT_MAPPING, "properties": {**EVENT_MAPPING["properties"], "set": {"tenant": "@key.tenant"}}}
    mappings = [
        {"topics": [json_topic], "event": EVENT_MAPPING},
        {"topics": [avro_topic], "value_format": "avro", "key_format": "avro", "event": avro_event},
        {"topics": [js_topic], "value_format": "json_schema", "event": EVENT_MAPPING},
        {
            "topics": [proto_topic],
            "value_format": "protobuf",
            "event": {
                "name": {"value": "order_placed"},
                "userId": "user_id",
                "anonymousId": "id",
                "timestamp": "placed_at",
                "properties": {"from": ".", "exclude": ["user_id", "placed_at"]},
            },
        },
    ]
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            kafka_bootstrap, standin.base_url, API_KEY, group, mappings, schema_registry={"url": schema_registry.url}
        ),
    )
    with ConnectorProcess(config) as connector:
        delivered = standin.wait_for_events(95, timeout_s=60)
        for topic in (json_topic, avro_topic, js_topic, proto_topic):
            wait_until(lambda t=topic: all_committed(kafka_bootstrap, group, t, 1), 30, f"{topic} committed")
        assert connector.stop() == 0

    as_json = by_anon([e for e in delivered if e["properties"].get("platform") and "tenant" not in e["properties"]])
    as_avro = by_anon([e for e in delivered if "tenant" in e["properties"]])
    assert len(as_json) == 30 and len(as_avro) == 30  # the JSON topic's and the JSON Schema topic's agree
    for anon, event in as_avro.items():
        tenant = event["properties"].pop("tenant")
        assert tenant.startswith("tenant-")  # the Avro key, through @key.tenant
        assert event == as_json[anon]  # timestamp-millis, the enum, the unions and the map: as JSON
    assert as_json["anon-00000002"]["timestamp"] == 1_764_000_000_002
    placed = sorted((e for e in delivered if e["name"] == "order_placed"), key=lambda e: e["anonymousId"])
    assert [e["anonymousId"] for e in placed] == [f"o-{i}" for i in range(5)]
    assert placed[0] == {
        "name": "order_placed",
        "userId": "user-42",
        "anonymousId": "o-0",
        "timestamp": 1_764_000_000_250,
        "properties": {
            "id": "o-0",
            "total": {"currency": "EUR", "micros": 59_970_000},  # int64: a number
            "lines": [{"sku": "sku-1", "quantity": 3, "price": {"currency": "EUR", "micros": 19_990_000}}],
            "channel": "APP",  # the enum, by name
            "attributes": {"coupon": "WINTER"},
        },
    }


def test_schema_evolution_and_what_cannot_be_decoded(kafka_bootstrap, schema_registry, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "evolving")
    dead = new_topic(kafka_bootstrap, "dead")
    sr = client(schema_registry)
    v1 = {**EVENT_AVRO, "name": "Evolving"}
    v2 = {
        **v1,
        "fields": [f for f in v1["fields"] if f["name"] != "page_url"]  # a field removed
        + [{"name": "plan", "type": "string", "default": "free"}],  # one added, with a default
    }
    first = AvroSerializer(sr, json.dumps(v1))
    second = AvroSerializer(sr, json.dumps(v2))
    values = [first(sample_event(i), ctx(topic)) for i in range(5)]
    values += [second({**sample_event(i), "plan": "pro"}, ctx(topic)) for i in range(5, 10)]
    values.insert(3, b'{"event": "plain json"}')  # not in the wire format
    values.insert(7, b"\x00" + struct.pack(">I", 987_654) + b"\x02a")  # an id the registry does not know
    assert len({v[1:5] for v in values if v[0] == 0}) == 3  # v1, v2 and the unknown one
    produce(kafka_bootstrap, topic, values)

    group = unique("evolution")
    mappings = [{"topics": [topic], "value_format": "avro", "event": EVENT_MAPPING}]
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            kafka_bootstrap,
            standin.base_url,
            API_KEY,
            group,
            mappings,
            schema_registry={"url": schema_registry.url},
            on_invalid="dead_letter",
            dead_letter={"topic": dead},
        ),
    )
    with ConnectorProcess(config) as connector:
        delivered = standin.wait_for_events(10, timeout_s=60)
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 1), 30, "all committed")
        assert connector.stop() == 0
    props = {e["anonymousId"]: e["properties"] for e in delivered}
    assert props["anon-00000001"]["page_url"] == "https://shop.example.com/p/1" and "plan" not in props["anon-00000001"]
    assert props["anon-00000007"]["plan"] == "pro" and "page_url" not in props["anon-00000007"]
    letters = read_all(kafka_bootstrap, dead, 2)
    reasons = {dict(m.headers())["userflux.error.reason"].decode() for m in letters}
    assert {dict(m.headers())["userflux.error.stage"] for m in letters} == {b"deserialize"}
    assert any("not in Confluent's wire format (Avro): its first byte is 0x7b" in r for r in reasons), reasons
    assert any("schema id 987654" in r and "not in the schema registry" in r for r in reasons), reasons


def test_the_registry_stopped_mid_run_holds_reading_and_nothing_is_dead_lettered(kafka_bootstrap, standin, tmp_path):
    # A registry of its own, with its storage on disk: stopped and started again, it has the
    # same schemas under the same ids, as a production registry would.
    registry = SchemaRegistry(
        tmp_path / "registry", ensure_app(), env={"APICURIO_DATASOURCE_URL": f"jdbc:h2:file:{tmp_path}/registry-db"}
    )
    try:
        registry.start()
    except RegistryError as exc:
        pytest.fail(f"could not start the schema registry:\n{exc}", pytrace=False)
    topic, dead = new_topic(kafka_bootstrap, "outage"), new_topic(kafka_bootstrap, "outage-dead")
    port = free_port()
    try:
        sr = client(registry)
        before = AvroSerializer(sr, EVENT_AVRO_STR)
        later_schema = json.dumps({**EVENT_AVRO, "name": "Later"})
        later = AvroSerializer(sr, later_schema)
        later_values = [later(sample_event(i), ctx(topic)) for i in range(20, 40)]  # registers it, now
        produce(kafka_bootstrap, topic, [before(sample_event(i), ctx(topic)) for i in range(20)])
        group = unique("outage")
        config = write_config(
            tmp_path / "c.yaml",
            base_config(
                kafka_bootstrap,
                standin.base_url,
                API_KEY,
                group,
                [{"topics": [topic], "value_format": "avro", "event": EVENT_MAPPING}],
                schema_registry={"url": registry.url, "initial_backoff_ms": 100, "max_backoff_ms": 1000},
                on_invalid="dead_letter",
                dead_letter={"topic": dead},
                metrics={"enabled": True, "port": port},
            ),
        )
        with ConnectorProcess(config) as connector:
            standin.wait_for_events(20, timeout_s=60)
            wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 1), 30, "the first 20 committed")
            registry.stop()
            produce(kafka_bootstrap, topic, later_values)  # a schema id the connector has not seen
            wait_until(
                lambda: json.loads(http_get(f"http://127.0.0.1:{port}/healthz")[1])["status"] == "registry_unavailable",
                30,
                "/healthz says the registry is unavailable",
            )
            status, body = http_get(f"http://127.0.0.1:{port}/healthz")
            assert status == 200 and "cannot reach the schema registry" in json.loads(body)["detail"], body
            metrics_text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            assert "userflux_connector_schema_registry_waiting 1.0" in metrics_text
            assert 'userflux_connector_schema_registry_requests_total{outcome="unreachable"}' in metrics_text
            assert standin.event_count() == 20
            registry.start(same_ports=True)  # the same storage: the same schemas
            standin.wait_for_events(40, timeout_s=60)
            wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 1), 30, "all 40 committed")
            assert "schema registry answered after" in connector.stderr
            assert connector.stop() == 0
        assert sorted(e["anonymousId"] for e in standin.events()) == [f"anon-{i:08x}" for i in range(40)]
        assert end_offsets(kafka_bootstrap, dead) == {0: 0}  # nothing dead-lettered
    finally:
        registry.stop()


def test_a_dry_run_decodes_through_the_registry(kafka_bootstrap, schema_registry, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "avro-dry")
    avro = AvroSerializer(client(schema_registry), EVENT_AVRO_STR)
    produce(kafka_bootstrap, topic, [avro(sample_event(i), ctx(topic)) for i in range(5)] + [b'{"plain": 1}'])
    group = unique("dry")
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            kafka_bootstrap,
            standin.base_url,
            API_KEY,
            group,
            [{"topics": [topic], "value_format": "avro", "event": EVENT_MAPPING}],
            schema_registry={"url": schema_registry.url},
        ),
    )
    with ConnectorProcess(config, "--dry-run") as connector:
        wait_until(lambda: '"invalid"' in connector.stdout, 30, "the dry run's output")
        assert connector.stop() == 0
    lines = [json.loads(line) for line in connector.stdout.splitlines()]
    events = [e for line in lines if "events" in line for e in line["events"]]
    assert [e["anonymousId"] for e in events] == [f"anon-{i:08x}" for i in range(5)]
    assert events[1]["properties"]["platform"] == "IOS" and events[1]["timestamp"] == 1_764_000_000_001
    (invalid,) = [line for line in lines if "invalid" in line]
    assert invalid["stage"] == "deserialize" and "not in Confluent's wire format" in invalid["invalid"]
    assert standin.requests() == []
