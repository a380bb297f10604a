"""connector/sink/pool.py: batches sent concurrently, every result on the completion queue."""

from __future__ import annotations

import io
import json
import queue
import threading
import time

import pytest

from connector.batcher import Batch
from connector.errors import FatalError
from connector.offsets import PartitionOffsets
from connector.sink.dryrun import PrintingSender
from connector.sink.pool import SenderPool, SenderPools
from connector.sink.retry import RetryPolicy
from connector.sink.sender import BatchResult, BatchSender
from tests.support.fakes import make_items

FAST = RetryPolicy(initial_backoff_s=0.002, max_backoff_s=0.01)

_part = PartitionOffsets("events", 0)


def make_batch(n: int = 2, location_enrichment: bool = False) -> Batch:
    items = make_items(n, _part, first=_part._last_tracked + 1)
    return Batch(location_enrichment, time.monotonic(), items)


def drain(completions: queue.SimpleQueue, count: int, timeout_s: float = 3.0) -> list[BatchResult]:
    deadline = time.monotonic() + timeout_s
    results = []
    for _ in range(count):
        results.append(completions.get(timeout=max(0.0, deadline - time.monotonic())))
    return results


@pytest.fixture
def make_pool():
    pools = []

    def make(sender, workers: int) -> tuple[SenderPool, queue.SimpleQueue]:
        completions: queue.SimpleQueue = queue.SimpleQueue()
        pool = SenderPool(sender, workers, completions)
        pools.append(pool)
        return pool, completions

    yield make
    for pool in pools:
        pool.close(timeout_s=1.0)


def test_batches_are_sent_concurrently(standin, client, make_pool):
    standin.set_delay(0.2)
    pool, completions = make_pool(BatchSender(client, FAST, threading.Event()), workers=4)
    batches = [make_batch() for _ in range(4)]
    started = time.monotonic()
    for batch in batches:
        pool.submit(batch)
    results = drain(completions, 4)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.5  # one after another would take 0.8 s
    assert sorted(r.batch.id for r in results) == sorted(b.id for b in batches)
    assert all(r.delivered == r.batch.items for r in results)
    assert len(standin.batches()) == 4


def test_one_worker_sends_one_batch_at_a_time(standin, client, make_pool):
    standin.set_delay(0.06)
    pool, completions = make_pool(BatchSender(client, FAST, threading.Event()), workers=1)
    started = time.monotonic()
    for _ in range(3):
        pool.submit(make_batch())
    drain(completions, 3)
    assert time.monotonic() - started >= 0.18  # the control for the test above


def test_every_result_reaches_the_completion_queue(standin, client, make_pool):
    pool, completions = make_pool(BatchSender(client, FAST, threading.Event()), workers=3)
    standin.fail_next(4, 503)
    standin.reject_events(lambda e: e["name"] == "evt_bad")
    batches = [make_batch(3, location_enrichment=i % 2 == 0) for i in range(10)]
    batches[4].items[1].event["name"] = "evt_bad"
    for batch in batches:
        pool.submit(batch)
    results = drain(completions, 10)
    assert sorted(r.batch.id for r in results) == sorted(b.id for b in batches)
    with pytest.raises(queue.Empty):
        completions.get(timeout=0.05)  # each batch once, no more
    refused = [item for r in results for item, _ in r.refused]
    assert [item.event["name"] for item in refused] == ["evt_bad"]
    assert sum(len(r.delivered) for r in results) == 29
    assert len(standin.events()) == 29


class ExplodingSender:
    """Raises inside send for one batch (a bug), delivers the others."""

    def __init__(self, explode_on: int):
        self.explode_on = explode_on

    def send(self, batch: Batch) -> BatchResult:
        if batch.id == self.explode_on:
            raise RuntimeError("boom")
        return BatchResult(batch, delivered=list(batch.items))


def test_an_exception_in_send_becomes_a_fatal_result_not_a_lost_batch(make_pool):
    good, bad, after = make_batch(), make_batch(), make_batch()
    pool, completions = make_pool(ExplodingSender(bad.id), workers=1)
    for batch in (good, bad, after):
        pool.submit(batch)
    results = {r.batch.id: r for r in drain(completions, 3)}
    failed = results[bad.id]
    assert isinstance(failed.failure, FatalError)
    assert "boom" in str(failed.failure) and f"#{bad.id}" in str(failed.failure)
    assert failed.abandoned == bad.items
    assert failed.delivered == [] and failed.refused == []
    # The worker survived and went on with the next batch.
    assert results[after.id].delivered == after.items and results[after.id].failure is None


def test_close_stops_the_workers(make_pool):
    pool, _ = make_pool(ExplodingSender(-1), workers=3)
    pool.close(timeout_s=2.0)
    assert not any(thread.is_alive() for thread in pool._threads)


def test_dry_run_sender_in_the_pool_prints_one_line_per_batch(make_pool):
    out = io.StringIO()
    pool, completions = make_pool(PrintingSender(out), workers=2)
    batches = [make_batch(2, location_enrichment=True), make_batch(1)]
    for batch in batches:
        pool.submit(batch)
    results = drain(completions, 2)
    assert all(r.delivered == r.batch.items for r in results)
    lines = sorted((json.loads(line) for line in out.getvalue().splitlines()), key=lambda d: d["batch"])
    assert [(d["batch"], d["locationEnrichment"], len(d["events"])) for d in lines] == [
        (batches[0].id, True, 2),
        (batches[1].id, False, 1),
    ]
    assert lines[0]["events"] == [item.event for item in batches[0].items]


class Recording:
    """A sender that answers at once and remembers the thread that sent each batch."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def send(self, batch: Batch, tried=None) -> BatchResult:
        self.threads.append(threading.current_thread().name)
        return BatchResult(batch, delivered=list(batch.items))


def test_each_batch_goes_to_its_destinations_pool():
    completions: queue.SimpleQueue = queue.SimpleQueue()
    web, mobile = Recording(), Recording()
    pools = SenderPools(
        {
            "default": SenderPool(web, 1, completions),
            "mobile": SenderPool(mobile, 2, completions, name="sender-mobile"),
        }
    )
    try:
        batch = make_batch()
        batch.destination = "mobile"
        pools.submit(batch)
        pools.submit(make_batch())
        drain(completions, 2)
        assert web.threads == ["sender-0"] and mobile.threads[0].startswith("sender-mobile-")
        assert pools.busy == 0
    finally:
        pools.close(timeout_s=1.0)
