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
