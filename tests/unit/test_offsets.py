"""connector/offsets.py: what is done per partition, and how far it is safe to commit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.offsets import OffsetTracker, PartitionOffsets

# Offsets of a compacted topic: strictly increasing, with arbitrary gaps.
offset_sets = st.lists(st.integers(min_value=0, max_value=5_000), min_size=1, max_size=30, unique=True).map(sorted)


def tracked(*offsets: int) -> PartitionOffsets:
    part = PartitionOffsets("events", 0)
    for offset in offsets:
        assert part.track(offset) is True
    return part


# -- examples ------------------------------------------------------------------------


def test_nothing_done_means_no_position():
    part = tracked(0, 1, 2)
    assert part.position is None
    assert part.pending == 3
    assert part.owned is True


def test_out_of_order_completion_holds_the_position_at_the_first_unfinished():
    part = tracked(0, 1, 2, 3)
    part.done(2)
    assert part.position is None  # 0 is not done: nothing may be committed
    part.done(0)
    assert part.position == 1  # 1 is still in flight
    part.done(3)
    assert part.position == 1
    part.done(1)
    assert part.position == 4
    assert part.pending == 0


def test_gaps_of_a_compacted_topic():
    part = tracked(10, 15, 40)
    part.done(15)
    assert part.position is None
    part.done(10)
    assert part.position == 16  # 16..39 do not exist: committing 16 skips nothing
    part.done(40)
    assert part.position == 41


def test_the_oldest_pending_message_s_read_time_follows_the_head():
    part = PartitionOffsets("events", 0)
    for offset in range(3):
        part.track(offset, read_at=10.0)
    for offset in range(3, 6):
        part.track(offset, read_at=20.0)
    assert part.oldest_read_at() == 10.0
    part.done(0)
    part.done(1)
    assert part.oldest_read_at() == 10.0  # offset 2 was read at 10 too
    part.done(3)  # out of order: 2 is still the oldest pending
    assert part.oldest_read_at() == 10.0
    part.done(2)
    assert part.oldest_read_at() == 20.0
    for offset in (4, 5):
        part.done(offset)
    assert part.oldest_read_at() is None
    part.track(6, read_at=20.0)  # read in the same batch as the ones before: its time is kept
    assert part.oldest_read_at() == 20.0


def test_track_refuses_redeliveries():
    part = tracked(5, 6, 7)
    assert part.track(7) is False  # same offset again (fetch restart)
    assert part.track(3) is False  # an older one
    assert part.pending == 3  # not counted twice
    assert part.track(8) is True
    assert part.pending == 4


def test_redelivery_after_release_is_still_refused():
    part = tracked(0, 1)
    part.done(0)
    part.done(1)
    assert part.pending == 0
    assert part.track(1) is False
    assert part.track(0) is False
    assert part.pending == 0
    assert part.position == 2


def test_done_twice_is_harmless():
    part = tracked(0, 1, 2)
    part.done(1)
    part.done(1)  # done but not yet released
    assert part.position is None
    part.done(0)
    assert part.position == 2
    part.done(0)  # already released: below the position
    part.done(1)
    assert part.position == 2
    assert part.pending == 1
    part.done(2)
    assert part.position == 3
    assert part.pending == 0


def test_pending_counts_done_offsets_behind_an_unfinished_one():
    part = tracked(0, 1, 2, 3, 4)
    part.done(1)
    part.done(3)
    assert part.pending == 5  # 0 holds everything back
    part.done(0)
    assert part.pending == 3  # 0 and 1 released; 2, 3, 4 remain
    assert part.position == 2


def test_tracker_assign_is_idempotent_and_get_assigns_unknown_partitions():
    tracker = OffsetTracker()
    first = tracker.assign("a", 0)
    assert tracker.assign("a", 0) is first
    assert tracker.get("a", 0) is first
    other = tracker.get("a", 1)  # never assigned: still tracked (the safe choice)
    assert other is not first
    assert set(tracker.partitions) == {("a", 0), ("a", 1)}


def test_tracker_pending_sums_partitions():
    tracker = OffsetTracker()
    a, b = tracker.assign("a", 0), tracker.assign("b", 3)
    for offset in range(4):
        a.track(offset)
    b.track(100)
    b.track(101)
    assert tracker.pending == 6
    a.done(0)
    b.done(101)
    assert tracker.pending == 5


def test_release_marks_owned_false_and_forgets():
    tracker = OffsetTracker()
    a, b = tracker.assign("a", 0), tracker.assign("a", 1)
    a.track(0)
    released = tracker.release([("a", 0), ("nope", 9)])
    assert released == [a]
    assert a.owned is False
    assert b.owned is True
    assert set(tracker.partitions) == {("a", 1)}
    assert tracker.pending == 0
    # Reassigned later: a fresh tracker, not the revoked one.
    again = tracker.assign("a", 0)
    assert again is not a
    assert again.owned is True and again.position is None and again.pending == 0


def test_late_completion_of_a_released_partition_does_not_reach_the_tracker():
    tracker = OffsetTracker()
    a = tracker.assign("a", 0)
    a.track(0)
    tracker.release([("a", 0)])
    a.done(0)  # a batch finishing after the revoke
    assert ("a", 0) not in tracker.partitions
    assert tracker.assign("a", 0).position is None


# -- properties ----------------------------------------------------------------------


def _check(part: PartitionOffsets, read: list[int], unfinished: set[int], unread: list[int], previous):
    position = part.position
    # Never passes an unfinished or unread offset.
    for offset in unfinished:
        assert position is None or position <= offset
    if unread:
        assert position is None or position <= unread[0]
    # Monotonic.
    if previous is not None:
        assert position is not None and position >= previous
    # As far as it may go: just past the last read offset below the first unfinished one.
    first_unfinished = min(unfinished) if unfinished else float("inf")
    below = [o for o in read if o < first_unfinished]
    assert position == (max(below) + 1 if below else None)
    # Pending: every read offset from the first unfinished on.
    assert part.pending == sum(1 for o in read if o >= first_unfinished)


@settings(max_examples=60, deadline=None)
@given(offsets=offset_sets, data=st.data())
def test_position_with_reads_and_completions_interleaved(offsets, data):
    part = PartitionOffsets("events", 0)
    unread = list(offsets)
    read: list[int] = []
    unfinished: set[int] = set()
    previous = None
    while unread or unfinished:
        finish = bool(unfinished) and (not unread or data.draw(st.booleans(), label="finish"))
        if finish:
            offset = data.draw(st.sampled_from(sorted(unfinished)), label="done")
            part.done(offset)
            unfinished.discard(offset)
            if data.draw(st.booleans(), label="done again"):
                part.done(offset)  # a duplicate completion changes nothing
        else:
            offset = unread.pop(0)
            assert part.track(offset) is True
            read.append(offset)
            unfinished.add(offset)
            if data.draw(st.booleans(), label="redelivered"):
                assert part.track(data.draw(st.sampled_from(read), label="again")) is False
        _check(part, read, unfinished, unread, previous)
        previous = part.position
    assert part.position == offsets[-1] + 1
    assert part.pending == 0


@settings(max_examples=60, deadline=None)
@given(offsets=offset_sets, data=st.data())
def test_position_when_everything_is_read_first_then_finished_in_any_order(offsets, data):
    part = PartitionOffsets("events", 0)
    for offset in offsets:
        assert part.track(offset) is True
    order = data.draw(st.permutations(offsets), label="completion order")
    unfinished = set(offsets)
    previous = None
    for offset in order:
        part.done(offset)
        unfinished.discard(offset)
        _check(part, offsets, unfinished, [], previous)
        previous = part.position
    assert part.position == offsets[-1] + 1
    assert part.pending == 0


@settings(max_examples=50, deadline=None)
@given(offsets=offset_sets, data=st.data())
def test_redeliveries_are_refused_and_never_counted(offsets, data):
    part = PartitionOffsets("events", 0)
    for offset in offsets:
        part.track(offset)
    stale = data.draw(st.lists(st.integers(min_value=0, max_value=offsets[-1]), max_size=20), label="redelivered")
    for offset in stale:
        assert part.track(offset) is False
    assert part.pending == len(offsets)
