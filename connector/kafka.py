"""What every part of the connector that talks to Kafka shares: a partition's ``Key``,
the logger librdkafka's clients log through, the properties only a consumer takes, and
librdkafka's configuration errors in the connector's words.

The consumer (source.py), the dead-letter producer (dead_letter.py), the lag monitor
(lag.py), the group's admin (group_offsets.py) and the replay's reader of source
offsets (refetch.py) each own a librdkafka client; the offsets, the checkpoint and backpressure only
speak of partitions. None of them needs another's module for these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from .errors import ConfigError
from .logs import RepeatLimit, TransientNotices, redact

rdkafka_log = logging.getLogger("connector.librdkafka")  # every librdkafka client logs here
rdkafka_log.addFilter(TransientNotices())
rdkafka_log.addFilter(RepeatLimit())

Key = tuple[str, int]  # (topic, partition)

# librdkafka consumer-only properties: a producer or an admin client warns about each, so they are not passed.
CONSUMER_ONLY = {
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.remote.assignor",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "offset.store.method",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "auto.offset.reset",
    "consume.callback.max.messages",
}


def to_keys(partitions: Iterable[TopicPartition]) -> list[Key]:
    return [(p.topic, p.partition) for p in partitions]


def translate_config_error(exc: KafkaException, section: str = "kafka") -> ConfigError:
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    text = error.str() if error is not None else str(exc)
    return ConfigError(f"{section}: librdkafka refused the configuration: {redact(text)}")


def validate_properties(props: dict[str, str], section: str = "kafka", factory: Callable = Consumer) -> None:
    """Let librdkafka check every property name and value, without joining any group."""
    quiet = logging.getLogger("connector.librdkafka.check")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    try:
        client = factory({**props, "logger": quiet})
    except KafkaException as exc:
        raise translate_config_error(exc, section) from None
    close = getattr(client, "close", None)
    if close is not None:
        close()
