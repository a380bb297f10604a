"""The send-rate cap and several destinations, end to end: the real CLI, the real broker,
one UserFlux stand-in taking two projects' keys.

Rates are measured on the stand-in's own record of when each request arrived (its
monotonic ``received_at``), over a bounded run, never on the test's own timing. The
bounds hold on a loaded two-core machine: what a cap guarantees is an upper bound (at
most ``cap * (W + 0.05 s)`` events plus one batch in any ``W`` seconds, sink/ratecap.py),
measured here within 5% over runs of several seconds; how close a connector comes to its
cap depends on the machine, and is only required to be within 15% of it.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import API_KEY
from tests.support.connector_process import ConnectorProcess, base_config, free_port, http_get, write_config
from tests.support.kafka_tools import all_committed, committed, new_topic, produce, unique, wait_until
from tests.support.userflux_standin import RequestLog

pytestmark = pytest.mark.kafka

MOBILE_KEY = "mobile-write-key-0123456789"
UPPER, LOWER = 1.05, 0.85  # the measured rate over the cap's


def mapping(topic: str, destination: str | None = None) -> dict:
    found = {
        "topics": [topic],
        "event": {"name": "event", "userId": "user", "properties": {"from": "props", "set": {"topic": "@topic"}}},
    }
    if destination is not None:
        found["destination"] = destination
    return found


def values(n: int, name: str = "page_view") -> list[dict]:
    return [{"event": name, "user": f"u{i}", "props": {"i": i}} for i in range(n)]


def accepted(requests: list[RequestLog], key: str) -> list[RequestLog]:
    return sorted((r for r in requests if r.status == 204 and r.key == key), key=lambda r: r.received_at)


def rate(requests: list[RequestLog]) -> float:
    """Events per second from the first request to the last: every request's events but the
    last one's, which only marks the end of the window."""
    window = requests[-1].received_at - requests[0].received_at
    return sum(r.event_count for r in requests[:-1]) / window


def busiest(requests: list[RequestLog], window_s: float) -> int:
    """The most events that arrived within any ``window_s`` seconds."""
    most = 0
    for i, first in enumerate(requests):
        most = max(most, sum(r.event_count for r in requests[i:] if r.received_at < first.received_at + window_s))
    return most


def metric(body: str, name: str, **labels: str) -> float:
    matchers = "".join(rf'(?=[^}}]*{k}="{re.escape(v)}")' for k, v in labels.items())
    found = re.search(rf"^userflux_connector_{name}{{{matchers}[^}}]*}} (\S+)$", body, re.M)
    assert found, f"no {name} {labels} in the metrics"
    return float(found.group(1))


@pytest.mark.parametrize(
    "cap, setting, value",
    [("events", "max_events_per_second", 400), ("requests", "max_requests_per_second", 8)],
)
def test_the_rate_cap_holds_and_everything_is_delivered(kafka_bootstrap, standin, tmp_path, cap, setting, value):
    # 400 events/s, or 8 requests/s of 50 events: 400 events/s either way, about 6 s for 2400.
    limit, count = 400, 2400
    topic = new_topic(kafka_bootstrap, "capped", partitions=2)
    group, port = unique("group"), free_port()
    produce(kafka_bootstrap, topic, values(count))  # a backlog: the connector could send far faster
    config = base_config(
        kafka_bootstrap,
        standin.base_url,
        API_KEY,
        group,
        [mapping(topic)],
        userflux={setting: value},
        metrics={"enabled": True, "port": port},
    )
    with ConnectorProcess(write_config(tmp_path / "capped.yaml", config)) as connector:
        events = standin.wait_for_events(count, timeout_s=60)
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic, 2), 30, "every offset committed")
        _, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert connector.stop() == 0

    assert sorted(e["properties"]["i"] for e in events) == list(range(count))  # each once
    requests = accepted(standin.requests(), API_KEY)
    measured = rate(requests)
    assert LOWER * limit <= measured <= UPPER * limit, f"{measured:.1f} events/s against a cap of {limit}"
    # Never a burst: in any 2 s, the cap's share (2 s and the slack), one batch, and 0.2 s of
    # the arrival times' jitter on a busy machine.
    assert busiest(requests, 2.0) <= limit * (2.0 + 0.05 + 0.2) + 50
    # Every sender that waited for the cap was counted, and the cap is on show.
    assert metric(body, "rate_cap_wait_seconds_total", destination="default") > 1.0
    assert metric(body, f"rate_cap_{cap}_per_second", destination="default") == value
    assert metric(body, "requests_total", outcome="delivered", destination="default") == len(requests)


def test_two_destinations_one_throttled_while_the_other_keeps_its_rate(kafka_bootstrap, standin, tmp_path):
    standin.add_key(MOBILE_KEY)
    web, ios = new_topic(kafka_bootstrap, "web"), new_topic(kafka_bootstrap, "ios")
    group, port = unique("group"), free_port()
    web_cap, web_count, ios_count = 300, 2400, 1500
    produce(kafka_bootstrap, web, values(web_count, "page_view"))
    produce(kafka_bootstrap, ios, values(ios_count, "screen_view"))
    config = base_config(
        kafka_bootstrap,
        standin.base_url,
        API_KEY,
        group,
        [mapping(web), mapping(ios, "mobile")],
        userflux={
            "max_events_per_second": web_cap,
            "destinations": {"mobile": {"api_key": MOBILE_KEY}},
        },
        metrics={"enabled": True, "port": port},
        # Small enough that mobile's messages fill it within the throttle: only mobile's
        # partition may then stop being read. (Web, capped, fills its own too: its half,
        # 400 events, lasts longer than librdkafka takes to fetch again after a resume.)
        pipeline={"max_pending_messages": 800},
    )
    # Mobile's project is throttled from its first request on: 429, Retry-After: 2.
    standin.fail_always(429, retry_after="2", key=MOBILE_KEY)
    with ConnectorProcess(write_config(tmp_path / "two.yaml", config)) as connector:
        wait_until(
            lambda: any(r.key == MOBILE_KEY and r.status == 429 for r in standin.requests()),
            60,
            "mobile's first request, throttled",
        )
        time.sleep(5.0)  # web goes on meanwhile
        standin.heal()
        healed_at = time.monotonic()
        events = standin.wait_for_events(web_count + ios_count, timeout_s=60)
        wait_until(
            lambda: all_committed(kafka_bootstrap, group, web, 1) and all_committed(kafka_bootstrap, group, ios, 1),
            30,
            "every offset committed",
        )
        _, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert connector.stop() == 0

    # Every event reached the project its mapping names, and only that one, each once.
    batches = standin.batches()
    assert {(b.key, e["properties"]["topic"]) for b in batches for e in b.events} == {(API_KEY, web), (MOBILE_KEY, ios)}
    assert sorted(e["properties"]["i"] for e in events if e["properties"]["topic"] == web) == list(range(web_count))
    assert sorted(e["properties"]["i"] for e in events if e["properties"]["topic"] == ios) == list(range(ios_count))

    requests = standin.requests()
    mobile = sorted((r for r in requests if r.key == MOBILE_KEY), key=lambda r: r.received_at)
    refused = [r for r in mobile if r.status == 429]
    assert refused and mobile[-1].status == 204
    # Mobile honoured its Retry-After: once a 429 was answered, no request of mobile's came
    # for 2 s, but those already on their way (sent before the answer was read: 0.2 s).
    for answer in refused:
        assert answer.answered_at is not None
        early = [r for r in mobile if answer.answered_at + 0.2 <= r.received_at < answer.answered_at + 2.0]
        assert early == [], (answer, early)
    assert len({round(r.received_at) for r in refused}) >= 2  # throttled again and again, not once
    # While mobile was throttled, web kept its own rate, and never went above it.
    throttled = (refused[0].received_at, healed_at)
    during = [r for r in accepted(requests, API_KEY) if throttled[0] <= r.received_at <= throttled[1]]
    assert throttled[1] - throttled[0] >= 4.5 and len(during) >= 10
    measured = rate(during)
    assert 0.8 * web_cap <= measured <= 1.1 * web_cap, f"web: {measured:.1f} events/s while mobile was throttled"

    # Mobile's messages filled its share of max_pending_messages: its partition was paused.
    assert "messages of destination mobile pending (limit 800): pausing its 1 partitions" in connector.stderr
    assert metric(body, "events_delivered_total", topic=ios, destination="mobile") == ios_count
    assert metric(body, "events_delivered_total", topic=web, destination="default") == web_count
    assert metric(body, "requests_total", outcome="retry", code="429", destination="mobile") == len(refused)
    assert metric(body, "retry_wait_seconds_total", cause="retry_after", destination="mobile") >= 2.0
    assert 'destination="default",outcome="retry"' not in body and 'outcome="retry",destination="default"' not in body


def test_a_refused_key_names_its_destination_and_stops_everything(kafka_bootstrap, standin, tmp_path):
    web, ios = new_topic(kafka_bootstrap, "web"), new_topic(kafka_bootstrap, "ios")
    group = unique("group")
    produce(kafka_bootstrap, ios, values(20, "screen_view"))
    config = base_config(
        kafka_bootstrap,
        standin.base_url,
        API_KEY,
        group,
        [mapping(web), mapping(ios, "mobile")],
        userflux={"destinations": {"mobile": {"api_key": "revoked-mobile-key-0123"}}},  # not one the stand-in takes
    )
    with ConnectorProcess(write_config(tmp_path / "refused.yaml", config)) as connector:
        assert connector.wait(60) == 3
    assert "UserFlux refused the write key of destination 'mobile'" in connector.stderr
    assert "userflux.destinations.mobile.api_key" in connector.stderr
    assert "revoked-mobile-key-0123" not in connector.stderr
    assert committed(kafka_bootstrap, group, ios) == {0: -1001}  # nothing of it committed
    assert standin.events() == []


def test_a_replayed_dead_letter_goes_to_the_destination_its_mapping_names(kafka_bootstrap, standin, tmp_path):
    from tests.integration.test_replay import dead_letter, produce_at, replay

    standin.add_key(MOBILE_KEY)
    web, ios, dlq = (
        new_topic(kafka_bootstrap, "web"),
        new_topic(kafka_bootstrap, "ios"),
        new_topic(kafka_bootstrap, "dlq"),
    )
    letters = [dead_letter(ios, i, json.dumps(v).encode()) for i, v in enumerate(values(3, "screen_view"))]
    letters += [dead_letter(web, i, json.dumps(v).encode()) for i, v in enumerate(values(2, "page_view"))]
    produce_at(kafka_bootstrap, dlq, letters)
    config = base_config(
        kafka_bootstrap,
        standin.base_url,
        API_KEY,
        unique("group"),
        [mapping(web), mapping(ios, "mobile")],
        userflux={"destinations": {"mobile": {"api_key": MOBILE_KEY}}},
        on_invalid="dead_letter",
        dead_letter={"topic": dlq},
    )
    code, summary, done = replay(write_config(tmp_path / "replay.yaml", config))
    assert code == 0 and summary["delivered"] == 5, done.stderr[-3000:]
    assert sorted((b.key, e["properties"]["topic"]) for b in standin.batches() for e in b.events) == sorted(
        [(MOBILE_KEY, ios)] * 3 + [(API_KEY, web)] * 2
    )
