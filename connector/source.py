"""The consume stage: a Kafka consumer group member, and the only place that talks to
librdkafka's consumer.

Offsets are never committed automatically: the pipeline commits what is done (see
checkpoint.py). Rebalances use the cooperative protocol so a replica joining or leaving
only moves the partitions that change owner. librdkafka errors become KafkaFatalError
(fatal) or a log line (librdkafka recovers by itself).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from .errors import KafkaFatalError
from .kafka import Key, rdkafka_log, to_keys, translate_config_error
from .logs import RateLimitedLog, redact

log = logging.getLogger("connector.source")


class RebalanceListener(Protocol):
    def on_assign(self, partitions: list[Key]) -> None: ...
    def on_revoke(self, partitions: list[Key]) -> None: ...
    def on_lost(self, partitions: list[Key]) -> None: ...


def consumer_config(props: dict[str, str]) -> dict[str, Any]:
    conf: dict[str, Any] = dict(props)
    conf["enable.auto.commit"] = "false"
    conf["enable.auto.offset.store"] = "false"
    # KIP-848 (group.protocol=consumer) is incremental by design and refuses this key;
    # the classic protocol gets cooperative-sticky unless the user chose otherwise.
    if conf.get("group.protocol", "classic") == "classic":
        conf.setdefault("partition.assignment.strategy", "cooperative-sticky")
    conf.setdefault("client.id", f"userflux-connector-{socket.gethostname()}")
    # librdkafka prefetches up to 64 MB by default and fetches up to 50 MB at a time,
    # while at most max_pending_messages wait here anyway: smaller figures keep memory
    # bounded (peak RSS 160 -> 124 MB on a 1M backlog) at the same throughput, provided a
    # full queue is refilled promptly (its default backoff is a whole second). A message
    # larger than a fetch limit is still fetched, alone.
    conf.setdefault("queued.max.messages.kbytes", "8192")
    conf.setdefault("fetch.queue.backoff.ms", "20")
    conf.setdefault("fetch.max.bytes", str(4 * 1024 * 1024))
    conf.setdefault("max.partition.fetch.bytes", str(512 * 1024))
    return conf


class KafkaSource:
    def __init__(
        self,
        props: dict[str, str],
        listener: RebalanceListener,
        on_commit: Callable[[KafkaError | None, list[TopicPartition]], None] | None = None,
    ):
        self.listener = listener
        self.fatal: KafkaFatalError | None = None
        self._on_commit_cb = on_commit
        self._errors = RateLimitedLog(log, burst=5, period_s=30)
        self._unknown_topics: set[str] = set()
        # Told (topic, partition, offset) when a partition is read to its end; only with
        # enable.partition.eof (replay: a bound whose last offsets hold no message).
        self.on_eof: Callable[[str, int, int], None] | None = None
        conf = consumer_config(props)
        conf.update(error_cb=self._on_error, on_commit=self._on_commit, logger=rdkafka_log)
        try:
            self.consumer = Consumer(conf)
        except KafkaException as exc:
            raise translate_config_error(exc) from None

    def subscribe(self, topics: list[str]) -> None:
        self.consumer.subscribe(
            topics,
            on_assign=lambda c, parts: self.listener.on_assign(to_keys(parts)),
            on_revoke=lambda c, parts: self.listener.on_revoke(to_keys(parts)),
            on_lost=lambda c, parts: self.listener.on_lost(to_keys(parts)),
        )

    def consume(self, max_messages: int, timeout_s: float) -> list[Any]:
        """Messages read; rebalance callbacks run inside this call, on this thread."""
        try:
            messages = self.consumer.consume(max_messages, timeout_s)
        except KafkaException as exc:
            raise KafkaFatalError(f"Kafka consumer failed: {redact(str(exc))}") from None
        good = messages
        if any(m.error() is not None for m in messages):
            good = []
            for message in messages:
                error = message.error()
                if error is None:
                    good.append(message)
                else:
                    self._message_error(message, error)
        if self.fatal is not None:
            raise self.fatal
        return good

    def _message_error(self, message: Any, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = KafkaFatalError(f"Kafka consumer failed for good: {redact(error.str())}")
        elif error.code() == KafkaError._PARTITION_EOF:
            if self.on_eof is not None:
                self.on_eof(message.topic(), message.partition(), message.offset())
        elif error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            topic = message.topic() or "?"
            if topic not in self._unknown_topics:
                self._unknown_topics.add(topic)
                log.warning("topic %r does not exist (yet); the connector reads it once it is created", topic)
        else:
            self._errors.log(logging.WARNING, "Kafka: %s", redact(error.str()))

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = KafkaFatalError(f"Kafka client failed for good: {redact(error.str())}")
            return
        level = logging.ERROR if error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL) else logging.WARNING
        self._errors.log(level, "Kafka: %s", redact(error.str()))

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if self._on_commit_cb is not None:
            self._on_commit_cb(error, partitions)

    def commit(self, positions: list[tuple[str, int, int]], asynchronous: bool) -> bool:
        """Commit ``(topic, partition, next offset)``; False (logged) if Kafka refused."""
        offsets = [TopicPartition(t, p, o) for t, p, o in positions]
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError._NO_OFFSET:
                return True
            log.warning("offset commit failed (the next commit retries it): %s", redact(str(exc)))
            return False
        return True

    def topic_exists(self, topic: str, timeout_s: float = 10.0) -> bool | None:
        """Whether the cluster has this topic; None when the cluster did not answer."""
        try:
            meta = self.consumer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            log.warning("could not look up topic %r: %s", topic, redact(str(exc)))
            return None
        found = meta.topics.get(topic)
        return found is not None and found.error is None

    def assignment(self) -> set[Key]:
        return set(to_keys(self.consumer.assignment()))

    def pause(self, keys: Iterable[Key]) -> None:
        parts = [TopicPartition(t, p) for t, p in keys]
        if parts:
            self.consumer.pause(parts)

    def resume(self, keys: Iterable[Key]) -> None:
        parts = [TopicPartition(t, p) for t, p in keys]
        if parts:
            self.consumer.resume(parts)

    def close(self) -> None:
        """Leave the group (the revoke callback runs once more, inside this call)."""
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the Kafka consumer: %s", redact(str(exc)))
