"""connector/checkpoint.py: commit how far every owned partition is done, and only that."""

from __future__ import annotations

from confluent_kafka import KafkaError, TopicPartition

from connector.checkpoint import Checkpoint
from connector.offsets import OffsetTracker
from tests.support.fakes import FakeClock


class FakeSource:
    """Records commit calls; ``ok`` is what the next commits answer."""

    def __init__(self):
        self.calls: list[tuple[list[tuple[str, int, int]], bool]] = []
        self.ok = True

    def commit(self, positions, asynchronous):
        self.calls.append((sorted(positions), asynchronous))
        return self.ok


def tracker_with(**done_upto: int) -> OffsetTracker:
    """Partitions "topic-N" (topic "t", partition N) with offsets 0..9 read, 0..k-1 done."""
    tracker = OffsetTracker()
    for name, upto in done_upto.items():
        part = tracker.assign("t", int(name.split("_")[1]))
        for offset in range(10):
            part.track(offset)
        for offset in range(upto):
            part.done(offset)
    return tracker


def test_commits_every_owned_partition_that_has_a_position():
    tracker = tracker_with(p_0=3, p_1=0, p_2=10)  # p_1: nothing done yet, no position
    source = FakeSource()
    checkpoint = Checkpoint(source, tracker, interval_s=5)
    assert checkpoint.commit() == 2
    assert source.calls == [([("t", 0, 3), ("t", 2, 10)], False)]


def test_revoked_partitions_are_not_committed():
    tracker = tracker_with(p_0=3, p_1=4)
    source = FakeSource()
    checkpoint = Checkpoint(source, tracker, interval_s=5)
    tracker.release([("t", 1)])
    checkpoint.commit()
    assert source.calls == [([("t", 0, 3)], False)]


def test_only_positions_that_moved_are_committed_again():
    tracker = tracker_with(p_0=3, p_1=4)
    source = FakeSource()
    checkpoint = Checkpoint(source, tracker, interval_s=5)
    checkpoint.commit()
    assert checkpoint.commit() == 0  # nothing moved
    assert len(source.calls) == 1
    tracker.partitions[("t", 1)].done(4)
    assert checkpoint.commit() == 1
    assert source.calls[-1] == ([("t", 1, 5)], False)


def test_keys_limit_the_commit_to_those_partitions():
    tracker = tracker_with(p_0=3, p_1=4)
    source = FakeSource()
    checkpoint = Checkpoint(source, tracker, interval_s=5)
    assert checkpoint.commit(keys=[("t", 1), ("t", 9)]) == 1  # ("t", 9) is not owned: ignored
    assert source.calls == [([("t", 1, 4)], False)]


def test_synchronous_and_asynchronous_flag_is_passed_through():
    tracker = tracker_with(p_0=1)
    source = FakeSource()
    checkpoint = Checkpoint(source, tracker, interval_s=5)
    checkpoint.commit(asynchronous=True)
    tracker.partitions[("t", 0)].done(1)
    checkpoint.commit()
    assert [asynchronous for _, asynchronous in source.calls] == [True, False]


def test_maybe_commit_waits_for_the_interval_and_commits_asynchronously():
    clock = FakeClock(0.0)
    tracker = tracker_with(p_0=2)
    source = FakeSource()
    checkpoint = Checkpoint(source, tracker, interval_s=5, clock=clock)
    clock.now = 4.9
    checkpoint.maybe_commit()
    assert source.calls == []
    clock.now = 5.0
    checkpoint.maybe_commit()
    assert source.calls == [([("t", 0, 2)], True)]
    tracker.partitions[("t", 0)].done(2)
    clock.now = 9.9  # the interval restarts at each commit
    checkpoint.maybe_commit()
    assert len(source.calls) == 1
    clock.now = 10.0
    checkpoint.maybe_commit()
    assert source.calls[-1] == ([("t", 0, 3)], True)


def test_a_failed_commit_is_asked_again_next_time():
    tracker = tracker_with(p_0=3)
    source = FakeSource()
    checkpoint = Checkpoint(source, tracker, interval_s=5)
    source.ok = False
    assert checkpoint.commit() == 0
    source.ok = True
    assert checkpoint.commit() == 1  # same position, asked again
    assert source.calls == [([("t", 0, 3)], False)] * 2
    assert checkpoint.commit() == 0
    assert len(source.calls) == 2


def test_an_async_commit_error_makes_the_next_commit_ask_again():
    tracker = tracker_with(p_0=3, p_1=4)
    source = FakeSource()
    checkpoint = Checkpoint(source, tracker, interval_s=5)
    checkpoint.commit(asynchronous=True)
    checkpoint.on_commit_result(KafkaError(KafkaError.REQUEST_TIMED_OUT, "timed out"), [TopicPartition("t", 1, 4)])
    assert checkpoint.commit(asynchronous=True) == 1
    assert source.calls[-1] == ([("t", 1, 4)], True)  # only the failed partition


def test_a_successful_async_result_changes_nothing():
    tracker = tracker_with(p_0=3)
    source = FakeSource()
    checkpoint = Checkpoint(source, tracker, interval_s=5)
    checkpoint.commit(asynchronous=True)
    checkpoint.on_commit_result(None, [TopicPartition("t", 0, 3)])
    checkpoint.on_commit_result(KafkaError(KafkaError._NO_OFFSET), [TopicPartition("t", 0, 3)])
    assert checkpoint.commit() == 0
    assert len(source.calls) == 1


def test_forget_lets_a_later_owner_commit_the_same_position():
    tracker = tracker_with(p_0=3)
    source = FakeSource()
    checkpoint = Checkpoint(source, tracker, interval_s=5)
    checkpoint.commit()
    checkpoint.forget([("t", 0)])
    assert checkpoint.commit() == 1
    assert len(source.calls) == 2


def test_disabled_checkpoint_commits_nothing():
    tracker = tracker_with(p_0=3)
    source = FakeSource()
    clock = FakeClock(0.0)
    checkpoint = Checkpoint(source, tracker, interval_s=1, enabled=False, clock=clock)
    assert checkpoint.commit() == 0
    clock.now = 100
    checkpoint.maybe_commit()
    assert source.calls == []


def test_no_source_commits_nothing():
    checkpoint = Checkpoint(None, tracker_with(p_0=3), interval_s=1)
    assert checkpoint.commit() == 0


def test_every_acknowledged_position_is_reported():
    tracker = tracker_with(p_0=3, p_1=4)
    source = FakeSource()
    acked: list = []
    checkpoint = Checkpoint(source, tracker, interval_s=5, on_committed=lambda k, pos: acked.append((k, pos)))
    checkpoint.commit(asynchronous=True)  # asked only: the answer comes later
    assert acked == []
    checkpoint.on_commit_result(None, [TopicPartition("t", 0, 3), TopicPartition("t", 1, 4)])
    assert acked == [(("t", 0), 3), (("t", 1), 4)]
    tracker.partitions[("t", 0)].done(3)
    checkpoint.commit(asynchronous=False)  # synchronous: known at once
    assert acked[-1] == (("t", 0), 4)
    source.ok = False
    tracker.partitions[("t", 0)].done(4)
    checkpoint.commit(asynchronous=False)
    checkpoint.on_commit_result(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [TopicPartition("t", 1, 5)])
    assert acked[-1] == (("t", 0), 4)
