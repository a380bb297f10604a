"""The dead-letter topic: where a message that can never be delivered is kept.

The original key, value, headers and timestamp are produced unchanged, plus headers
that say why::

    userflux.error.reason      what was wrong, in words
    userflux.error.stage       deserialize | map | deliver
    userflux.source.topic      where the message was read
    userflux.source.partition
    userflux.source.offset

A message only counts as done once the broker acknowledged its dead letter (acks=all);
if producing fails for good the run stops, and the offset is not committed past it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException, Producer

from .config.model import DeadLetterSettings
from .errors import KafkaFatalError
from .logs import RateLimitedLog, redact
from .source import translate_config_error

log = logging.getLogger("connector.dead_letter")

HEADER_REASON = "userflux.error.reason"
HEADER_STAGE = "userflux.error.stage"
HEADER_TOPIC = "userflux.source.topic"
HEADER_PARTITION = "userflux.source.partition"
HEADER_OFFSET = "userflux.source.offset"

# librdkafka consumer-only properties: a producer warns about each, so they are not passed.
CONSUMER_ONLY = {
    "group.id", "group.instance.id", "group.protocol", "group.remote.assignor", "partition.assignment.strategy",
    "session.timeout.ms", "heartbeat.interval.ms", "group.protocol.type", "coordinator.query.interval.ms",
    "max.poll.interval.ms", "enable.auto.commit", "auto.commit.interval.ms", "enable.auto.offset.store",
    "queued.min.messages", "queued.max.messages.kbytes", "fetch.wait.max.ms", "fetch.queue.backoff.ms",
    "fetch.message.max.bytes", "max.partition.fetch.bytes", "fetch.max.bytes", "fetch.min.bytes",
    "fetch.error.backoff.ms", "offset.store.method", "isolation.level", "enable.partition.eof", "check.crcs",
    "auto.offset.reset", "consume.callback.max.messages",
}


def producer_config(kafka: dict[str, str], settings: DeadLetterSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {k: v for k, v in kafka.items() if k not in CONSUMER_ONLY}
    if "client.id" in conf:
        conf["client.id"] += "-dead-letter"
    conf.update({"acks": "all", "enable.idempotence": "true", "linger.ms": "20"})
    conf.update(settings.producer)
    return conf


Done = Callable[[KafkaFatalError | None], None]


class DeadLetterQueue:
    def __init__(self, kafka: dict[str, str], settings: DeadLetterSettings, factory: Callable = Producer):
        self.topic = settings.topic
        self.fatal: KafkaFatalError | None = None
        self.in_flight = 0
        self._errors = RateLimitedLog(log, burst=5, period_s=30)
        conf = producer_config(kafka, settings)
        conf.update(error_cb=self._on_error, logger=logging.getLogger("connector.librdkafka"))
        try:
            self.producer = factory(conf)
        except KafkaException as exc:
            raise translate_config_error(exc, "dead_letter.producer") from None

    def send(self, message: Any, reason: str, stage: str, done: Done) -> None:
        """Produce the message's dead letter; ``done(None)`` once the broker has it."""
        headers = list(message.headers() or [])
        headers += [
            (HEADER_REASON, reason.encode("utf-8")),
            (HEADER_STAGE, stage.encode("utf-8")),
            (HEADER_TOPIC, message.topic().encode("utf-8")),
            (HEADER_PARTITION, str(message.partition()).encode("ascii")),
            (HEADER_OFFSET, str(message.offset()).encode("ascii")),
        ]
        kind, timestamp = message.timestamp()

        def delivered(error: KafkaError | None, _record: Any) -> None:
            self.in_flight -= 1
            if error is None:
                done(None)
            else:
                done(KafkaFatalError(
                    f"could not write to the dead-letter topic {self.topic!r}: {redact(error.str())}; "
                    f"{message.topic()}[{message.partition()}] offset {message.offset()} stays uncommitted"))

        kwargs = {"timestamp": timestamp} if kind != 0 and timestamp and timestamp > 0 else {}
        while True:
            try:
                self.producer.produce(self.topic, key=message.key(), value=message.value(), headers=headers,
                                      on_delivery=delivered, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.1)  # the local queue is full: let deliveries drain
            except KafkaException as exc:
                done(KafkaFatalError(f"could not write to the dead-letter topic {self.topic!r}: {redact(str(exc))}"))
                return
        self.in_flight += 1

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports (they call ``done`` on this thread)."""
        self.producer.poll(timeout_s)

    def flush(self, timeout_s: float) -> int:
        return self.producer.flush(timeout_s)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = KafkaFatalError(f"dead-letter producer failed for good: {redact(error.str())}")
        else:
            self._errors.log(logging.WARNING, "Kafka (dead-letter producer): %s", redact(error.str()))
