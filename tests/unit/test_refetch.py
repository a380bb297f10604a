"""connector/refetch.py: one message read again at its coordinates, on its own thread;
told apart: found, gone (retention, compaction, a deleted topic), or no answer."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException

from connector.refetch import SourceFetcher, refetch_config
from tests.support.fakes import FakeMessage


class EndOfPartition(FakeMessage):
    def error(self):
        return KafkaError(KafkaError._PARTITION_EOF)


class FakeConsumer:
    """A partition holding offsets ``low``..``high - 1``, except those in ``holes``."""

    def __init__(self, low=10, high=20, holes=(), missing_topic=False, silent=False):
        self.low, self.high, self.holes = low, high, set(holes)
        self.missing_topic, self.silent = missing_topic, silent
        self.position = None
        self.closed = False

    def get_watermark_offsets(self, tp, timeout, cached):
        if self.missing_topic:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        return self.low, self.high

    def assign(self, tps):
        self.position = tps[0].offset

    def unassign(self):
        self.position = None

    def poll(self, timeout):
        if self.silent:
            time.sleep(timeout)
            return None
        while self.position in self.holes:
            self.position += 1
        if self.position >= self.high:
            return EndOfPartition(offset=self.high)
        message = FakeMessage(topic="t", offset=self.position, value=b"original")
        message.error = lambda: None
        self.position += 1
        return message

    def close(self):
        self.closed = True


def fetch(consumer, offset, timeout_s=5.0):
    fetcher = SourceFetcher({"group.id": "g"}, factory=lambda conf: consumer, timeout_s=timeout_s)
    fetcher.submit("token", "t", 0, offset)
    deadline = time.monotonic() + timeout_s + 5
    while time.monotonic() < deadline:
        results = fetcher.results()
        if results:
            fetcher.close()
            assert fetcher.pending == 0
            return results[0]
        time.sleep(0.01)
    raise AssertionError("no answer from the refetch thread")


def test_a_message_still_held_is_read_again():
    found = fetch(FakeConsumer(), 12)
    assert found.token == "token" and found.message.offset() == 12 and found.message.value() == b"original"


def test_what_the_source_no_longer_holds_is_gone_and_says_why():
    assert fetch(FakeConsumer(), 5).gone == "t[0] no longer holds offset 5 (it holds offsets 10 to 19)"
    assert fetch(FakeConsumer(low=0, high=0), 0).gone == "t[0] no longer holds offset 0 (it is empty)"
    assert fetch(FakeConsumer(holes={12}), 12).gone == "t[0] no longer holds offset 12 (compacted away)"
    assert fetch(FakeConsumer(holes={19}), 19).gone == "t[0] no longer holds offset 19 (compacted away)"
    assert fetch(FakeConsumer(missing_topic=True), 1).gone == "the source topic no longer has t[0]"


def test_no_answer_is_a_failure_not_a_loss():
    failed = fetch(FakeConsumer(silent=True), 12, timeout_s=0.3)
    assert failed.message is None and failed.gone is None
    assert "could not read t[0] offset 12 again" in str(failed.failure)


def test_the_reader_never_joins_a_group_it_could_disturb():
    conf = refetch_config({"group.id": "g", "group.instance.id": "pod-1", "client.id": "c"})
    assert conf["group.id"] == "g.refetch" and "group.instance.id" not in conf and conf["client.id"] == "c-refetch"
