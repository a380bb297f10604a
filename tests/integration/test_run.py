"""End to end: the real CLI against the real Kafka broker and the UserFlux stand-in."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from tests.conftest import API_KEY
from tests.support.connector_process import ConnectorProcess, base_config, free_port, http_get, write_config
from tests.support.kafka_tools import (
    all_committed,
    committed,
    end_offsets,
    new_topic,
    produce,
    read_all,
    unique,
    wait_until,
)

pytestmark = pytest.mark.kafka

WEB_MAPPING = {
    "event": {
        "name": "event",
        "userId": "user.id",
        "anonymousId": "anonymous_id",
        "timestamp": "sent_at",
        "properties": "properties",
    }
}


def web_mapping(topic: str) -> dict:
    return {"topics": [topic], **WEB_MAPPING}


def web_event(i: int, **extra) -> dict:
    return {
        "event": "page_view",
        "user": {"id": i},
        "sent_at": 1_700_000_000 + i,
        "properties": {"i": i, "path": f"/p/{i}"},
        **extra,
    }


def test_two_topics_arrive_mapped_as_configured_in_batches_of_at_most_50(kafka_bootstrap, standin, tmp_path):
    web = new_topic(kafka_bootstrap, "web", partitions=2)
    prefix = unique("app").replace("-", "_")
    app = f"{prefix}.ios"
    from tests.support.kafka_broker import create_topic

    create_topic(kafka_bootstrap, app, partitions=2)
    group = unique("group")
    port = free_port()
    mappings = [
        web_mapping(web),
        {
            "pattern": f"^{prefix}\\..+",
            "location_enrichment": True,
            "where": {"path": "type", "in": ["track", "screen"]},
            "event": {
                "name": {"template": "{type}_{action}"},
                "userId": ["user.id", "@key"],
                "anonymousId": "@headers.device-id",
                "timestamp": "@timestamp",
                "properties": {
                    "from": ".",
                    "exclude": ["type", "action", "user"],
                    "set": {"source": {"value": "mobile"}, "topic": "@topic"},
                },
            },
        },
    ]
    config = write_config(
        tmp_path / "connector.yaml",
        base_config(
            kafka_bootstrap, standin.base_url, API_KEY, group, mappings, metrics={"enabled": True, "port": port}
        ),
    )
    produce(kafka_bootstrap, web, [web_event(i) for i in range(120)])
    app_values = [
        {
            "type": "track" if i % 2 else "screen",
            "action": "tap",
            "n": i,
            **({"user": {"id": f"u{i}"}} if i % 3 == 0 else {}),
        }
        for i in range(80)
    ]
    app_values += [{"type": "debug", "action": "log"}] * 10  # filtered by where:
    produce(kafka_bootstrap, app, app_values, key=lambda i: f"key{i}".encode(), headers=[("device-id", b"device-7")])

    with ConnectorProcess(config) as connector:
        events = standin.wait_for_events(200, timeout_s=60)
        wait_until(
            lambda: all_committed(kafka_bootstrap, group, web, 2) and all_committed(kafka_bootstrap, group, app, 2),
            30,
            "every offset committed (filtered messages included)",
        )
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert re.search(
            rf'userflux_connector_events_delivered_total{{destination="default",topic="{web}"}} 120\.0', body
        ), body[-3000:]
        assert re.search(rf'userflux_connector_messages_filtered_total{{topic="{app}"}} 10\.0', body)
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        assert connector.stop() == 0

    assert len(events) == 200
    web_events = sorted((e for e in events if e["name"] == "page_view"), key=lambda e: e["properties"]["i"])
    assert web_events[7] == {
        "name": "page_view",
        "userId": "7",
        "timestamp": 1_700_000_007_000,
        "properties": {"i": 7, "path": "/p/7"},
    }
    assert [e["properties"]["i"] for e in web_events] == list(range(120))
    app_events = sorted((e for e in events if e["name"] != "page_view"), key=lambda e: e["properties"]["n"])
    assert [e["properties"]["n"] for e in app_events] == list(range(80))
    first, second = app_events[0], app_events[1]
    assert first["name"] == "screen_tap" and first["userId"] == "u0" and first["anonymousId"] == "device-7"
    assert second["name"] == "track_tap" and second["userId"] == "key1"  # no user.id: the key
    assert first["properties"] == {"n": 0, "source": "mobile", "topic": app}
    assert isinstance(first["timestamp"], int) and first["timestamp"] > 1_600_000_000_000

    batches = standin.batches()
    assert all(1 <= len(b.events) <= 50 for b in batches)
    assert max(len(b.events) for b in batches) == 50  # full batches form under load
    for batch in batches:
        kinds = {e["name"] == "page_view" for e in batch.events}
        assert len(kinds) == 1, "a batch mixed locationEnrichment values"
        assert batch.location_enrichment is (not kinds.pop())


def test_outage_holds_offsets_and_everything_arrives_after_it_heals(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "outage", partitions=2)
    group = unique("group")
    config = write_config(
        tmp_path / "c.yaml", base_config(kafka_bootstrap, standin.base_url, API_KEY, group, [web_mapping(topic)])
    )
    standin.fail_always(500)
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(100)])

    with ConnectorProcess(config) as connector:
        wait_until(lambda: len([r for r in standin.requests() if r.status == 500]) >= 5, 30, "retried 500s")
        time.sleep(0.5)  # several commit intervals pass during the outage
        assert committed(kafka_bootstrap, group, topic, 2) == {0: -1001, 1: -1001}
        assert standin.events() == []
        standin.heal()
        events = standin.wait_for_events(100, timeout_s=30)
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 2), 30, "offsets committed after healing")
        assert connector.stop() == 0
    assert sorted(e["properties"]["i"] for e in events) == list(range(100))
    assert "HTTP 500" in connector.stderr


def test_invalid_messages_land_in_the_dead_letter_topic_with_their_reasons(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "invalid")
    dlq = new_topic(kafka_bootstrap, "dlq")
    group = unique("group")
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            kafka_bootstrap,
            standin.base_url,
            API_KEY,
            group,
            [web_mapping(topic)],
            on_invalid="dead_letter",
            dead_letter={"topic": dlq},
        ),
    )
    standin.reject_events(lambda e: e["name"] == "refused_by_userflux")
    values = [
        web_event(0),
        b"{not json",
        {"user": {"id": 1}},  # no name
        web_event(2, event="Page Viewed"),  # white space in the name
        web_event(3, event="refused_by_userflux"),
        web_event(4),
    ]
    produce(kafka_bootstrap, topic, values, key=b"the-key", headers=[("trace", b"t-1")])

    with ConnectorProcess(config) as connector:
        events = standin.wait_for_events(2, timeout_s=30)
        letters = read_all(kafka_bootstrap, dlq, 4, timeout_s=30)
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic), 30, "offsets committed")
        assert connector.stop() == 0

    assert sorted(e["properties"]["i"] for e in events) == [0, 4]
    by_offset = {}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers()}
        assert headers["trace"] == "t-1"  # the original headers are kept
        assert letter.key() == b"the-key"
        assert headers["userflux.source.topic"] == topic
        assert headers["userflux.source.partition"] == "0"
        by_offset[int(headers["userflux.source.offset"])] = (letter.value(), headers)
    assert sorted(by_offset) == [1, 2, 3, 4]
    assert by_offset[1][0] == b"{not json"
    assert by_offset[1][1]["userflux.error.stage"] == "deserialize"
    assert "not JSON" in by_offset[1][1]["userflux.error.reason"]
    assert by_offset[2][1]["userflux.error.stage"] == "map"
    assert "name" in by_offset[2][1]["userflux.error.reason"]
    assert "white space" in by_offset[3][1]["userflux.error.reason"]
    assert by_offset[4][1]["userflux.error.stage"] == "deliver"
    assert "HTTP 400" in by_offset[4][1]["userflux.error.reason"]
    assert json.loads(by_offset[4][0])["event"] == "refused_by_userflux"


def test_a_restarted_connector_resumes_where_it_committed(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "restart", partitions=3)
    group = unique("group")
    config = write_config(
        tmp_path / "c.yaml", base_config(kafka_bootstrap, standin.base_url, API_KEY, group, [web_mapping(topic)])
    )
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(60)])
    with ConnectorProcess(config) as first:
        standin.wait_for_events(60, timeout_s=30)
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 3), 30, "first run committed")
        assert first.stop() == 0

    produce(kafka_bootstrap, topic, [web_event(i) for i in range(60, 90)])
    with ConnectorProcess(config) as second:
        standin.wait_for_events(90, timeout_s=30)
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 3), 30, "second run committed")
        time.sleep(0.5)  # anything re-sent would arrive by now
        assert second.stop() == 0
    ids = [e["properties"]["i"] for e in standin.events()]
    assert sorted(ids) == list(range(90)), "a committed message was delivered again, or one is missing"


def test_sigterm_delivers_and_commits_what_is_in_flight(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "sigterm")
    group = unique("group")
    config = write_config(
        tmp_path / "c.yaml", base_config(kafka_bootstrap, standin.base_url, API_KEY, group, [web_mapping(topic)])
    )
    standin.set_delay(2.0)
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(30)])
    with ConnectorProcess(config) as connector:
        wait_until(
            lambda: connector.running() and standin.requests() == [] and "assigned" in connector.stderr,
            30,
            "the connector to join",
        )
        time.sleep(0.5)  # the batch is now in flight, its answer 1.5 s away
        assert standin.events() == []
        assert connector.stop(signal.SIGTERM, timeout_s=20) == 0
    assert sorted(e["properties"]["i"] for e in standin.events()) == list(range(30))
    assert committed(kafka_bootstrap, group, topic) == {0: 30}


def test_a_refused_key_stops_the_run_without_committing_or_dead_lettering(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "auth")
    dlq = new_topic(kafka_bootstrap, "auth-dlq")
    group = unique("group")
    wrong_key = "wrong-key-abcdef123456"
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            kafka_bootstrap,
            standin.base_url,
            wrong_key,
            group,
            [web_mapping(topic)],
            on_invalid="dead_letter",
            dead_letter={"topic": dlq},
        ),
    )
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(10)])
    with ConnectorProcess(config) as connector:
        assert connector.wait(timeout_s=30) == 3
    assert "refused the write key" in connector.stderr
    assert wrong_key not in connector.stderr and wrong_key not in connector.stdout
    assert {r.status for r in standin.requests()} == {401}
    assert committed(kafka_bootstrap, group, topic) == {0: -1001}
    assert end_offsets(kafka_bootstrap, dlq) == {0: 0}


def test_retry_after_is_honoured(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "retry-after")
    group = unique("group")
    config = write_config(
        tmp_path / "c.yaml", base_config(kafka_bootstrap, standin.base_url, API_KEY, group, [web_mapping(topic)])
    )
    standin.fail_next(1, status=429, retry_after="2")
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(5)])
    with ConnectorProcess(config) as connector:
        wait_until(lambda: standin.requests(), 30, "the first request")
        refused_at = time.monotonic()
        standin.wait_for_events(5, timeout_s=30)
        waited = time.monotonic() - refused_at
        assert connector.stop() == 0
    assert [r.status for r in standin.requests()] == [429, 204]
    assert waited >= 1.8, f"retried after {waited:.2f}s despite Retry-After: 2"


def test_replicas_share_the_partitions_and_a_rebalance_loses_nothing(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "replicas", partitions=4)
    group = unique("group")
    config = base_config(kafka_bootstrap, standin.base_url, API_KEY, group, [web_mapping(topic)])
    first_config = write_config(tmp_path / "first.yaml", config)
    second_config = write_config(tmp_path / "second.yaml", config)
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(200)])
    with ConnectorProcess(first_config) as first:
        standin.wait_for_events(1, timeout_s=30)
        with ConnectorProcess(second_config) as second:
            second.wait_for_log("assigned", timeout_s=30)
            produce(kafka_bootstrap, topic, [web_event(i) for i in range(200, 400)])
            wait_until(lambda: len({e["properties"]["i"] for e in standin.events()}) == 400, 60, "all 400 events")
            wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 4), 30, "all offsets committed")
            assert second.stop() == 0
        assert first.stop() == 0

    def assigned(log: str) -> set[str]:
        return set(re.findall(rf"{topic}\[\d\]", "\n".join(line for line in log.splitlines() if "assigned" in line)))

    assert assigned(second.stderr), "the second replica never got a partition"
    assert len(assigned(first.stderr) | assigned(second.stderr)) == 4
    assert "revoking" in first.stderr  # the cooperative rebalance moved partitions away from the first


def test_dry_run_prints_batches_and_commits_nothing(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "dry")
    group = unique("group")
    config = write_config(
        tmp_path / "c.yaml", base_config(kafka_bootstrap, standin.base_url, API_KEY, group, [web_mapping(topic)])
    )
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(10)] + [b"oops"])
    with ConnectorProcess(config, "--dry-run") as connector:
        wait_until(lambda: '"invalid"' in connector.stdout, 30, "the dry run's output")
        time.sleep(0.5)  # more than a commit interval
        assert connector.stop() == 0
    lines = [json.loads(line) for line in connector.stdout.splitlines()]
    batches = [line for line in lines if "events" in line]
    assert sum(len(b["events"]) for b in batches) == 10
    assert batches[0]["locationEnrichment"] is False
    assert batches[0]["events"][0] == {
        "name": "page_view",
        "userId": "0",
        "timestamp": 1_700_000_000_000,
        "properties": {"i": 0, "path": "/p/0"},
    }
    assert [line["offset"] for line in lines if "invalid" in line] == [10]
    assert standin.requests() == []
    assert committed(kafka_bootstrap, group, topic) == {0: -1001}
    assert committed(kafka_bootstrap, group + ".dry-run", topic) == {0: -1001}


def test_on_invalid_stop_exits_without_committing_past_the_invalid_message(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "stop")
    group = unique("group")
    config = write_config(
        tmp_path / "c.yaml",
        base_config(kafka_bootstrap, standin.base_url, API_KEY, group, [web_mapping(topic)], on_invalid="stop"),
    )
    produce(kafka_bootstrap, topic, [web_event(0), web_event(1), b"not json", web_event(3)])
    with ConnectorProcess(config) as connector:
        assert connector.wait(timeout_s=30) == 4
    assert "offset 2" in connector.stderr and "not JSON" in connector.stderr
    offset = committed(kafka_bootstrap, group, topic)[0]
    assert offset <= 2, f"committed {offset}, past the invalid message at offset 2"


def test_bad_configuration_exits_at_once_naming_the_key(tmp_path):
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            "127.0.0.1:9",
            "http://127.0.0.1:9",
            API_KEY,
            "g",
            [web_mapping("t")],
            userflux={"base_url": "http://127.0.0.1:9", "api_key": API_KEY, "batch_size": 51},
        ),
    )
    with ConnectorProcess(config) as connector:
        assert connector.wait(timeout_s=20) == 2
    assert "userflux.batch_size: expected an integer from 1 to 50, found number 51" in connector.stderr


def metric(port: int, name: str) -> float:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    found = re.search(rf"^{name} ([0-9.e+-]+)$", body, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_reading_pauses_at_max_pending_messages_and_resumes_after_an_outage(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "backpressure", partitions=2)
    group = unique("group")
    port = free_port()
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            kafka_bootstrap,
            standin.base_url,
            API_KEY,
            group,
            [web_mapping(topic)],
            metrics={"enabled": True, "port": port},
            pipeline={"max_pending_messages": 120},
        ),
    )
    standin.fail_always(503, retry_after="0.2")
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(1000)])
    with ConnectorProcess(config) as connector:
        connector.wait_for_log("pausing consumption", timeout_s=30)
        time.sleep(1.0)  # reading stays paused: pending does not grow past the limit
        assert metric(port, "userflux_connector_consumption_paused") == 1
        assert metric(port, "userflux_connector_pending_messages") == 120
        assert metric(port, "userflux_connector_messages_consumed_total" + f'{{topic="{topic}"}}') == 120
        standin.heal()
        events = standin.wait_for_events(1000, timeout_s=60)
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 2), 30, "all offsets committed")
        assert metric(port, "userflux_connector_consumption_paused") == 0
        assert connector.stop() == 0
    assert sorted(e["properties"]["i"] for e in events) == list(range(1000))


def test_revocation_finishes_in_flight_work_so_the_new_owner_repeats_nothing(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "revoke", partitions=4)
    group = unique("group")
    config = base_config(
        kafka_bootstrap,
        standin.base_url,
        API_KEY,
        group,
        [web_mapping(topic)],
        userflux={
            "base_url": standin.base_url,
            "api_key": API_KEY,
            "batch_size": 10,
            "max_in_flight": 2,
            "linger_ms": 20,
        },
    )
    standin.set_delay(0.25)  # batches are in flight when the second replica joins
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(400)])
    with ConnectorProcess(write_config(tmp_path / "first.yaml", config)) as first:
        standin.wait_for_events(20, timeout_s=30)
        with ConnectorProcess(write_config(tmp_path / "second.yaml", config)) as second:
            first.wait_for_log("revoking", timeout_s=30)
            wait_until(lambda: len({e["properties"]["i"] for e in standin.events()}) == 400, 90, "all 400 events")
            wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 4), 30, "all offsets committed")
            assert second.stop() == 0
        assert first.stop() == 0
    ids = [e["properties"]["i"] for e in standin.events()]
    assert "did not finish in time" not in first.stderr
    assert len(ids) == 400, f"{len(ids) - 400} events were delivered twice across the rebalance"
