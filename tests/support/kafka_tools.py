"""Small Kafka helpers for tests: produce, read back, look at committed offsets."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from tests.support.kafka_broker import create_topic


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_topic(
    bootstrap: str,
    prefix: str,
    partitions: int = 1,
    config: dict[str, str] | None = None,
    client: dict[str, str] | None = None,
) -> str:
    """A new topic named ``prefix-<random>``; ``config`` are topic settings, ``client``
    extra client properties (e.g. SASL/SSL)."""
    name = unique(prefix)
    create_topic(bootstrap, name, partitions=partitions, config=config, admin_config=client)
    return name


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[Any],
    key=None,
    headers=None,
    partition: int | None = None,
    client: dict[str, Any] | None = None,
) -> int:
    """Produce values (dicts/lists are JSON-encoded, bytes sent as they are); wait for acks.

    ``key`` and ``headers`` are a value for every message, or a function of its index;
    ``client`` adds producer properties (e.g. a larger message.max.bytes, SASL/SSL)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, **(client or {})})
    errors: list = []
    count = 0
    for i, value in enumerate(values):
        raw = value if isinstance(value, (bytes, type(None))) else json.dumps(value).encode()
        k = key(i) if callable(key) else key
        h = headers(i) if callable(headers) else headers
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(
            topic, value=raw, key=k, headers=h, on_delivery=lambda err, _m: err and errors.append(err), **kwargs
        )
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0 and not errors, f"produce failed: {errors} ({remaining} not delivered)"
    return count


def committed(
    bootstrap: str, group: str, topic: str, partitions: int = 1, client: dict[str, Any] | None = None
) -> dict[int, int]:
    """The group's committed offset per partition (-1001 when none)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, **(client or {})}
    )
    try:
        parts = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in parts}
    finally:
        consumer.close()


def end_offsets(
    bootstrap: str, topic: str, partitions: int = 1, client: dict[str, Any] | None = None
) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("probe"), **(client or {})})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        consumer.close()


def all_committed(
    bootstrap: str, group: str, topic: str, partitions: int = 1, client: dict[str, Any] | None = None
) -> bool:
    """Every partition committed up to its end (an empty partition has nothing to commit)."""
    done = committed(bootstrap, group, topic, partitions, client)
    ends = end_offsets(bootstrap, topic, partitions, client)
    return all(done[p] == end or (end == 0 and done[p] < 0) for p, end in ends.items())


def read_all(
    bootstrap: str,
    topic: str,
    count: int,
    timeout_s: float = 30,
    partitions: int = 1,
    client: dict[str, Any] | None = None,
) -> list:
    """Read ``count`` messages from the start of the topic (fails the test on timeout)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **(client or {}),
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                found.append(message)
    finally:
        consumer.close()
    assert len(found) >= count, f"read {len(found)} of {count} messages from {topic} within {timeout_s}s"
    return found


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    """Poll ``predicate`` until it returns something true; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")
