"""Test doubles shared by the unit tests: a clock, a Kafka message, and events and Items
built on it."""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable
from typing import Any

from connector.batcher import Item
from connector.offsets import PartitionOffsets

TS = 1690111645853  # the UserFlux docs' example timestamp, epoch milliseconds
KAFKA_TS = 1_700_000_000_000  # the default Kafka timestamp of a FakeMessage


class FakeClock:
    """Stands in for ``time.monotonic`` (every ``clock=`` of the connector): time passes
    only when the test says so, so timings are exact and nothing waits in real time.

    Call it to read the time. ``now`` may be set, or moved on with ``advance``;
    ``call_later`` schedules an action for a moment to come, run (in time order, with
    ``now`` at its moment) when time gets there. ``advance_until`` lets time pass until a
    condition holds, as a wait with a timeout does.
    """

    def __init__(self, now: float = 0.0) -> None:
        self._now = float(now)
        self._due: list[tuple[float, int, Callable[[], object]]] = []  # (when, order, action)
        self._order = itertools.count()

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        return self._now

    @now.setter
    def now(self, value: float) -> None:
        self.advance(value - self._now)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, running what was scheduled meanwhile."""
        assert seconds >= 0, f"time runs forward only (asked to go back {-seconds}s)"
        until = self._now + seconds
        while self._due and self._due[0][0] <= until:
            when, _, action = heapq.heappop(self._due)
            self._now = max(self._now, when)
            action()
        self._now = until

    def advance_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Let time pass until ``condition()`` holds (checked after every scheduled action)
        or ``timeout`` seconds went by; whether it holds."""
        until = self._now + timeout
        while not condition():
            if not self._due or self._due[0][0] > until:
                self._now = until
                return condition()
            when, _, action = heapq.heappop(self._due)
            self._now = max(self._now, when)
            action()
        return True

    def call_later(self, delay: float, action: Callable[[], object]) -> None:
        heapq.heappush(self._due, (self._now + delay, next(self._order), action))

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` on this clock."""
        self.advance(seconds)


class FakeMessage:
    """Stands in for confluent_kafka.Message: the accessors the connector reads.

    ``timestamp`` is ``(type, ms)`` as confluent_kafka returns it: type 1 is CreateTime,
    2 LogAppendTime, and 0 means not available (the broker gave none).
    """

    def __init__(
        self,
        *,
        topic: str = "events",
        partition: int = 0,
        offset: int = 0,
        value: bytes | None = b"{}",
        key: bytes | str | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
        timestamp: tuple[int, int | None] = (1, KAFKA_TS),
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._key, self._headers, self._timestamp = value, key, headers, timestamp

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def key(self):
        return self._key

    def value(self):
        return self._value

    def headers(self):
        return self._headers

    def timestamp(self):
        return self._timestamp

    def __repr__(self) -> str:
        return f"FakeMessage({self._topic}[{self._partition}]@{self._offset})"


def sample_event(i: int) -> dict:
    """A valid UserFlux event, told apart by ``i``: name evt_<i>, userId u<i>."""
    return {"name": f"evt_{i}", "userId": f"u{i}", "timestamp": TS + i, "properties": {"i": i}}


def tracked_item(part: PartitionOffsets, offset: int, event: dict) -> Item:
    """An Item for ``event``, read at ``offset`` of ``part`` and tracked there (as the
    pipeline does), its message carrying the event as its JSON value."""
    assert part.track(offset), f"offset {offset} of {part.topic}[{part.partition}] already tracked"
    message = FakeMessage(topic=part.topic, partition=part.partition, offset=offset, value=json.dumps(event).encode())
    return Item(event, message, part)


def make_items(n: int, part: PartitionOffsets | None = None, first: int = 0) -> list[Item]:
    """``n`` tracked Items of sample events at offsets ``first``.. of ``part`` (by default
    a new events[0])."""
    part = part or PartitionOffsets("events", 0)
    return [tracked_item(part, offset, sample_event(offset)) for offset in range(first, first + n)]


def apply_mapping(mapping: Any, value: Any, message: Any) -> dict | None:
    """What mapper.py's map() does with a decoded value: None when the mapping's where:
    skips the message, else the event its builder makes (or InvalidMessage)."""
    if mapping.where is not None and not mapping.where.keeps(value, message):
        return None
    return mapping.builder.build(value, message)
