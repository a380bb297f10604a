"""End to end: what /metrics, /healthz and /readyz say about what really happened."""

from __future__ import annotations

import json
import re
import time
import urllib.error

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY
from tests.integration.test_run import free_port, http_get, web_event, web_mapping
from tests.support.connector_process import ConnectorProcess, base_config, write_config
from tests.support.kafka_tools import all_committed, end_offsets, new_topic, produce, unique, wait_until
from tests.support.userflux_standin import UserFluxStandIn

pytestmark = pytest.mark.kafka

P = "userflux_connector_"


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, by (name, labels)."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((P + name, frozenset(labels.items())))


def series(samples: dict, name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in samples.items() if n == P + name}


def partitions_of(samples: dict, name: str, topic: str) -> dict[int, float]:
    return {
        int(dict(labels)["partition"]): v
        for labels, v in series(samples, name).items()
        if dict(labels)["topic"] == topic
    }


def probe(port: int, path: str) -> tuple[int, dict]:
    status, body = http_get(f"http://127.0.0.1:{port}{path}")
    return status, json.loads(body)


def probe_status(port: int, path: str) -> str | None:
    """The probe's status word, or None while the server is not listening yet."""
    try:
        return probe(port, path)[1]["status"]
    except urllib.error.URLError:
        return None


def test_the_figures_match_what_was_consumed_delivered_filtered_and_dead_lettered(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "figures", partitions=2)
    dlq = new_topic(kafka_bootstrap, "figures-dlq")
    group = unique("group")
    port = free_port()
    mapping = {**web_mapping(topic), "where": {"path": "kind", "not_in": ["debug"]}}
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            kafka_bootstrap,
            standin.base_url,
            API_KEY,
            group,
            [mapping],
            on_invalid="dead_letter",
            dead_letter={"topic": dlq},
            metrics={"enabled": True, "port": port, "lag_interval_s": 1},
        ),
    )
    good, debug, broken = 300, 11, 7
    produce(
        kafka_bootstrap,
        topic,
        [web_event(i) for i in range(good)]
        + [web_event(i, kind="debug") for i in range(debug)]
        + [b"not json"] * broken,
        key=lambda i: str(i).encode(),
    )  # keyed: both partitions get messages
    ends = end_offsets(kafka_bootstrap, topic, 2)
    with ConnectorProcess(config) as connector:
        standin.wait_for_events(good, timeout_s=60)
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 2), 30, "all offsets committed")
        # The lag monitor refreshes every second: wait until it saw the final commits.
        wait_until(
            lambda: partitions_of(scrape(port), "consumer_lag_messages", topic) == {0: 0, 1: 0},
            15,
            "lag 0 on both partitions",
        )
        m = scrape(port)
        assert value(m, "messages_consumed_total", topic=topic) == good + debug + broken
        assert value(m, "events_delivered_total", topic=topic, destination="default") == good
        assert value(m, "messages_filtered_total", topic=topic) == debug
        assert value(m, "messages_invalid_total", topic=topic, stage="deserialize", action="dead_letter") == broken
        assert value(m, "dead_letters_total", topic=topic, stage="deserialize") == broken
        # Known at start (the mapping's topic, every stage): there at 0, never refused.
        assert value(m, "dead_letter_failures_total", topic=topic, stage="deserialize") == 0
        assert partitions_of(m, "committed_offset", topic) == ends and 0 not in ends.values()
        assert partitions_of(m, "oldest_pending_age_seconds", topic) == {0: 0, 1: 0}
        assert value(m, "assigned_partitions") == 2
        assert value(m, "rebalances_total", kind="assign") >= 1
        assert value(m, "requests_total", outcome="delivered", code="204", destination="default") == value(
            m, "batch_events_count"
        )
        assert value(m, "batch_events_sum") == good
        assert value(m, "end_to_end_latency_seconds_count") == good
        assert value(m, "pending_messages") == 0 and value(m, "in_flight_events") == 0
        assert value(m, "build_info", version=connector_version()) == 1
        assert value(m, "key_refused") == 0
        assert m[("process_resident_memory_bytes", frozenset())] > 0  # prometheus-client's own
        status, body = probe(port, "/healthz")
        assert (status, body["status"], body["pending"]) == (200, "ok", 0)
        status, body = probe(port, "/readyz")
        assert (status, body) == (200, {"status": "ready", "assigned_partitions": 2})
        assert connector.stop() == 0


def connector_version() -> str:
    from connector import __version__

    return __version__


def test_lag_is_the_backlog_while_userflux_is_down_and_drains_after(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "lag", partitions=2)
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
            metrics={"enabled": True, "port": port, "lag_interval_s": 1},
            pipeline={"max_pending_messages": 100},
        ),
    )
    standin.fail_always(503, retry_after="0.3")
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(500)])

    def total_lag() -> float:
        return sum(partitions_of(scrape(port), "consumer_lag_messages", topic).values())

    with ConnectorProcess(config) as connector:
        connector.wait_for_log("pausing consumption", timeout_s=30)
        wait_until(lambda: total_lag() == 500, 15, "lag equal to the backlog")
        # Paused partitions fetch nothing: their lag must still follow what is produced.
        produce(kafka_bootstrap, topic, [web_event(i) for i in range(500, 700)])
        wait_until(lambda: total_lag() == 700, 15, "lag following new messages while paused")
        m = scrape(port)
        assert value(m, "consumption_paused") == 1 and value(m, "paused_partitions") == 2
        assert value(m, "requests_total", outcome="retry", code="503", destination="default") >= 2
        assert value(m, "retries_total", reason="503", destination="default") == value(
            m, "requests_total", outcome="retry", code="503", destination="default"
        )
        assert value(m, "retry_wait_seconds_total", cause="retry_after", destination="default") > 0
        assert value(m, "events_delivered_total", topic=topic, destination="default") == 0  # there from the start, at 0
        status, body = probe(port, "/healthz")
        assert (status, body["status"]) == (200, "outage"), body  # UserFlux answers: not a stall
        standin.heal()
        standin.wait_for_events(700, timeout_s=60)
        wait_until(lambda: total_lag() == 0, 20, "lag drained")
        assert value(scrape(port), "consumption_paused") == 0
        assert connector.stop() == 0


def test_requests_and_retries_are_counted_by_status_code(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "codes")
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
            userflux={
                "base_url": standin.base_url,
                "api_key": API_KEY,
                "batch_size": 50,
                "max_in_flight": 1,
                "retry": {"initial_backoff_ms": 20, "max_backoff_ms": 50},
            },
            metrics={"enabled": True, "port": port},
        ),
    )
    standin.fail_next(3, status=500)
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(50)])
    with ConnectorProcess(config) as connector:
        standin.wait_for_events(50, timeout_s=30)
        standin.fail_next(2, status=429, retry_after="0.2")
        produce(kafka_bootstrap, topic, [web_event(i) for i in range(50, 100)])
        standin.wait_for_events(100, timeout_s=30)
        # The stand-in records a batch before the connector has read its answer.
        wait_until(
            lambda: value(scrape(port), "requests_total", outcome="delivered", code="204", destination="default") == 2,
            10,
            "the second 204 counted",
        )
        m = scrape(port)
        assert connector.stop() == 0
    assert value(m, "requests_total", outcome="retry", code="500", destination="default") == 3
    assert value(m, "requests_total", outcome="retry", code="429", destination="default") == 2
    assert value(m, "requests_total", outcome="delivered", code="204", destination="default") == 2
    assert value(m, "retries_total", reason="500", destination="default") == 3
    assert value(m, "retries_total", reason="429", destination="default") == 2
    assert (
        value(m, "retry_wait_seconds_total", cause="retry_after", destination="default") >= 0.3
    )  # two Retry-After: 0.2, less the answer's handling
    assert value(m, "retry_wait_seconds_total", cause="backoff", destination="default") > 0
    assert value(m, "request_duration_seconds_count", destination="default") == 7


def test_a_revoked_partition_s_series_disappear_when_a_second_instance_joins(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "revoked-series", partitions=4)
    group = unique("group")
    ports = free_port(), free_port()
    configs = [
        write_config(
            tmp_path / f"c{i}.yaml",
            base_config(
                kafka_bootstrap,
                standin.base_url,
                API_KEY,
                group,
                [web_mapping(topic)],
                metrics={"enabled": True, "port": port, "lag_interval_s": 1},
            ),
        )
        for i, port in enumerate(ports)
    ]
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(40)])

    def owned(port: int, name: str = "oldest_pending_age_seconds") -> set[int]:
        """The partitions with series; lag and offsets appear after the first refresh."""
        m = scrape(port)
        lag, offset, age = (
            set(partitions_of(m, n, topic))
            for n in ("consumer_lag_messages", "committed_offset", "oldest_pending_age_seconds")
        )
        assert lag <= age and offset <= age, (lag, offset, age)  # no series outlives its partition
        return {"consumer_lag_messages": lag, "oldest_pending_age_seconds": age}[name]

    with ConnectorProcess(configs[0]) as first:
        standin.wait_for_events(40, timeout_s=60)
        wait_until(lambda: owned(ports[0], "consumer_lag_messages") == {0, 1, 2, 3}, 15, "lag of all 4 partitions")
        with ConnectorProcess(configs[1]) as second:
            first.wait_for_log("revoking", timeout_s=30)
            wait_until(lambda: owned(ports[1]), 30, "the second instance owns partitions")
            mine, theirs = owned(ports[0]), owned(ports[1])
            assert mine and theirs and not (mine & theirs) and mine | theirs == {0, 1, 2, 3}
            assert value(scrape(ports[0]), "rebalances_total", kind="revoke") >= 1
            assert value(scrape(ports[0]), "assigned_partitions") == len(mine)
            assert second.stop() == 0
        assert first.stop() == 0


def test_healthz_reports_a_stall_when_userflux_never_answers(kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, "stall")
    group = unique("group")
    port = free_port()
    with UserFluxStandIn(api_key=API_KEY) as hanging:
        hanging.set_delay(60)  # accepts every request and answers nothing for a minute
        config = write_config(
            tmp_path / "c.yaml",
            base_config(
                kafka_bootstrap,
                hanging.base_url,
                API_KEY,
                group,
                [web_mapping(topic)],
                userflux={"base_url": hanging.base_url, "api_key": API_KEY, "request_timeout_s": 30},
                metrics={"enabled": True, "port": port},
                pipeline={"stall_timeout_s": 3},
            ),
        )
        produce(kafka_bootstrap, topic, [web_event(i) for i in range(5)])
        with ConnectorProcess(config) as connector:
            connector.wait_for_log("assigned", timeout_s=30)
            status, body = probe(port, "/healthz")
            assert (status, body["status"]) == (200, "ok"), body
            wait_until(lambda: probe(port, "/healthz")[0] == 503, 15, "/healthz failing")
            status, body = probe(port, "/healthz")
            assert body["status"] == "stalled" and body["pending"] == 5, body
            assert body["oldest_pending_s"] >= 3 and body["last_progress_s"] >= 3, body
            oldest = partitions_of(scrape(port), "oldest_pending_age_seconds", topic)[0]
            assert oldest >= 2, oldest
            assert probe(port, "/readyz")[0] == 200  # stalled is for liveness; it still owns its partition
            connector.kill()


def test_readyz_says_the_key_is_refused_until_the_process_exits_3(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "refused")
    group = unique("group")
    port = free_port()
    wrong_key = "wrong-key-0123456789abcdef"
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            kafka_bootstrap,
            standin.base_url,
            wrong_key,
            group,
            [web_mapping(topic)],
            metrics={"enabled": True, "port": port},
            pipeline={"refused_exit_delay_s": 4},
        ),
    )
    produce(kafka_bootstrap, topic, [web_event(i) for i in range(5)])
    with ConnectorProcess(config) as connector:
        wait_until(lambda: probe_status(port, "/readyz") == "key_refused", 30, "/readyz: key refused")
        refused_at = time.monotonic()
        status, body = probe(port, "/readyz")
        assert status == 503 and "401" in body["detail"], body
        assert probe(port, "/healthz")[0] == 200  # the process is fine; the key is not
        assert value(scrape(port), "key_refused") == 1
        assert connector.wait(timeout_s=20) == 3
        lingered = time.monotonic() - refused_at
    assert 2 <= lingered <= 10, lingered
    assert wrong_key not in connector.stderr
    assert "exiting in 4s" in connector.stderr


def test_a_signal_ends_the_wait_after_a_refusal_at_once(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "refused-signal")
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            kafka_bootstrap,
            standin.base_url,
            "wrong-key-0123456789abcdef",
            unique("group"),
            [web_mapping(topic)],
            pipeline={"refused_exit_delay_s": 60},
        ),
    )
    produce(kafka_bootstrap, topic, [web_event(0)])
    with ConnectorProcess(config) as connector:
        connector.wait_for_log("exiting in 60s", timeout_s=30)
        started = time.monotonic()
        assert connector.stop(timeout_s=10) == 3
        assert time.monotonic() - started < 5
    assert re.search(r"refused the write key", connector.stderr)


def test_a_replica_beyond_the_partition_count_is_ready_and_idle(kafka_bootstrap, standin, tmp_path):
    topic = new_topic(kafka_bootstrap, "idle")
    group = unique("group")
    ports = free_port(), free_port()
    configs = [
        write_config(
            tmp_path / f"c{i}.yaml",
            base_config(
                kafka_bootstrap,
                standin.base_url,
                API_KEY,
                group,
                [web_mapping(topic)],
                metrics={"enabled": True, "port": port},
            ),
        )
        for i, port in enumerate(ports)
    ]
    with ConnectorProcess(configs[0]) as first:
        wait_until(lambda: probe_status(ports[0], "/readyz") == "ready", 30, "the first replica ready")
        with ConnectorProcess(configs[1]) as second:
            # Ready once it has joined the group, with no partition: a rollout must not wait on it.
            wait_until(lambda: probe_status(ports[1], "/readyz") == "ready", 30, "the idle replica ready")
            counts = sorted(probe(port, "/readyz")[1]["assigned_partitions"] for port in ports)
            assert counts == [0, 1]
            assert second.stop() == 0
        assert first.stop() == 0
