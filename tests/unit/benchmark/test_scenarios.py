"""The benchmark's scenarios run the connector with valid, production-default configurations."""

from __future__ import annotations

import json

import pytest
import yaml

from connector.mapping.mapper import MessageMapper
from connector.startup import parse_config
from tests.benchmark.events import FILTERED_TYPE, EventFactory, Produced
from tests.benchmark.scenarios import API_KEY_VARIABLE, SCENARIOS, Scenario
from tests.benchmark.sink import check_event
from tests.support.fakes import FakeMessage

TOPICS = ["bench-events", "bench-live"]


def settings(scenario: Scenario):
    config = scenario.config(
        bootstrap="127.0.0.1:1",
        base_url="http://127.0.0.1:2",
        group="g",
        topics=TOPICS,
        metrics_port=3,
        dead_letter_topic="dead",
        registry_url="http://127.0.0.1:4",
    )
    return parse_config(yaml.safe_dump(config), env={API_KEY_VARIABLE: "k"})


@pytest.mark.parametrize("key", sorted(SCENARIOS))
def test_the_configuration_is_valid_and_keeps_the_defaults_the_scenario_is_not_about(key):
    found = settings(SCENARIOS[key]).settings.userflux
    assert (found.batch_size, found.linger_ms) == (50, 200)
    assert found.max_in_flight == (16 if key == "b" else 8)
    assert found.api_key.reveal() == "k"


def test_the_pipelining_bound_is_batch_size_times_max_in_flight_over_the_round_trip():
    assert SCENARIOS["b"].pipelining_bound() == 50 * 16 / 0.05
    assert SCENARIOS["a"].pipelining_bound() is None


@pytest.mark.parametrize("key", sorted(SCENARIOS))
def test_every_generated_message_becomes_an_event_userflux_accepts_with_its_sent_time(key):
    mapper = MessageMapper(settings(SCENARIOS[key]).mappings)
    factory = EventFactory(seed=3)
    produced = Produced()
    sent_at = 1_764_320_000_000
    for offset in range(2_000):
        ms = sent_at + offset * 7
        message_key, value, kind = factory.message(ms)
        produced.add(value, kind)
        _mapping, event = mapper.map(FakeMessage(topic=TOPICS[0], offset=offset, key=message_key, value=value))
        if event is None:
            assert kind == FILTERED_TYPE and SCENARIOS[key].where is not None
            continue
        assert check_event(event) is None, event
        assert event["timestamp"] == ms, json.loads(value)["sent_at"]
        assert b'"timestamp"' not in json.dumps(event["properties"]).encode()  # the sink counts these keys
    assert SCENARIOS[key].expected(produced) == (produced.passing() if key == "d" else 2_000)
    assert produced.passing() < 2_000


def test_the_avro_scenario_s_events_map_as_the_json_ones_do():
    """(v) reads the same events written in Avro: through the connector's decoder they make
    the events (a) makes, the optional parts of properties null where JSON leaves them out."""
    import io
    import struct

    import fastavro
    from confluent_kafka.schema_registry import Schema

    from connector.config.model import LimitsSettings, SchemaRegistrySettings
    from connector.formats import Decoders
    from connector.formats.registry import Registry
    from tests.benchmark.events import AVRO_SCHEMA, avro_record
    from tests.support.registry_fakes import FakeRegistryClient

    client = FakeRegistryClient({7: Schema(json.dumps(AVRO_SCHEMA), "AVRO")})
    decoders = Decoders(Registry(SchemaRegistrySettings(urls=("http://r",)), lambda _: client), LimitsSettings())
    avro = MessageMapper(settings(SCENARIOS["v"]).mappings, decoders=decoders)
    plain = MessageMapper(settings(SCENARIOS["a"]).mappings)
    parsed = fastavro.parse_schema(AVRO_SCHEMA)
    factory = EventFactory(seed=4)
    for offset in range(500):
        ms = 1_764_320_000_000 + offset
        key, doc, _kind = factory.record(ms)
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, avro_record(doc, ms))
        value = b"\x00" + struct.pack(">I", 7) + out.getvalue()
        _, from_avro = avro.map(FakeMessage(topic=TOPICS[0], offset=offset, key=key, value=value))
        _, from_json = plain.map(FakeMessage(topic=TOPICS[0], offset=offset, key=key, value=json.dumps(doc).encode()))
        assert check_event(from_avro) is None
        props = from_avro.pop("properties")
        page = props.pop("page")
        assert {k: v for k, v in props.items() if v is not None} == {
            k: v for k, v in from_json.pop("properties").items() if k != "page"
        }
        assert {k: v for k, v in page.items() if v is not None} == doc["properties"]["page"]
        assert from_avro == from_json
