"""connector/invalid.py: where an invalid message goes (dead letter, skip, stop, print),
and when it counts as done: skipped at once, dead-lettered only once the broker
acknowledged the dead letter, never when it stops the run."""

from __future__ import annotations

import io
import json
import logging

import pytest

from connector import metrics
from connector.errors import KafkaFatalError, StoppedOnInvalid
from connector.invalid import InvalidRouter
from connector.offsets import PartitionOffsets
from tests.support.fakes import FakeMessage


class DeadLetters:
    """Records dead letters; the test gives each the broker's answer."""

    def __init__(self):
        self.sent: list[tuple[FakeMessage, str, str]] = []
        self.done: list = []

    def send(self, message, reason, stage, done, extra=()):
        self.sent.append((message, reason, stage))
        self.done.append(done)


class Calls:
    def __init__(self):
        self.failures: list = []
        self.progress = 0

    def fail(self, error):
        self.failures.append(error)

    def progressed(self):
        self.progress += 1


def read(n: int = 3) -> tuple[PartitionOffsets, list[FakeMessage]]:
    """Offsets 0..n-1 of events[0], read; 0 done, so the position is 1."""
    part = PartitionOffsets("events", 0)
    messages = [FakeMessage(offset=o, value=b"not json") for o in range(n)]
    for m in messages:
        part.track(m.offset())
    part.done(0)
    return part, messages


def router(action: str, dead_letters=None, out=None) -> tuple[InvalidRouter, Calls]:
    calls = Calls()
    return InvalidRouter(action, dead_letters, calls.fail, calls.progressed, out=out), calls


def count(counter, *labels) -> float:
    return counter.labels(*labels)._value.get()


def test_a_dead_lettered_message_is_done_only_once_the_broker_acknowledged_it():
    dead_letters = DeadLetters()
    part, messages = read()
    route, calls = router("dead_letter", dead_letters)
    before = count(metrics.dead_letters, "events", "map")
    route.route(messages[1], part, "no userId", "map")
    assert dead_letters.sent == [(messages[1], "no userId", "map")]
    assert part.position == 1 and part.pending == 2  # sent, not acknowledged: not done
    assert calls.progress == 0
    dead_letters.done[0](None)  # the broker's ack
    assert part.position == 2 and part.pending == 1
    assert calls.progress == 1 and calls.failures == []
    assert count(metrics.dead_letters, "events", "map") == before + 1


def test_a_dead_letter_the_broker_refused_is_never_done_and_stops_the_run():
    dead_letters = DeadLetters()
    part, messages = read()
    route, calls = router("dead_letter", dead_letters)
    before = count(metrics.dead_letter_failures, "events", "deliver")
    route.route(messages[1], part, "refused by UserFlux", "deliver")
    error = KafkaFatalError("could not write to the dead-letter topic 'dlq'")
    dead_letters.done[0](error)
    assert part.position == 1 and part.pending == 2  # the commit never passes it
    assert calls.failures == [error] and calls.progress == 0
    assert count(metrics.dead_letter_failures, "events", "deliver") == before + 1
    part.done(2)
    assert part.position == 1  # what comes after it waits behind it


def test_skip_is_done_at_once():
    part, messages = read()
    route, calls = router("skip")
    before = count(metrics.messages_invalid, "events", "deserialize", "skip")
    route.route(messages[1], part, "not JSON", "deserialize")
    assert part.position == 2 and calls.failures == []
    assert count(metrics.messages_invalid, "events", "deserialize", "skip") == before + 1


def test_stop_never_marks_it_done_and_stops_the_run_naming_it():
    part, messages = read()
    route, calls = router("stop")
    route.route(messages[1], part, "not JSON", "deserialize")
    [error] = calls.failures
    assert isinstance(error, StoppedOnInvalid) and error.exit_code == 4
    assert "events[0] offset 1 is invalid (deserialize): not JSON" in str(error)
    assert part.position == 1 and part.pending == 2
    part.done(2)
    assert part.position == 1


def test_a_dry_run_prints_it_and_goes_on():
    out = io.StringIO()
    part, messages = read()
    route, calls = router("dead_letter", out=out)  # out: a dry run, whatever on_invalid says
    route.route(messages[1], part, "no userId", "map")
    assert json.loads(out.getvalue()) == {
        "invalid": "no userId",
        "stage": "map",
        "topic": "events",
        "partition": 0,
        "offset": 1,
    }
    assert part.position == 2 and calls.failures == []
    assert count(metrics.messages_invalid, "events", "map", "print") >= 1


@pytest.mark.parametrize("action", ["skip", "dead_letter"])
def test_a_flood_is_logged_at_most_ten_lines_at_a_time(action, caplog):
    dead_letters = DeadLetters()
    part, messages = read(50)
    route, _ = router(action, dead_letters)
    with caplog.at_level(logging.WARNING, logger="connector.pipeline"):
        for m in messages[1:]:
            route.route(m, part, "not JSON", "deserialize")
    assert len(caplog.records) == 10
    assert "events[0] offset 1 (deserialize): not JSON" in caplog.records[0].getMessage()


def test_warn_is_rate_limited_too(caplog):
    route, _ = router("skip")
    with caplog.at_level(logging.WARNING, logger="connector.pipeline"):
        for i in range(30):
            route.warn("ignoring %s[%d] offset %d: already read", "events", 0, i)
    assert [r.getMessage() for r in caplog.records][:2] == [
        "ignoring events[0] offset 0: already read",
        "ignoring events[0] offset 1: already read",
    ]
    assert len(caplog.records) == 10
