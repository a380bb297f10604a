"""``userflux-connector replay`` end to end: the real CLI, the real broker, the stand-in.

What is checked is the replay's promise (docs/delivery.md, "Replaying dead letters"):
every dead letter up to the end offsets at the start is delivered, written again (still
invalid, with its replay count), reported, or kept; its offset is committed only then;
nothing is lost on a kill -9 or a refused key, and a finished replay does not repeat.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time

import pytest
from confluent_kafka import Producer

from tests.conftest import API_KEY
from tests.support.connector_process import ConnectorProcess, base_config, cli, write_config
from tests.support.kafka_tools import (
    all_committed,
    committed,
    end_offsets,
    new_topic,
    read_all,
    unique,
    wait_until,
)

pytestmark = pytest.mark.kafka

# The produced messages' Kafka timestamps start an hour ago, to the minute: recent, or the
# broker's retention (7 days) would delete them.
TS = (int(time.time()) // 60 - 60) * 60_000

# Before the fix: the event's name is read from "event" alone; some producers send "action".
BROKEN = {
    "name": "event",
    "userId": "user",
    "timestamp": "@timestamp",
    "properties": {"from": "props", "set": {"trace": "@headers.trace", "key": "@key", "offset": "@offset"}},
}
FIXED = {**BROKEN, "name": ["event", "action"]}


def mapping(topic: str, event: dict) -> dict:
    return {"topics": [topic], "event": event}


def value(i: int, name_field: str = "event") -> dict:
    return {name_field: f"evt_{i % 7}", "user": f"u{i}", "props": {"i": i}}


def produce_at(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes | None, list, int]], partition=None):
    """(value, key, headers, timestamp ms) each, in order; waits for the acks."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors: list = []
    for raw, key, headers, ts in messages:
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(
            topic,
            value=raw,
            key=key,
            headers=headers,
            timestamp=ts,
            on_delivery=lambda e, _m: e and errors.append(e),
            **kwargs,
        )
    assert producer.flush(30) == 0 and not errors, errors


def dead_letter(source: str, offset: int, raw: bytes, stage: str = "map", ts: int = TS, **extra: str):
    """A dead letter as the connector writes it (dead_letter.py), for a message of
    ``source`` partition 0 at ``offset``."""
    headers = [
        ("trace", f"t-{offset}".encode()),
        ("userflux.error.reason", b"the event has no name"),
        ("userflux.error.stage", stage.encode()),
        ("userflux.source.topic", source.encode()),
        ("userflux.source.partition", b"0"),
        ("userflux.source.offset", str(offset).encode()),
        *((k, v.encode()) for k, v in extra.items()),
    ]
    return (raw, f"k{offset}".encode(), headers, ts)


def config_for(bootstrap, base_url, group, mappings, dlq, tmp_path, name="c.yaml", **overrides):
    return write_config(
        tmp_path / name,
        base_config(
            bootstrap,
            base_url,
            API_KEY,
            group,
            mappings,
            on_invalid="dead_letter",
            dead_letter={"topic": dlq},
            **overrides,
        ),
    )


def one_source(bootstrap, base_url, tmp_path, dlq_partitions: int = 1, **overrides):
    """A source topic, a dead-letter topic, a group and a configuration with the fixed mapping."""
    source = new_topic(bootstrap, "web")
    dlq = new_topic(bootstrap, "dlq", partitions=dlq_partitions)
    group = unique("group")
    config = config_for(bootstrap, base_url, group, [mapping(source, FIXED)], dlq, tmp_path, **overrides)
    return source, dlq, group, config


def replay(config, *args: str, timeout_s: float = 90) -> tuple[int, dict, subprocess.CompletedProcess]:
    """Run replay to its end; (exit code, the JSON summary, the process)."""
    done = cli("replay", "--config", str(config), "--output", "json", *args, timeout_s=timeout_s)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, f"no summary on stdout (exit {done.returncode}):\n{done.stderr[-4000:]}"
    return done.returncode, json.loads(lines[-1]), done


def letters(bootstrap: str, topic: str, partitions: int = 1) -> list:
    ends = end_offsets(bootstrap, topic, partitions)
    return read_all(bootstrap, topic, sum(ends.values()), partitions=partitions) if sum(ends.values()) else []


def headers_of(message) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in message.headers() or []}


def test_fix_a_mapping_then_replay_and_everything_is_delivered_once(kafka_bootstrap, standin, tmp_path):
    source = new_topic(kafka_bootstrap, "web", partitions=2)
    dlq = new_topic(kafka_bootstrap, "dlq", partitions=2)
    group = unique("group")
    broken = config_for(
        kafka_bootstrap, standin.base_url, group, [mapping(source, BROKEN)], dlq, tmp_path, "broken.yaml"
    )
    fixed = config_for(kafka_bootstrap, standin.base_url, group, [mapping(source, FIXED)], dlq, tmp_path, "fixed.yaml")
    # 60 messages: every 4th names its event "action" (invalid until the fix), every 10th is
    # refused by UserFlux during the run (fine by the replay), and two are not JSON at all.
    messages = []
    for i in range(60):
        raw = json.dumps(value(i, "action" if i % 4 == 0 else "event")).encode()
        if i % 10 == 5:
            raw = json.dumps({**value(i), "event": "refused_now"}).encode()
        if i in (7, 33):
            raw = b"{not json"
        messages.append((raw, f"key-{i}".encode(), [("trace", f"t{i}".encode())], TS + i * 1000))
    for p in (0, 1):
        produce_at(kafka_bootstrap, source, messages[p::2], partition=p)
    standin.reject_events(lambda e: e["name"] == "refused_now")
    with ConnectorProcess(broken) as run:
        wait_until(lambda: all_committed(kafka_bootstrap, group, source, 2), 60, "the run to commit everything")
        assert run.stop() == 0
    invalid_by_run = {i for i in range(60) if i % 4 == 0 or i % 10 == 5 or i in (7, 33)}
    delivered_by_run = {e["properties"]["i"] for e in standin.events()}
    assert delivered_by_run == set(range(60)) - invalid_by_run
    assert sum(end_offsets(kafka_bootstrap, dlq, 2).values()) == len(invalid_by_run)
    standin.reset()  # UserFlux takes the refused ones now

    # A dry run: what would be delivered and what is still invalid; nothing sent or committed.
    code, dry, done = replay(fixed, "--dry-run")
    assert (code, dry["dry_run"], dry["finished"]) == (6, True, True), done.stderr[-3000:]
    assert (dry["read"], dry["delivered"], dry["still_invalid"]["total"]) == (len(invalid_by_run), 21, 2)
    printed = [json.loads(line) for line in done.stdout.splitlines()[:-1]]
    assert sum(len(line["events"]) for line in printed if "events" in line) == 21
    assert sorted(line["offset"] for line in printed if "invalid" in line) == [3, 16]  # 7 and 33, per partition
    assert standin.events() == [] and standin.requests() == []
    assert committed(kafka_bootstrap, group + ".replay", dlq, 2) == {0: -1001, 1: -1001}

    ends_at_start = end_offsets(kafka_bootstrap, dlq, 2)
    code, summary, done = replay(fixed)
    assert code == 6, done.stderr[-3000:]  # two are still invalid: exit 6 says something was left
    assert summary["finished"] and summary["delivered"] == 21 and summary["left"] == 2
    assert summary["still_invalid"]["by_reason"][0]["stage"] == "deserialize"
    assert summary["still_invalid"]["by_reason"][0]["count"] == 2
    events = standin.events()
    assert sorted(e["properties"]["i"] for e in events) == sorted(invalid_by_run - {7, 33}), "lost or repeated"
    for event in events:  # mapped from the original key, headers, offset and timestamp
        i = event["properties"]["i"]
        assert event["properties"]["key"] == f"key-{i}" and event["properties"]["trace"] == f"t{i}"
        assert event["properties"]["offset"] == i // 2 and event["timestamp"] == TS + i * 1000
    assert committed(kafka_bootstrap, group + ".replay", dlq, 2) == ends_at_start

    # The two still invalid are in the dead-letter topic again, as the originals, with a count.
    again = [m for m in letters(kafka_bootstrap, dlq, 2) if "userflux.replay.count" in headers_of(m)]
    assert sorted(int(headers_of(m)["userflux.source.offset"]) for m in again) == [3, 16]
    for m in again:
        h = headers_of(m)
        assert h["userflux.replay.count"] == "1" and h["userflux.error.stage"] == "deserialize"
        assert h["userflux.source.topic"] == source and m.value() == b"{not json"
        assert list(h).count("userflux.error.reason") == 1  # the old headers are not carried along
        assert h["trace"] in ("t7", "t33") and m.timestamp()[1] in (TS + 7000, TS + 33000)

    # Finished replays do not repeat: the next one reads only the two written again...
    standin.reset()
    code, summary, _ = replay(fixed)
    assert (code, summary["read"], summary["delivered"], summary["still_invalid"]["total"]) == (6, 2, 0, 2)
    # ... and past --max-replays they are reported, not written again.
    before = sum(end_offsets(kafka_bootstrap, dlq, 2).values())
    code, summary, done = replay(fixed, "--max-replays", "1")
    assert (code, summary["read"], summary["not_replayable"]["total"]) == (6, 2, 2)
    assert "still invalid after --max-replays" in summary["not_replayable"]["by_reason"][0]["reason"]
    assert sum(end_offsets(kafka_bootstrap, dlq, 2).values()) == before
    assert standin.events() == []
    # Nothing left to read: exit 0.
    code, summary, _ = replay(fixed)
    assert (code, summary["read"], summary["to_read"]) == (0, 0, 0)


def test_filters_replay_only_what_they_select_and_keep_the_rest_for_a_later_replay(kafka_bootstrap, standin, tmp_path):
    web, app = new_topic(kafka_bootstrap, "web"), new_topic(kafka_bootstrap, "app")
    dlq = new_topic(kafka_bootstrap, "dlq")
    group = unique("group")
    config = config_for(
        kafka_bootstrap, standin.base_url, group, [mapping(web, FIXED), mapping(app, FIXED)], dlq, tmp_path
    )
    # Offsets 0..11: web and app, stages map and deliver, timestamps a minute apart.
    planned = []
    for i in range(12):
        source, stage = (web, app)[i % 2], ("map", "deliver")[(i // 2) % 2]
        planned.append((source, stage, TS + i * 60_000))
        produce_at(
            kafka_bootstrap, dlq, [dead_letter(source, i, json.dumps(value(i)).encode(), stage, ts=TS + i * 60_000)]
        )
    moment = dt.datetime.fromtimestamp(TS / 1000, dt.UTC)
    since = (moment + dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = (moment + dt.timedelta(minutes=9)).astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    selected = {
        i
        for i, (source, stage, ts) in enumerate(planned)
        if source == web and stage == "map" and TS + 120_000 <= ts < TS + 540_000
    }
    assert selected == {4, 8}

    code, summary, done = replay(config, "--stage", "map", "--source-topic", web, "--since", since, "--until", until)
    assert code == 0, done.stderr[-3000:]
    assert (summary["delivered"], summary["kept"]) == (2, 10)
    assert summary["filters"]["stage"] == ["map"] and summary["filters"]["source_topic"] == [web]
    assert summary["filters"]["since"] == since.replace("Z", ".000Z")
    assert summary["filters"]["until"] == (moment + dt.timedelta(minutes=9)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert sorted(e["properties"]["i"] for e in standin.events()) == [4, 8]
    kept = read_all(kafka_bootstrap, dlq, 22)[12:]  # written again as they were, in their order
    assert [int(headers_of(m)["userflux.source.offset"]) for m in kept] == sorted(set(range(12)) - selected)
    for m in kept:
        i = int(headers_of(m)["userflux.source.offset"])
        assert headers_of(m)["userflux.error.stage"] == planned[i][1] and m.timestamp()[1] == planned[i][2]
        assert "userflux.replay.count" not in headers_of(m) and json.loads(m.value())["props"] == {"i": i}

    # A later replay without filters finds the kept ones, and only them.
    code, summary, _ = replay(config)
    assert (code, summary["read"], summary["delivered"]) == (0, 10, 10)
    assert sorted(e["properties"]["i"] for e in standin.events()) == list(range(12))


def test_a_dead_letter_dropped_for_size_is_read_at_its_source_or_reported(kafka_bootstrap, standin, tmp_path):
    source, dlq, group, config = one_source(kafka_bootstrap, standin.base_url, tmp_path)
    blob = "b" * 200_000
    produce_at(
        kafka_bootstrap,
        source,
        [(json.dumps({**value(0), "props": {"i": 0, "blob": blob}}).encode(), b"key-0", [("trace", b"t0")], TS)],
    )
    dropped = {
        "userflux.error.dropped": "the value (200071 bytes) and the original headers: the dead letter was too large"
    }
    slim = [
        (raw, None, [h for h in headers if h[0] != "trace"], ts)
        for raw, _k, headers, ts in [dead_letter(source, 0, b"", **dropped), dead_letter(source, 5, b"", **dropped)]
    ]
    missing = unique("gone")
    slim.append(dead_letter(missing, 0, b"", **dropped))
    produce_at(kafka_bootstrap, dlq, slim)

    code, summary, done = replay(config)
    assert code == 6, done.stderr[-3000:]
    assert (summary["delivered"], summary["not_replayable"]["total"]) == (1, 2)
    [event] = standin.events()
    assert event["properties"] == {"i": 0, "blob": blob, "trace": "t0", "key": "key-0", "offset": 0}
    details = {item["detail"] for item in summary["not_replayable"]["dead_letters"]}
    assert details == {
        f"{source}[0] no longer holds offset 5 (it holds offsets 0 to 0)",
        f"the source topic no longer has {missing}[0]",
    }
    assert all_committed(kafka_bootstrap, group + ".replay", dlq)


def test_kill_9_mid_replay_then_again_loses_nothing_and_repeats_within_the_bound(kafka_bootstrap, standin, tmp_path):
    pipeline = {"max_pending_messages": 200, "commit_interval_ms": 200}
    userflux = {"batch_size": 50, "max_in_flight": 2}
    source, dlq, group, config = one_source(
        kafka_bootstrap, standin.base_url, tmp_path, 3, pipeline=pipeline, userflux=userflux
    )
    total = 3000
    bad = set(range(0, total, 97))  # still invalid: written again
    planned = [dead_letter(source, i, b"{bad" if i in bad else json.dumps(value(i)).encode()) for i in range(total)]
    for p in range(3):
        produce_at(kafka_bootstrap, dlq, planned[p::3], partition=p)
    standin.set_delay(1.0)  # 100 events a second: the first replay outlasts the second one's wait

    with ConnectorProcess(config, "--output", "json", command="replay") as first:
        wait_until(lambda: standin.event_count() >= 100, 60, "the replay to be under way")
        # A second replay in the same group waits one session timeout for the member to
        # leave (a killed one would), then is refused, naming the one that runs.
        second = cli("replay", "--config", str(config), timeout_s=60)
        assert second.returncode == 7, second.stderr[-2000:]
        assert "waiting up to 11s for them to leave" in second.stderr
        assert "another replay is running" in second.stderr and "1 active member" in second.stderr
        assert first.running()
        # SIGTERM: it stops, committing what is done, and says it did not reach the end.
        assert first.stop(signal.SIGTERM) == 7
    stopped = json.loads(first.stdout.splitlines()[-1])
    assert stopped["finished"] is False and stopped["exit_code"] == 7

    before_kill = end_offsets(kafka_bootstrap, dlq, 3)  # the first run wrote still-invalid ones again
    standin.set_delay(0.2)
    with ConnectorProcess(config, "--output", "json", command="replay") as killed:
        start = standin.event_count()
        wait_until(lambda: standin.event_count() >= start + 300, 60, "the replay to be under way again")
        killed.process.send_signal(signal.SIGKILL)
        killed.wait()
    at_kill = committed(kafka_bootstrap, group + ".replay", dlq, 3)
    assert sum(at_kill.values()) < sum(before_kill.values()), "killed after the end"

    standin.set_delay(0)
    before_last = end_offsets(kafka_bootstrap, dlq, 3)
    code, summary, done = replay(config)
    assert code == 6 and summary["finished"], done.stderr[-3000:]
    assert committed(kafka_bootstrap, group + ".replay", dlq, 3) == before_last

    delivered = [e["properties"]["i"] for e in standin.events()]
    assert set(delivered) == set(range(total)) - bad, "a dead letter was lost"
    duplicates = len(delivered) - len(set(delivered))
    bound = pipeline["max_pending_messages"] + 2 * userflux["max_in_flight"] * userflux["batch_size"]
    assert duplicates <= bound, f"{duplicates} events delivered twice (bound {bound})"
    written_again = {
        int(headers_of(m)["userflux.source.offset"])
        for m in letters(kafka_bootstrap, dlq, 3)
        if "userflux.replay.count" in headers_of(m)
    }
    assert written_again == bad, "a still-invalid dead letter was lost"


def test_a_refused_key_mid_replay_commits_nothing_past_it_and_a_rerun_delivers_the_rest(
    kafka_bootstrap, standin, tmp_path
):
    source, dlq, group, config = one_source(
        kafka_bootstrap, standin.base_url, tmp_path, 2, userflux={"batch_size": 20, "max_in_flight": 2}
    )
    total = 600
    planned = [dead_letter(source, i, json.dumps(value(i)).encode()) for i in range(total)]
    for p in range(2):
        produce_at(kafka_bootstrap, dlq, planned[p::2], partition=p)
    ends = end_offsets(kafka_bootstrap, dlq, 2)
    standin.set_delay(0.05)

    with ConnectorProcess(config, "--output", "json", command="replay") as refused:
        wait_until(lambda: standin.event_count() >= 100, 60, "the replay to be under way")
        standin.fail_always(401)
        assert refused.wait(timeout_s=60) == 3
    assert "refused the write key" in refused.stderr
    summary = json.loads(refused.stdout.splitlines()[-1])
    assert summary["finished"] is False and summary["delivered"] == standin.event_count()
    at_refusal = committed(kafka_bootstrap, group + ".replay", dlq, 2)
    delivered = {e["properties"]["i"] for e in standin.events()}
    for p in range(2):  # every dead letter below the committed offset was delivered
        assert {i for i in range(p, total, 2) if i // 2 < at_refusal[p]} <= delivered
    assert end_offsets(kafka_bootstrap, dlq, 2) == ends, "a refused batch was dead-lettered"

    standin.heal()
    standin.set_delay(0)
    code, summary, done = replay(config)
    assert code == 0, done.stderr[-3000:]
    ids = [e["properties"]["i"] for e in standin.events()]
    assert sorted(ids) == list(range(total)), "lost, or delivered twice after the refusal"
