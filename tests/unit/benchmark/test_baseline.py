"""The baseline application (tests/benchmark/baseline.py) does scenario (a)'s job: the same events."""

from __future__ import annotations

import json

from connector.mapping.mapper import MessageMapper
from tests.benchmark import baseline
from tests.benchmark.events import EventFactory
from tests.benchmark.scenarios import SCENARIOS
from tests.benchmark.sink import check_event
from tests.support.fakes import FakeMessage
from tests.unit.benchmark.test_scenarios import TOPICS, settings


def test_the_baseline_maps_every_generated_message_to_the_event_the_connector_sends():
    mapper = MessageMapper(settings(SCENARIOS["a"]).mappings)
    factory = EventFactory(seed=5)
    forms = set()
    for offset in range(2_000):
        ms = 1_764_320_000_000 + offset * 7
        key, value, _kind = factory.message(ms)
        forms.add(type(json.loads(value)["sent_at"]))
        _mapping, expected = mapper.map(FakeMessage(topic=TOPICS[0], offset=offset, key=key, value=value))
        found = baseline.to_event(json.loads(value))
        assert found == expected and check_event(found) is None
        assert found["timestamp"] == ms
    assert forms == {int, float, str}  # every form of sent_at was seen


def test_the_baseline_scenario_runs_the_baseline_with_as_many_posting_threads_as_the_connectors_senders():
    assert SCENARIOS["q"].baseline_threads == settings(SCENARIOS["a"]).settings.userflux.max_in_flight
