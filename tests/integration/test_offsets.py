"""``userflux-connector offsets`` end to end: the real CLI against the real broker.

Showing the group's offsets, state and members; a reset planned, then applied, refused
while the group has members; and the promise that matters: after a reset to a time, the
connector delivers exactly the events from that time on.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from confluent_kafka import Producer

from tests.conftest import API_KEY
from tests.support.connector_process import ConnectorProcess, base_config, cli, write_config
from tests.support.kafka_tools import all_committed, committed, new_topic, unique, wait_until

pytestmark = pytest.mark.kafka

# An hour ago, to the minute: recent, or the broker's retention (7 days) deletes the log.
TS = (int(time.time()) // 60 - 60) * 60_000


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


MAPPING = {"event": {"name": "event", "userId": "user", "timestamp": "@timestamp", "properties": "props"}}


def produce_timed(bootstrap: str, topic: str, first: int, count: int) -> None:
    """Events first..first+count-1, event i at TS + i seconds, on partition i % 2."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(first, first + count):
        value = json.dumps({"event": "page_view", "user": f"u{i}", "props": {"i": i}}).encode()
        producer.produce(topic, value=value, partition=i % 2, timestamp=TS + i * 1000)
    assert producer.flush(30) == 0


def offsets(config, *args: str) -> tuple[int, dict | None, str, str]:
    done = cli("offsets", "--config", str(config), *args, "--output", "json", timeout_s=60)
    lines = done.stdout.strip().splitlines()
    return done.returncode, json.loads(lines[-1]) if lines else None, done.stdout, done.stderr


def test_reset_to_a_time_then_the_connector_delivers_exactly_the_events_from_then_on(
    kafka_bootstrap, standin, tmp_path
):
    topic = new_topic(kafka_bootstrap, "web", partitions=2)
    group = unique("group")
    config = write_config(
        tmp_path / "c.yaml",
        base_config(kafka_bootstrap, standin.base_url, API_KEY, group, [{"topics": [topic], **MAPPING}]),
    )
    produce_timed(kafka_bootstrap, topic, 0, 40)

    code, shown, _, err = offsets(config)
    assert code == 0, err
    assert (shown["group"], shown["state"], shown["members"]) == (group, "Dead", [])  # no such group yet
    assert [(r["partition"], r["committed"], r["end"], r["lag"]) for r in shown["partitions"]] == [
        (0, None, 20, 20),  # never committed: the lag counts from where auto.offset.reset (earliest) starts
        (1, None, 20, 20),
    ]
    text = cli("offsets", "--config", str(config)).stdout
    assert "TOPIC" in text and "LAG" in text and f"group {group}: Dead, 0 members" in text

    # The plan: event 25 is the first at or after TS + 25 s (partition 1, offset 12; on
    # partition 0 event 26, offset 13). Nothing moves without --execute.
    at = ["reset", "--to", "datetime", iso(TS + 25_000).replace(".000Z", "Z")]
    code, plan, _, err = offsets(config, *at)
    assert code == 0, err
    assert plan["executed"] is False and plan["to"] == f"datetime {iso(TS + 25_000)}"
    assert [(r["partition"], r["committed"], r["new"]) for r in plan["partitions"]] == [(0, None, 13), (1, None, 12)]
    assert committed(kafka_bootstrap, group, topic, 2) == {0: -1001, 1: -1001}
    code, applied, _, err = offsets(config, *at, "--execute")
    assert (code, applied["executed"]) == (0, True), err
    assert committed(kafka_bootstrap, group, topic, 2) == {0: 13, 1: 12}

    with ConnectorProcess(config) as connector:
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 2), 60, "the connector to catch up")
        # While it runs: it shows as the group's member, and a reset is refused, naming it.
        code, shown, _, err = offsets(config)
        assert shown["state"] == "Stable" and len(shown["members"]) == 1 and shown["lag"] == 0
        member = shown["members"][0]
        assert sorted(member["assignment"]) == [f"{topic}[0]", f"{topic}[1]"]
        code, _, _, err = offsets(config, "reset", "--to", "earliest", "--execute")
        assert code == 7
        assert "1 active member" in err and member["member_id"] in err and member["client_id"] in err
        assert connector.stop() == 0
    delivered = sorted(e["properties"]["i"] for e in standin.events())
    assert delivered == list(range(25, 40)), "not exactly the events from the reset's time on"
    assert all(e["timestamp"] >= TS + 25_000 for e in standin.events())


def test_reset_to_latest_before_the_first_start_delivers_only_what_comes_after(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "web", partitions=2)
    group = unique("group")
    config = write_config(
        tmp_path / "c.yaml",
        base_config(kafka_bootstrap, standin.base_url, API_KEY, group, [{"topics": [topic], **MAPPING}]),
    )
    produce_timed(kafka_bootstrap, topic, 0, 10)  # history the new deployment must not send
    code, _, _, err = offsets(config, "reset", "--to", "latest", "--execute")
    assert code == 0, err
    assert committed(kafka_bootstrap, group, topic, 2) == {0: 5, 1: 5}

    # One partition moved on its own: --topic T:P, and an offset outside the log is clamped.
    code, plan, _, err = offsets(config, "reset", "--to", "offset", "2", "--topic", f"{topic}:1", "--execute")
    assert code == 0, err
    assert [(r["partition"], r["new"]) for r in plan["partitions"]] == [(1, 2)]
    code, plan, _, _ = offsets(config, "reset", "--to", "offset", "99", "--topic", f"{topic}:1")
    assert plan["partitions"][0]["new"] == 5 and "outside" in plan["partitions"][0]["note"]
    assert committed(kafka_bootstrap, group, topic, 2) == {0: 5, 1: 2}
    code, plan, _, _ = offsets(config, "reset", "--to", "latest", "--topic", f"{topic}:1", "--execute")
    assert committed(kafka_bootstrap, group, topic, 2) == {0: 5, 1: 5}

    # Mistakes say what is wrong, and change nothing.
    for args, says in [
        (["reset", "--to", "yesterday"], "expected earliest, latest"),
        (["reset", "--to", "datetime", "noon"], "ISO-8601"),
        (["reset", "--to", "latest", "--topic", "nope"], "not a topic the mappings read"),
        (["reset", "--to", "latest", "--topic", f"{topic}:7"], "has partitions 0 to 1"),
        (["--to", "latest"], "belong to `offsets reset`"),
    ]:
        code, _, _, err = offsets(config, *args)
        assert code == 2 and says in err, (args, err)

    with ConnectorProcess(config) as connector:
        connector.wait_for_log("assigned", timeout_s=30)
        produce_timed(kafka_bootstrap, topic, 10, 10)
        standin.wait_for_events(10, timeout_s=30)
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 2), 30, "the connector to commit")
        assert connector.stop() == 0
    assert sorted(e["properties"]["i"] for e in standin.events()) == list(range(10, 20))
