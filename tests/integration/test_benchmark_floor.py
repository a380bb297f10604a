"""The benchmark's floor runs (tests/benchmark/floor.py) against the real broker: every mode delivers."""

from __future__ import annotations

import pytest

from tests.benchmark import floor
from tests.benchmark.events import preload
from tests.benchmark.run import API_KEY
from tests.benchmark.sink import SinkProcess
from tests.support.kafka_broker import create_topic
from tests.support.kafka_tools import new_topic, unique

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("mode", floor.MODES)
def test_each_mode_runs_the_pipeline_until_every_event_is_delivered_and_reports_its_cpu(
    mode, kafka_bootstrap, tmp_path
):
    topic = new_topic(kafka_bootstrap, "floor", partitions=2)
    dead_letters = unique("floor-dead")
    create_topic(kafka_bootstrap, dead_letters, partitions=1)
    preload(kafka_bootstrap, topic, 3_000)
    with SinkProcess(API_KEY, log_path=str(tmp_path / "sink.log")) as sink:
        result = floor.child(mode, kafka_bootstrap, sink.base_url, 3_000, topic=topic, dead_letter_topic=dead_letters)
        received = sink.stats()["events"]
    assert result["mode"] == mode and result["cpu_us_per_event"] > 0 and result["events_per_s"] > 0
    # loop answers on its own: nothing reaches the sink; the others deliver every event there.
    assert received == (0 if mode == "loop" else 3_000)
