"""The dead-letter topic: where a message that can never be delivered is kept.

The original key, value, headers and timestamp are produced unchanged, plus headers
that say why::

    userflux.error.reason      what was wrong, in words
    userflux.error.stage       deserialize | map | deliver
    userflux.source.topic      where the message was read
    userflux.source.partition
    userflux.source.offset
    userflux.replay.count      how many replays found it still invalid (replay only)

A message only counts as done once the broker acknowledged its dead letter (acks=all);
if producing fails for good the run stops, and the offset is not committed past it.

A dead letter too large for the producer or the topic would stop the run on every
restart, on the same message. Instead it is produced again without the original value
(and without a large key or large headers), with ``userflux.error.dropped`` saying what
was left out and how big it was; the source coordinates still point at the original.

``unwrap`` reads the format back (for ``replay``): the original message, as the mapping
sees it, with the headers above taken off and kept apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from .config.model import DeadLetterSettings
from .errors import KafkaFatalError
from .kafka import CONSUMER_ONLY, rdkafka_log, translate_config_error
from .logs import RateLimitedLog, redact

log = logging.getLogger("connector.dead_letter")

HEADER_REASON = "userflux.error.reason"
HEADER_STAGE = "userflux.error.stage"
HEADER_TOPIC = "userflux.source.topic"
HEADER_PARTITION = "userflux.source.partition"
HEADER_OFFSET = "userflux.source.offset"
HEADER_DROPPED = "userflux.error.dropped"
HEADER_REPLAYS = "userflux.replay.count"
# The connector's own headers: what unwrap() takes off, so a replayed message's mapping
# sees the original headers and a dead letter written again does not carry them twice.
OURS = frozenset(
    {HEADER_REASON, HEADER_STAGE, HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET, HEADER_DROPPED, HEADER_REPLAYS}
)

# What a slimmed dead letter still carries of the original, at most.
KEEP_KEY_BYTES = 1024
KEEP_HEADER_BYTES = 16 * 1024
MAX_REASON_CHARS = 2000
_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}
# librdkafka recovers from these by itself; they are not worth a warning.
_TRANSIENT = {KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR}


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
        conf.update(error_cb=self._on_error, logger=rdkafka_log)
        try:
            self.producer = factory(conf)
        except KafkaException as exc:
            raise translate_config_error(exc, "dead_letter.producer") from None

    def send(self, message: Any, reason: str, stage: str, done: Done, extra: Sequence[tuple[str, bytes]] = ()) -> None:
        """Produce the message's dead letter; ``done(None)`` once the broker has it.
        ``extra``: more of the connector's own headers (a replay's count)."""
        ours = [
            (HEADER_REASON, reason[:MAX_REASON_CHARS].encode("utf-8", "replace")),
            (HEADER_STAGE, stage.encode("utf-8")),
            (HEADER_TOPIC, message.topic().encode("utf-8")),
            (HEADER_PARTITION, str(message.partition()).encode("ascii")),
            (HEADER_OFFSET, str(message.offset()).encode("ascii")),
            *extra,
        ]
        original = list(message.headers() or [])
        self._produce(message, message.key(), message.value(), original + ours, ours, done, slimmed=False)

    def resend(self, letter: Any, done: Done) -> None:
        """Produce a dead letter again as it is (key, value, headers, timestamp): one a
        replay's filters left out, kept for a later replay. It fitted before, so one too
        large now is a failure, not slimmed."""
        headers = list(letter.headers() or [])
        self._produce(letter, letter.key(), letter.value(), headers, [], done, slimmed=True)

    def _produce(
        self, message: Any, key: Any, value: Any, headers: list, ours: list, done: Done, slimmed: bool
    ) -> None:
        where = f"{message.topic()}[{message.partition()}] offset {message.offset()}"

        def failed(text: str) -> None:
            done(
                KafkaFatalError(
                    f"could not write to the dead-letter topic {self.topic!r}: {redact(text)}; "
                    f"{where} stays uncommitted"
                )
            )

        def delivered(error: KafkaError | None, _record: Any) -> None:
            self.in_flight -= 1
            if error is None:
                done(None)
            elif error.code() in _TOO_LARGE and not slimmed:
                self._send_slimmed(message, ours, done, error.str())
            else:
                failed(error.str())

        kind, timestamp = message.timestamp()
        kwargs = {"timestamp": timestamp} if kind != 0 and timestamp and timestamp > 0 else {}
        while True:
            try:
                self.producer.produce(
                    self.topic, key=key, value=value, headers=headers, on_delivery=delivered, **kwargs
                )
                break
            except BufferError:
                self.producer.poll(0.1)  # the local queue is full: let deliveries drain
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is not None and error.code() in _TOO_LARGE and not slimmed:
                    self._send_slimmed(message, ours, done, error.str())
                else:
                    failed(str(exc))
                return
        self.in_flight += 1

    def _send_slimmed(self, message: Any, ours: list, done: Done, why: str) -> None:
        """The dead letter without what made it too large; a header says what was left out."""
        key, value = message.key(), message.value()
        original = list(message.headers() or [])
        dropped = [f"the value ({len(value or b'')} bytes)"]
        if key is not None and len(key) > KEEP_KEY_BYTES:
            dropped.append(f"the key ({len(key)} bytes)")
            key = None
        header_bytes = sum(len(k) + len(v or b"") for k, v in original)
        if header_bytes > KEEP_HEADER_BYTES:
            dropped.append(f"the original headers ({len(original)}, {header_bytes} bytes)")
            original = []
        note = f"{' and '.join(dropped)}: the dead letter was too large ({why}); read the original at the source offset"
        self._errors.log(
            logging.WARNING,
            "dead letter for %s[%d] offset %d: %s",
            message.topic(),
            message.partition(),
            message.offset(),
            note,
        )
        self._produce(
            message, key, b"", original + ours + [(HEADER_DROPPED, note.encode("utf-8"))], ours, done, slimmed=True
        )

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports (they call ``done`` on this thread)."""
        self.producer.poll(timeout_s)

    def flush(self, timeout_s: float) -> int:
        return self.producer.flush(timeout_s)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = KafkaFatalError(f"dead-letter producer failed for good: {redact(error.str())}")
        elif error.code() in _TRANSIENT:
            log.debug("Kafka (dead-letter producer): %s", redact(error.str()))
        else:
            self._errors.log(logging.WARNING, "Kafka (dead-letter producer): %s", redact(error.str()))


class OriginalMessage:
    """The message a dead letter keeps, as the mapping sees a Kafka message: its source
    topic, partition and offset, key, value, headers (without the connector's own) and
    timestamp; and what the dead letter says about it."""

    __slots__ = (
        "_topic",
        "_partition",
        "_offset",
        "_key",
        "_value",
        "_headers",
        "_timestamp",
        "reason",
        "stage",
        "dropped",
        "replays",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
        timestamp: tuple[int, int],
        reason: str = "",
        stage: str = "",
        dropped: str | None = None,
        replays: int = 0,
    ):
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers, self._timestamp = key, value, headers, timestamp
        self.reason = reason
        self.stage = stage
        self.dropped = dropped  # what was left out of the dead letter for size, if anything
        self.replays = replays

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def read_again(self, message: Any) -> OriginalMessage:
        """The same, with key, value, headers and timestamp as ``message`` (the original,
        read again at its source offset) has them."""
        return OriginalMessage(
            self._topic,
            self._partition,
            self._offset,
            message.key(),
            message.value(),
            list(message.headers() or []),
            message.timestamp(),
            self.reason,
            self.stage,
            None,
            self.replays,
        )

    def __repr__(self) -> str:
        return f"<original {self._topic}[{self._partition}]@{self._offset}>"


def unwrap(letter: Any) -> OriginalMessage | None:
    """The original message a dead letter keeps; None when the letter is not one of the
    connector's (no readable source coordinates)."""
    ours: dict[str, bytes | None] = {}
    original: list[tuple[str, bytes | None]] = []
    for name, value in letter.headers() or []:
        if name in OURS:
            ours[name] = value  # written once; the last one wins
        else:
            original.append((name, value))
    try:
        topic = _text(ours.get(HEADER_TOPIC))
        partition = int(_text(ours.get(HEADER_PARTITION)))
        offset = int(_text(ours.get(HEADER_OFFSET)))
    except ValueError:
        return None
    if not topic or partition < 0 or offset < 0:
        return None
    try:
        replays = max(0, int(_text(ours.get(HEADER_REPLAYS)) or 0))
    except ValueError:
        replays = 0
    dropped = ours.get(HEADER_DROPPED)
    return OriginalMessage(
        topic,
        partition,
        offset,
        letter.key(),
        letter.value(),
        original,
        letter.timestamp(),
        _text(ours.get(HEADER_REASON)),
        _text(ours.get(HEADER_STAGE)),
        None if dropped is None else _text(dropped),
        replays,
    )


def _text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", "replace")
