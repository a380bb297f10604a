"""connector/backpressure.py: reading holds at max_pending_messages until half are done,
and a hold that lasts PAUSE_AFTER_S pauses the partitions in Kafka too.

The pipeline calls ``apply(pending)`` at the end of every loop step, reads only while
``reading`` says so and never more than ``room``; these tests do the same, on a fake
clock, against a consumer that only records pauses and resumes."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from connector import metrics
from connector.backpressure import PAUSE_AFTER_S, Backpressure
from tests.support.fakes import FakeClock

Key = tuple[str, int]


class FakeConsumer:
    """The Pausable side of KafkaSource. As librdkafka does, a partition keeps its pause
    when it is lost (not revoked) and comes back paused when assigned again."""

    def __init__(self, keys: set[Key]):
        self.assigned = set(keys)
        self.paused: set[Key] = set()
        self.calls: list[tuple[str, set[Key], set[Key]]] = []  # (pause|resume, keys, assigned then)

    def assignment(self) -> set[Key]:
        return set(self.assigned)

    def pause(self, keys) -> None:
        keys = set(keys)
        self.calls.append(("pause", keys, set(self.assigned)))
        self.paused |= keys

    def resume(self, keys) -> None:
        keys = set(keys)
        self.calls.append(("resume", keys, set(self.assigned)))
        self.paused -= keys

    def readable(self) -> set[Key]:
        return self.assigned - self.paused


def gauge(g) -> float:
    return g._value.get()


def new(limit: int, keys=(("t", 0), ("t", 1))) -> tuple[Backpressure, FakeConsumer, FakeClock]:
    clock = FakeClock(100.0)
    consumer = FakeConsumer(set(keys))
    return Backpressure(consumer, limit, clock=clock), consumer, clock


# -- examples ------------------------------------------------------------------------------


def test_reading_holds_at_the_limit_and_resumes_only_once_half_are_done():
    bp, consumer, _ = new(limit=10)
    bp.apply(9)
    assert bp.consuming and bp.room(9) == 1
    bp.apply(10)
    assert not bp.consuming and gauge(metrics.paused) == 1
    for pending in (9, 8, 7, 6):  # completions, but not half of them yet
        bp.apply(pending)
        assert not bp.consuming, f"resumed at {pending} pending"
    bp.apply(5)
    assert bp.consuming and bp.holding_since is None and gauge(metrics.paused) == 0
    assert consumer.calls == []  # a short hold never touches Kafka


def test_half_of_an_odd_limit_is_rounded_down():
    bp, _, _ = new(limit=7)
    bp.apply(7)
    bp.apply(4)
    assert not bp.consuming
    bp.apply(3)
    assert bp.consuming


def test_a_hold_pauses_the_partitions_in_kafka_once_it_lasted_pause_after_s():
    bp, consumer, clock = new(limit=10)
    bp.apply(10)
    clock.advance(PAUSE_AFTER_S - 0.25)
    bp.apply(10)
    assert consumer.paused == set() and not bp.consuming
    clock.advance(0.25)  # exactly PAUSE_AFTER_S
    bp.apply(8)
    assert consumer.paused == {("t", 0), ("t", 1)} == bp.paused
    assert bp.consuming  # reading again, to serve rebalances; paused partitions give nothing
    assert gauge(metrics.paused) == 1 and gauge(metrics.paused_partitions) == 2
    bp.apply(5)
    assert consumer.paused == set() and bp.paused is None and bp.consuming
    assert gauge(metrics.paused) == 0 and gauge(metrics.paused_partitions) == 0


def test_room_is_what_fits_under_the_limit():
    bp, _, _ = new(limit=10)
    assert [bp.room(p) for p in (0, 3, 10)] == [10, 7, 0]


def test_a_partition_assigned_during_a_long_hold_is_paused_at_once():
    bp, consumer, clock = new(limit=4, keys=[("t", 0)])
    bp.apply(4)
    clock.advance(PAUSE_AFTER_S)
    bp.apply(4)
    consumer.assigned.add(("t", 1))
    bp.assigned([("t", 1)])
    assert consumer.paused == {("t", 0), ("t", 1)} and gauge(metrics.paused_partitions) == 2


def test_a_partition_lost_while_paused_is_resumed_when_it_comes_back_after_the_hold():
    bp, consumer, clock = new(limit=4, keys=[("t", 0)])
    bp.apply(4)
    clock.advance(PAUSE_AFTER_S)
    bp.apply(4)
    consumer.assigned.clear()  # lost: librdkafka keeps its pause
    bp.release([("t", 0)])
    assert bp.paused == set()
    bp.apply(0)  # what it held is dropped: the hold ends, nothing to resume
    assert consumer.calls[-1] == ("resume", set(), set())
    consumer.assigned.add(("t", 0))
    bp.assigned([("t", 0)])
    assert consumer.readable() == {("t", 0)}


def test_only_partitions_still_assigned_are_resumed():
    bp, consumer, clock = new(limit=4)
    bp.apply(4)
    clock.advance(PAUSE_AFTER_S)
    bp.apply(4)
    consumer.assigned.discard(("t", 1))  # revoked while paused, and not yet released
    bp.apply(2)
    assert consumer.calls[-1] == ("resume", {("t", 0)}, {("t", 0)})


# -- the state machine ------------------------------------------------------------------------


class BackpressureMachine(RuleBasedStateMachine):
    """Reads, completions, time passing and rebalances in any order, against a model of
    the module's docstring: hold at the limit, resume at half, pause in Kafka after
    PAUSE_AFTER_S of holding, every owned partition paused while paused."""

    @initialize(limit=st.integers(1, 12), partitions=st.integers(1, 3))
    def start(self, limit: int, partitions: int) -> None:
        self.clock = FakeClock(0.0)
        self.consumer = FakeConsumer({("t", p) for p in range(partitions)})
        self.limit = limit
        self.bp = Backpressure(self.consumer, limit, clock=self.clock)
        metrics.paused.set(0)  # as in a fresh process: other tests set the gauges too
        metrics.paused_partitions.set(0)
        self.pending = 0
        self.hold_began: float | None = None  # the model: when reading stopped
        self.applied_at = 0.0
        self.next_partition = partitions

    def loop_step(self) -> None:
        """The end of a pipeline loop step: apply what is pending; the model follows."""
        self.bp.apply(self.pending)
        self.applied_at = self.clock()
        if self.hold_began is None:
            if self.pending >= self.limit:
                self.hold_began = self.clock()
        elif self.pending <= self.limit // 2:
            self.hold_began = None

    @rule(n=st.integers(1, 20))
    def read(self, n: int) -> None:
        # The pipeline's read: only while reading, at most the room (at least one, for
        # rebalance callbacks), and only from partitions not paused in Kafka.
        if self.bp.consuming and self.consumer.readable():
            self.pending += min(n, max(1, self.bp.room(self.pending)))
        self.loop_step()

    @rule(n=st.integers(1, 20))
    def complete(self, n: int) -> None:
        self.pending -= min(n, self.pending)
        self.loop_step()

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 1.75, 2.0, 5.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.loop_step()

    @rule()
    def assign(self) -> None:
        key = ("t", self.next_partition)
        self.next_partition += 1
        self.consumer.assigned.add(key)
        self.bp.assigned([key])

    @precondition(lambda self: self.consumer.assigned)
    @rule(data=st.data(), lost=st.booleans())
    def give_up_a_partition(self, data: st.DataObject, lost: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.consumer.assigned)))
        self.consumer.assigned.discard(key)
        if not lost:
            self.consumer.paused.discard(key)  # revoked: its pause goes with it
        self.bp.release([key])

    @precondition(lambda self: self.next_partition > len(self.consumer.assigned))
    @rule(data=st.data())
    def get_one_back(self, data: st.DataObject) -> None:
        gone = sorted({("t", p) for p in range(self.next_partition)} - self.consumer.assigned)
        key = data.draw(st.sampled_from(gone))
        self.consumer.assigned.add(key)
        self.bp.assigned([key])

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def never_more_than_the_limit_pending(self) -> None:
        assert self.pending <= self.limit

    @invariant()
    def holds_from_the_limit_until_half_are_done(self) -> None:
        assert self.bp.holding_since == self.hold_began
        assert gauge(metrics.paused) == (0 if self.hold_began is None else 1)

    @invariant()
    def pauses_in_kafka_exactly_after_pause_after_s_of_holding(self) -> None:
        due = self.hold_began is not None and self.applied_at - self.hold_began >= PAUSE_AFTER_S
        assert (self.bp.paused is not None) == due

    @invariant()
    def reads_unless_holding_without_a_pause_in_kafka(self) -> None:
        assert self.bp.consuming == (self.hold_began is None or self.bp.paused is not None)

    @invariant()
    def every_owned_partition_is_paused_while_paused_and_none_otherwise(self) -> None:
        if self.bp.paused is not None:
            assert self.bp.paused == self.consumer.assigned
            assert self.consumer.readable() == set()
            assert gauge(metrics.paused_partitions) == len(self.bp.paused)
        else:
            assert self.consumer.readable() == self.consumer.assigned
            assert gauge(metrics.paused_partitions) == 0

    @invariant()
    def pauses_and_resumes_only_owned_partitions(self) -> None:
        for what, keys, assigned in self.consumer.calls:
            assert keys <= assigned, f"{what} of {sorted(keys - assigned)}, not assigned"


BackpressureMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
test_backpressure_state_machine = BackpressureMachine.TestCase


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_tiny_limits(limit):
    bp, _, _ = new(limit=limit)
    bp.apply(limit)
    assert not bp.consuming
    bp.apply(limit // 2)
    assert bp.consuming
