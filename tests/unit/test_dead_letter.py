"""Dead letters: what is produced, and what happens when one is too large to produce."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException

from connector.config.model import DeadLetterSettings
from connector.dead_letter import HEADER_DROPPED, HEADER_REPLAYS, DeadLetterQueue, unwrap
from connector.errors import KafkaFatalError
from tests.support.fakes import FakeMessage


class FakeProducer:
    """Takes dead letters like librdkafka: refuses a value over ``local_max`` at once,
    and over ``broker_max`` in the delivery report (as a topic's max.message.bytes does)."""

    def __init__(self, local_max: int = 10_000, broker_max: int = 10_000):
        self.local_max, self.broker_max = local_max, broker_max
        self.produced: list[dict] = []
        self._reports: list = []

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None, **kwargs):
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers or [])
        if size > self.local_max:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        letter = {"topic": topic, "key": key, "value": value, "headers": dict(headers or []), **kwargs}
        error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if size > self.broker_max else None
        if error is None:
            self.produced.append(letter)
        self._reports.append((on_delivery, error))

    def poll(self, timeout=0):
        reports, self._reports = self._reports, []
        for callback, error in reports:
            callback(error, None)
        return len(reports)

    def flush(self, timeout=0):
        return self.poll()


def queue(producer: FakeProducer) -> DeadLetterQueue:
    return DeadLetterQueue({"bootstrap.servers": "x"}, DeadLetterSettings("dlq"), factory=lambda conf: producer)


def send(dlq: DeadLetterQueue, message: FakeMessage, reason: str = "not JSON") -> list:
    outcomes: list = []
    dlq.send(message, reason, "deserialize", outcomes.append)
    dlq.poll()
    dlq.poll()  # a slimmed dead letter is produced from the first report
    return outcomes


MESSAGE = dict(topic="events", partition=2, offset=41, key=b"k", headers=[("trace", b"t1")])


def test_a_dead_letter_keeps_the_original_and_says_why():
    producer = FakeProducer()
    dlq = queue(producer)
    assert send(dlq, FakeMessage(value=b"{oops", **MESSAGE)) == [None]
    [letter] = producer.produced
    assert letter["key"] == b"k" and letter["value"] == b"{oops" and letter["timestamp"] > 0
    assert letter["headers"] == {
        "trace": b"t1",
        "userflux.error.reason": b"not JSON",
        "userflux.error.stage": b"deserialize",
        "userflux.source.topic": b"events",
        "userflux.source.partition": b"2",
        "userflux.source.offset": b"41",
    }
    assert dlq.in_flight == 0


@pytest.mark.parametrize("where", ["local", "broker"])
def test_a_dead_letter_too_large_is_sent_without_its_value(where, caplog):
    producer = FakeProducer(local_max=10_000 if where == "local" else 10**9, broker_max=10_000)
    dlq = queue(producer)
    with caplog.at_level(logging.WARNING):
        assert send(dlq, FakeMessage(value=b"x" * 20_000, **MESSAGE)) == [None]
    [letter] = producer.produced
    assert letter["value"] == b"" and letter["key"] == b"k"
    headers = letter["headers"]
    assert headers["trace"] == b"t1" and headers["userflux.source.offset"] == b"41"
    assert headers["userflux.error.reason"] == b"not JSON"
    dropped = headers[HEADER_DROPPED].decode()
    assert dropped.startswith("the value (20000 bytes): the dead letter was too large")
    assert "read the original at the source offset" in dropped
    assert "events[2] offset 41" in caplog.text
    assert dlq.in_flight == 0


def test_a_huge_key_and_huge_headers_are_dropped_too():
    producer = FakeProducer(local_max=50_000, broker_max=50_000)
    message = FakeMessage(topic="events", offset=7, value=b"v" * 10, key=b"k" * 5000, headers=[("h", b"x" * 60_000)])
    assert send(queue(producer), message) == [None]
    [letter] = producer.produced
    assert letter["key"] is None and "h" not in letter["headers"]
    dropped = letter["headers"][HEADER_DROPPED].decode()
    assert "the key (5000 bytes)" in dropped and "the original headers (1, 60001 bytes)" in dropped


def test_a_slimmed_dead_letter_still_refused_stops_the_run():
    producer = FakeProducer(local_max=10**9, broker_max=100)  # the topic takes nearly nothing
    [outcome] = send(queue(producer), FakeMessage(value=b"x" * 200, **MESSAGE))
    assert isinstance(outcome, KafkaFatalError)
    assert "events[2] offset 41 stays uncommitted" in str(outcome)
    assert producer.produced == []


def test_a_long_reason_is_cut_in_the_header():
    producer = FakeProducer(local_max=10**9, broker_max=10**9)
    send(queue(producer), FakeMessage(value=b"v", **MESSAGE), reason="ü" * 10_000)
    assert producer.produced[0]["headers"]["userflux.error.reason"].decode("utf-8") == "ü" * 2000


def test_a_replay_s_dead_letter_carries_its_count_and_reads_back_as_the_original():
    producer = FakeProducer()
    dlq = queue(producer)
    outcomes: list = []
    original = FakeMessage(value=b"{oops", **MESSAGE)
    dlq.send(original, "not JSON", "deserialize", outcomes.append, extra=[(HEADER_REPLAYS, b"2")])
    dlq.poll()
    assert outcomes == [None]
    [written] = producer.produced
    assert written["headers"][HEADER_REPLAYS] == b"2"
    letter = FakeMessage(
        topic="dlq", value=written["value"], key=written["key"], headers=list(written["headers"].items())
    )
    back = unwrap(letter)
    assert back is not None and (back.topic(), back.partition(), back.offset()) == ("events", 2, 41)
    assert back.headers() == [("trace", b"t1")] and back.replays == 2 and back.stage == "deserialize"


def test_a_kept_dead_letter_is_written_again_exactly_as_it_was():
    producer = FakeProducer()
    dlq = queue(producer)
    outcomes: list = []
    headers = [("trace", b"t1"), ("userflux.error.stage", b"map"), ("userflux.source.offset", b"3")]
    kept = FakeMessage(topic="dlq", offset=9, value=b"{}", key=b"k", headers=headers, timestamp=(1, 1234))
    dlq.resend(kept, outcomes.append)
    dlq.poll()
    assert outcomes == [None]
    assert producer.produced == [
        {"topic": "dlq", "key": b"k", "value": b"{}", "headers": dict(headers), "timestamp": 1234}
    ]


def test_a_kept_dead_letter_too_large_now_fails_rather_than_losing_its_value():
    producer = FakeProducer(local_max=10, broker_max=10)
    outcomes: list = []
    queue(producer).resend(FakeMessage(topic="dlq", value=b"x" * 100, **{"headers": []}), outcomes.append)
    [outcome] = outcomes
    assert isinstance(outcome, KafkaFatalError) and producer.produced == []
