"""connector/batcher.py: events into batches of at most batch_size, one locationEnrichment each."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.batcher import Batch, Batcher, Item
from connector.offsets import PartitionOffsets
from tests.support.fakes import FakeClock, tracked_item


def make_item(offset: int, part: PartitionOffsets | None = None, location: bool = False) -> Item:
    part = part or PartitionOffsets("events", 0)
    return tracked_item(part, offset, {"name": f"evt_{offset}", "userId": "u", "loc": location})


def test_a_full_batch_is_returned_by_the_add_that_filled_it():
    batcher = Batcher(batch_size=3, linger_s=10, clock=FakeClock(100.0))
    items = [make_item(i) for i in range(4)]
    assert batcher.add(items[0], False) is None
    assert batcher.add(items[1], False) is None
    batch = batcher.add(items[2], False)
    assert isinstance(batch, Batch)
    assert batch.items == items[:3]  # in arrival order
    assert len(batch) == 3
    assert batch.location_enrichment is False
    assert batcher.buffered == 0
    assert batcher.add(items[3], False) is None
    assert batcher.buffered == 1


def test_batch_size_one_sends_every_event_alone():
    batcher = Batcher(batch_size=1, linger_s=10, clock=FakeClock(100.0))
    for i in range(3):
        batch = batcher.add(make_item(i), True)
        assert batch is not None and len(batch) == 1 and batch.location_enrichment is True
    assert batcher.buffered == 0


def test_location_enrichment_values_never_share_a_batch():
    batcher = Batcher(batch_size=2, linger_s=10, clock=FakeClock(100.0))
    a, b, c, d = (make_item(i) for i in range(4))
    assert batcher.add(a, True) is None
    assert batcher.add(b, False) is None  # different flag: a second open batch
    assert batcher.buffered == 2
    full = batcher.add(c, True)
    assert full is not None and full.items == [a, c] and full.location_enrichment is True
    full = batcher.add(d, False)
    assert full is not None and full.items == [b, d] and full.location_enrichment is False


def test_linger_with_an_injected_clock():
    clock = FakeClock(100.0)
    batcher = Batcher(batch_size=50, linger_s=1.5, clock=clock)
    item = make_item(0)
    batcher.add(item, False)
    clock.now = 101.0
    assert batcher.add(make_item(1), False) is None  # joins the open batch, opened at 100
    clock.now = 101.49
    assert batcher.due() == []
    clock.now = 101.5
    due = batcher.due()
    assert len(due) == 1 and len(due[0]) == 2 and due[0].opened == 100.0
    assert due[0].items[0] is item
    assert batcher.due() == []  # handed out once
    assert batcher.buffered == 0


def test_due_returns_only_the_batches_whose_linger_passed():
    clock = FakeClock(0.0)
    batcher = Batcher(batch_size=50, linger_s=1.0, clock=clock)
    batcher.add(make_item(0), True)
    clock.now = 0.6
    batcher.add(make_item(1), False)
    clock.now = 1.2
    due = batcher.due()
    assert [b.location_enrichment for b in due] == [True]
    assert batcher.buffered == 1
    clock.now = 1.6
    assert [b.location_enrichment for b in batcher.due()] == [False]


def test_next_due_in():
    clock = FakeClock(10.0)
    batcher = Batcher(batch_size=50, linger_s=2.0, clock=clock)
    assert batcher.next_due_in() is None
    batcher.add(make_item(0), False)
    clock.now = 10.5
    assert abs(batcher.next_due_in() - 1.5) < 1e-9
    batcher.add(make_item(1), True)  # opened later: the older one decides
    clock.now = 11.0
    assert abs(batcher.next_due_in() - 1.0) < 1e-9
    clock.now = 50.0
    assert batcher.next_due_in() == 0.0  # overdue is never negative
    batcher.flush()
    assert batcher.next_due_in() is None


def test_flush_hands_out_every_open_batch_now():
    clock = FakeClock(0.0)
    batcher = Batcher(batch_size=50, linger_s=100, clock=clock)
    batcher.add(make_item(0), False)
    batcher.add(make_item(1), True)
    batcher.add(make_item(2), False)
    flushed = batcher.flush()
    assert sorted((b.location_enrichment, len(b)) for b in flushed) == [(False, 2), (True, 1)]
    assert batcher.buffered == 0
    assert batcher.flush() == []
    assert batcher.due() == []


def test_batch_ids_are_unique_and_increasing():
    batcher = Batcher(batch_size=1, linger_s=1, clock=FakeClock(100.0))
    ids = [batcher.add(make_item(i), False).id for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5


def test_an_item_knows_the_offsets_it_marks_done():
    part = PartitionOffsets("events", 0)
    first, second = make_item(7, part), make_item(8, part)
    second.offsets.done(second.offset)
    assert part.position is None
    first.offsets.done(first.offset)
    assert part.position == 9


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=1, max_value=50), flags=st.lists(st.booleans(), max_size=120))
def test_every_item_lands_in_exactly_one_batch_of_one_flag_and_at_most_size(size, flags):
    batcher = Batcher(batch_size=size, linger_s=1, clock=FakeClock(100.0))
    batches = []
    part = PartitionOffsets("events", 0)
    items = []
    for offset, flag in enumerate(flags):
        item = make_item(offset, part, flag)
        items.append(item)
        full = batcher.add(item, flag)
        if full is not None:
            assert len(full) == size
            batches.append(full)
        assert batcher.buffered == len(items) - sum(len(b) for b in batches)
    batches += batcher.flush()
    seen = [item for b in batches for item in b.items]
    assert sorted(id(i) for i in seen) == sorted(id(i) for i in items)  # none lost, none twice
    for batch in batches:
        assert 1 <= len(batch) <= size
        assert all(item.event["loc"] is batch.location_enrichment for item in batch.items)
        offsets = [item.message.offset() for item in batch.items]
        assert offsets == sorted(offsets)  # arrival order kept within a batch


def test_destinations_never_share_a_batch_and_each_batch_names_its_own():
    clock = FakeClock(100.0)
    batcher = Batcher(batch_size=2, linger_s=1.0, clock=clock)
    web, mobile, mobile_enriched = ("default", False), ("mobile", False), ("mobile", True)
    a, b, c, d = (make_item(i) for i in range(4))
    assert batcher.add(a, web) is None
    assert batcher.add(b, mobile) is None
    assert batcher.add(c, mobile_enriched) is None
    full = batcher.add(d, mobile)
    assert full is not None and full.items == [b, d]
    assert (full.destination, full.location_enrichment) == ("mobile", False)
    clock.now += 1.0
    due = sorted(batcher.due(), key=lambda batch: batch.destination)
    assert [(x.destination, x.location_enrichment, x.items) for x in due] == [
        ("default", False, [a]),
        ("mobile", True, [c]),
    ]
    assert batcher.buffered == 0


def test_a_bare_location_flag_is_the_default_destination_and_batches_with_its_key():
    batcher = Batcher(batch_size=2, linger_s=10, clock=FakeClock(100.0))
    assert batcher.add(make_item(0), True) is None
    full = batcher.add(make_item(1), True)
    assert full is not None and (full.destination, full.location_enrichment) == ("default", True)
    assert batcher.add(make_item(2), ("default", True)) is None
    assert [b.key for b in batcher.flush()] == [("default", True)]
