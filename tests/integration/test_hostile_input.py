"""Hostile input interleaved with good events, through the real CLI, the real broker and
the UserFlux stand-in: the good events are delivered, every bad message is dead-lettered
with its reason, the offsets reach the end, and the connector keeps running.

Every good event carries a unique id in its properties; every bad message is told apart
by its offset (the dead letter's userflux.source.offset header).
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import API_KEY
from tests.support.connector_process import ConnectorProcess, base_config, free_port, http_get, leaks, write_config
from tests.support.kafka_tools import all_committed, new_topic, produce, read_all, unique, wait_until

pytestmark = pytest.mark.kafka

MIB = 1024 * 1024
MAPPING = {
    "event": {
        "name": "event",
        "userId": "user.id",
        "anonymousId": "anonymous_id",
        "timestamp": "sent_at",
        "properties": "properties",
    }
}


def good(**changes) -> tuple[bytes, str]:
    """A valid event, its unique id in properties.test_id; ``changes`` replace fields."""
    test_id = uuid.uuid4().hex
    value = {
        "event": "page_view",
        "user": {"id": f"u-{test_id[:6]}"},
        "sent_at": 1_700_000_000,
        "properties": {"test_id": test_id},
    }
    for key, changed in changes.items():
        if key.startswith("properties_"):
            value["properties"][key.removeprefix("properties_")] = changed
        else:
            value[key] = changed
    return json.dumps(value).encode(), test_id


def nested(depth: int) -> bytes:
    return b'{"event": "deep", "user": {"id": 1}, "properties": {"p": ' + b"[" * depth + b"]" * depth + b"}}"


# (value, key, headers, expected): expected is the good event's test id, or (stage, words in the reason).
CASES: list[tuple[bytes | None, bytes | None, list | None, object]] = []


def case(value, expected, key=None, headers=None):
    CASES.append((value, key, headers, expected))


def good_case(key=None, headers=None, **changes) -> str:
    value, test_id = good(**changes)
    case(value, test_id, key, headers)
    return test_id


good_case()
case(b"\xff\xfe\xfa not UTF-8 at all", ("deserialize", "not JSON"))
good_case(key=b"\x00\xff\xfe binary key", headers=[("bin", b"\xff\x00"), ("", b"empty name"), ("none", None)])
case(b'{"event": "x", "user": {"id": 1', ("deserialize", "not JSON"))
case(b"[1, 2, 3]", ("map", "name: no value found"))
case(b'"just a string"', ("map", "name: no value found"))
case(b"null", ("map", "name: no value found"))
case(b"", ("deserialize", "not JSON"))
case(None, ("deserialize", "tombstone"))
NUMBER_ID = good_case(user={"id": 42})  # a number id becomes "42"
HUGE_ID = good_case(user={"id": 10**30})  # a huge integer id, as its digits
case(good(user={"id": True})[0], ("map", "userId: expected a string or a number"))
case(good(user={"id": [1]})[0], ("map", "userId: expected a string or a number"))
case(good(user={"id": {"a": 1}})[0], ("map", "userId: expected a string or a number"))
case(good(user={"id": None})[0], ("map", "no userId or anonymousId"))
case(good(user={"id": "null"})[0], ("map", "no userId or anonymousId"))
good_case(user={"id": None}, anonymous_id="device-1")  # the other id is enough
case(good()[0].replace(b'"sent_at": 1700000000', b'"sent_at": NaN'), ("deserialize", "NaN is not a JSON value"))
case(good()[0].replace(b'"sent_at": 1700000000', b'"sent_at": -Infinity'), ("deserialize", "Infinity"))
case(good()[0].replace(b'"sent_at": 1700000000', b'"sent_at": 1e400'), ("deserialize", "too large for a JSON number"))
case(good()[0].replace(b'"sent_at": 1700000000', b'"sent_at": 0'), ("map", "before 1973-03-03"))
good_case(properties_big=1e308, properties_huge_int=10**100, properties_tiny=5e-324)
case(
    good(properties_digits=0)[0].replace(b'"digits": 0', b'"digits": ' + b"7" * 5000),
    ("deserialize", "a number has too many digits"),
)
case(good(event="Page Viewed")[0], ("map", "contains white space"))
case(good(event="null")[0], ("map", "name: no value found"))
case(good(event="x" * 2000 + " y")[0], ("map", "contains white space"))  # a long value, quoted shortened
case(good(properties_text="\ud800")[0], ("deserialize", "lone UTF-16 surrogate"))  # json.dumps writes "\\ud800"
good_case(properties_odd={"": 1, " ": 2, "a.b": 3, "\u0000": 4, "ü": {"[": []}})
good_case(properties_p=json.loads(b"[" * 60 + b"]" * 60))  # deep, within max_nesting_depth (64)
case(nested(100), ("deserialize", "max_nesting_depth (64)"))
case(nested(5000), ("deserialize", "max_nesting_depth (64)"))
good_case(properties_blob="b" * (MIB - 200_000))  # just under max_message_bytes
case(good(properties_blob="b" * (MIB + MIB // 2))[0], ("deserialize", "over limits.max_message_bytes"))
good_case(key=b"k" * 100_000, headers=[(f"h{i}", b"v" * 100) for i in range(50)])
good_case()


def test_hostile_input_is_dead_lettered_and_good_events_are_delivered(kafka_bootstrap, standin, tmp_path):
    # The source topic takes values of a few MiB; the dead-letter topic keeps the broker's
    # default (about 1 MiB), so the largest dead letter is refused there and kept slim.
    topic = new_topic(kafka_bootstrap, "hostile", config={"max.message.bytes": str(8 * MIB)})
    dlq = new_topic(kafka_bootstrap, "hostile-dlq")
    group = unique("group")
    port = free_port()
    config = write_config(
        tmp_path / "c.yaml",
        base_config(
            kafka_bootstrap,
            standin.base_url,
            API_KEY,
            group,
            [{"topics": [topic], **MAPPING}],
            on_invalid="dead_letter",
            metrics={"enabled": True, "port": port},
            dead_letter={"topic": dlq, "producer": {"message.max.bytes": str(8 * MIB)}},
        ),
    )
    produce(
        kafka_bootstrap,
        topic,
        [value for value, _, _, _ in CASES],
        key=lambda i: CASES[i][1],
        headers=lambda i: CASES[i][2],
        client={"message.max.bytes": str(10 * MIB)},
    )
    good_ids = {expected for _, _, _, expected in CASES if isinstance(expected, str)}
    bad = {offset: expected for offset, (_, _, _, expected) in enumerate(CASES) if isinstance(expected, tuple)}

    with ConnectorProcess(config) as connector:
        wait_until(
            lambda: good_ids <= {e["properties"]["test_id"] for e in standin.events()},
            90,
            "every good event accepted by the stand-in",
        )
        letters = read_all(kafka_bootstrap, dlq, len(bad), timeout_s=60)
        wait_until(lambda: all_committed(kafka_bootstrap, group, topic), 30, "offsets committed to the end")
        assert connector.running(), f"the connector stopped:\n{connector.stderr[-3000:]}"
        status, scrape = http_get(f"http://127.0.0.1:{port}/metrics")
        assert connector.stop() == 0

    by_offset = {}
    for letter in letters:
        headers = dict(letter.headers())
        assert headers["userflux.source.topic"].decode() == topic
        by_offset[int(headers["userflux.source.offset"])] = (letter, headers)
    assert sorted(by_offset) == sorted(bad), "a bad message is missing from the dead-letter topic, or one too many"
    for offset, (stage, words) in bad.items():
        letter, headers = by_offset[offset]
        reason = headers["userflux.error.reason"].decode()
        assert headers["userflux.error.stage"].decode() == stage, (offset, reason)
        assert words in reason, (offset, reason)
        assert len(reason) <= 1100, (offset, len(reason))
        original = CASES[offset][0]
        if len(original or b"") > MIB:  # refused by the dead-letter topic: kept without its value
            assert letter.value() in (b"", None)
            assert b"too large" in headers["userflux.error.dropped"]
        else:
            assert letter.value() == original, offset

    accepted = [e for e in standin.events()]
    assert {e["properties"]["test_id"] for e in accepted} == good_ids  # and nothing else
    by_id = {e["properties"]["test_id"]: e for e in accepted}
    assert by_id[NUMBER_ID]["userId"] == "42"
    assert by_id[HUGE_ID]["userId"] == str(10**30)

    output = connector.stderr + connector.stdout
    assert status == 200 and leaks([API_KEY], output=output, metrics=scrape) == []
    assert max(len(line) for line in output.splitlines()) < 5000, "a log line carries a whole message"
    assert output.count("dead-lettering ") <= 10, "invalid messages flooded the log"
    assert "Traceback" not in output
    assert not [line for line in output.splitlines() if "WARNING" in line and "Coordinator load in progress" in line]
