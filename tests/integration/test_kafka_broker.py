"""The self-started Kafka broker (tests/support/kafka_broker.py) works end to end."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from tests.support.kafka_broker import BrokerError, KafkaBroker, create_topic


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.mark.kafka
def test_produce_and_consume_with_a_group(kafka_bootstrap: str) -> None:
    topic = _unique("broker-roundtrip")
    create_topic(kafka_bootstrap, topic, partitions=3)

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    delivered, errors = [], []

    def on_delivery(err, msg):
        (errors if err is not None else delivered).append(err or (msg.partition(), msg.value()))

    sent = {f"message-{i}".encode() for i in range(10)}
    for i in range(10):
        producer.produce(
            topic, value=f"message-{i}".encode(), key=str(i).encode(), partition=i % 3, on_delivery=on_delivery
        )
    assert producer.flush(30) == 0
    assert errors == []
    assert {p for p, _ in delivered} == {0, 1, 2}

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": _unique("broker-roundtrip-group"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(received) < 10 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            received.append(msg.value())
        consumer.commit(asynchronous=False)
        committed = consumer.committed(consumer.assignment(), timeout=10)
    finally:
        consumer.close()

    assert sorted(received) == sorted(sent)
    assert sum(tp.offset for tp in committed) == 10


@pytest.mark.kafka
def test_create_topic_is_idempotent(kafka_bootstrap: str) -> None:
    topic = _unique("broker-idempotent")
    create_topic(kafka_bootstrap, topic, partitions=2)
    create_topic(kafka_bootstrap, topic, partitions=2)

    md = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(topic=topic, timeout=10)
    partitions = md.topics[topic].partitions
    assert len(partitions) == 2
    assert all(p.leader >= 0 for p in partitions.values())


def test_bogus_lib_dir_raises_broker_error_fast(tmp_path) -> None:
    broker = KafkaBroker(tmp_path / "work", lib_dir=tmp_path / "no-such-lib")
    started = time.monotonic()
    with pytest.raises(BrokerError, match="no-such-lib"):
        broker.start(timeout_s=30)
    assert time.monotonic() - started < 5
    broker.stop()
    broker.stop()  # idempotent, also on a broker that never ran


def test_broken_jars_raise_broker_error_with_the_java_output(tmp_path) -> None:
    # Looks like a lib dir, but the JVM cannot find Kafka's classes in it.
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "kafka_2.13-0.0.0.jar").write_bytes(b"not a jar")
    broker = KafkaBroker(tmp_path / "work", lib_dir=lib)
    started = time.monotonic()
    with pytest.raises(BrokerError) as info:
        broker.start(timeout_s=30)
    assert time.monotonic() - started < 20
    message = str(info.value)
    assert "formatting the storage directory failed" in message
    assert "kafka.tools.StorageTool" in message  # java's own complaint, from broker.log
    assert not broker.is_running()
