"""connector/sink/direct.py: first requests from the pipeline's thread, against the stand-in."""

from __future__ import annotations

import queue
import socket
import time

import pytest

from connector.batcher import Batch
from connector.config.model import Secret, TlsSettings
from connector.sink import connection as connection_module
from connector.sink import direct as direct_module
from connector.sink.client import UserFluxClient, make_route
from connector.sink.destination import Destination
from connector.sink.direct import DirectSender
from connector.sink.outcome import REJECT, RETRY
from connector.sink.retry import RetryPolicy
from connector.sink.throttle import Gate
from tests.conftest import API_KEY
from tests.support.fakes import make_items

FAST = RetryPolicy(initial_backoff_s=0.002, max_backoff_s=0.01)


class FakePool:
    """The sender pool's side of the hand-over: what reached it, and with which answer."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Batch, object]] = []
        self.busy = 0

    def submit(self, batch: Batch, tried: object = None) -> None:
        self.submitted.append((batch, tried))


def make_batch(n: int = 3, enrich: bool = False) -> Batch:
    return Batch(enrich, time.monotonic(), make_items(n))


@pytest.fixture
def pool():
    return FakePool()


@pytest.fixture
def make_direct(pool):
    made: list[DirectSender] = []

    def make(
        base_url: str, slots: int = 4, timeout_s: float = 2.0, gate: Gate | None = None, tls: TlsSettings | None = None
    ) -> DirectSender:
        client = UserFluxClient(make_route(base_url, Secret(API_KEY), timeout_s, tls))
        direct = DirectSender([Destination("default", client, gate or Gate(FAST), pool)], queue.SimpleQueue(), slots)
        made.append(direct)
        return direct

    yield make
    for direct in made:
        direct.close()


def run_until(direct: DirectSender, done, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        direct.pump(0.01)


def results(direct: DirectSender) -> list:
    found = []
    while True:
        try:
            found.append(direct.completions.get_nowait())
        except queue.Empty:
            return found


# -- delivered -------------------------------------------------------------------------------------


@pytest.mark.parametrize("enrich", [True, False])
def test_a_batch_is_delivered_as_the_sdks_send_it(standin, make_direct, pool, enrich):
    direct = make_direct(standin.base_url)
    batch = make_batch(5, enrich)
    direct.submit(batch)
    run_until(direct, lambda: not direct.active)
    [result] = results(direct)
    assert result.batch is batch and result.delivered == batch.items and result.delivered_at > 0
    [accepted] = standin.batches()
    assert accepted.location_enrichment is enrich
    assert accepted.events == [item.event for item in batch.items]
    assert pool.submitted == []


def test_requests_open_at_once_stay_within_the_slots_and_share_keep_alive_connections(standin, make_direct):
    standin.set_delay(0.05)
    direct = make_direct(standin.base_url, slots=2)
    batches = [make_batch(2) for _ in range(6)]
    most = 0
    for batch in batches:
        direct.submit(batch)
        most = max(most, direct.open)
    while direct.active:
        direct.pump(0.01)
        most = max(most, direct.open)
    assert most == 2
    assert sorted(r.batch.id for r in results(direct)) == sorted(b.id for b in batches)
    assert len(standin.events()) == 12


def test_the_pool_s_busy_threads_count_against_the_slots(standin, make_direct, pool):
    pool.busy = 2
    direct = make_direct(standin.base_url, slots=2)
    direct.submit(make_batch())
    direct.pump(0.05)
    assert direct.open == 0 and direct.active  # waiting for room
    pool.busy = 0
    run_until(direct, lambda: not direct.active)
    assert len(results(direct)) == 1


# -- handed to the pool with the answer ------------------------------------------------------------


def test_a_refusal_goes_to_the_pool_with_its_answer(standin, make_direct, pool):
    standin.fail_next(1, 400)
    direct = make_direct(standin.base_url)
    batch = make_batch()
    direct.submit(batch)
    run_until(direct, lambda: not direct.active)
    assert results(direct) == []
    [(handed, (answer, held))] = pool.submitted
    assert handed is batch and answer.kind == REJECT and answer.code == "400" and held == 0
    assert API_KEY not in answer.detail


def test_a_retry_after_is_reported_to_the_gate(standin, make_direct, pool):
    standin.fail_next(1, 429, retry_after="2")
    gate = Gate(FAST)
    direct = make_direct(standin.base_url, gate=gate)
    direct.submit(make_batch())
    run_until(direct, lambda: not direct.active)
    [(_batch, (answer, held))] = pool.submitted
    assert answer.kind == RETRY and answer.retry_after_s == 2.0
    assert held > 1.0 and gate.until > time.monotonic()


def test_a_slow_answer_times_out(standin, make_direct, pool):
    standin.set_delay(1.0)
    direct = make_direct(standin.base_url, timeout_s=0.2)
    started = time.monotonic()
    direct.submit(make_batch())
    run_until(direct, lambda: not direct.active)
    assert time.monotonic() - started < 0.8
    [(_batch, (answer, _held))] = pool.submitted
    assert answer.kind == RETRY and answer.code == "timeout"


def test_a_dropped_connection_is_retried_by_the_pool_and_the_next_request_reconnects(standin, make_direct, pool):
    standin.drop_next(1)
    direct = make_direct(standin.base_url)
    direct.submit(make_batch())
    run_until(direct, lambda: not direct.active)
    [(_batch, (answer, _held))] = pool.submitted
    assert answer.kind == RETRY and answer.code == "connection"
    direct.submit(make_batch())
    run_until(direct, lambda: not direct.active)
    assert [r.delivered != [] for r in results(direct)] == [True]


# -- straight to the pool --------------------------------------------------------------------------


def test_while_the_gate_holds_batches_go_to_the_pool_unsent(standin, make_direct, pool):
    gate = Gate(FAST)
    gate.until = time.monotonic() + 60
    direct = make_direct(standin.base_url, gate=gate)
    direct.submit(make_batch())  # the connection is opened first
    run_until(direct, lambda: not direct.active)
    assert [tried for _batch, tried in pool.submitted] == [None]
    assert standin.requests() == []


def test_when_no_connection_can_be_opened_batches_go_to_the_pool(make_direct, pool, monkeypatch):
    monkeypatch.setattr(direct_module, "REDIAL_AFTER_S", 60.0)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    direct = make_direct(f"http://127.0.0.1:{port}")
    direct.submit(make_batch())
    run_until(direct, lambda: not direct.active)
    direct.submit(make_batch())  # within REDIAL_AFTER_S: not tried again
    assert not direct.active
    assert [tried for _batch, tried in pool.submitted] == [None, None]


def test_a_batch_whose_partition_was_revoked_while_it_waited_is_abandoned(standin, make_direct, pool):
    direct = make_direct(standin.base_url)
    batch = make_batch()
    direct.submit(batch)  # waits for its connection
    for item in batch.items:
        item.offsets.owned = False
    run_until(direct, lambda: not direct.active)
    [result] = results(direct)
    assert result.abandoned == batch.items and result.delivered == []
    assert standin.requests() == []


def test_close_abandons_open_requests_without_an_answer(standin, make_direct, pool):
    standin.set_delay(0.5)
    direct = make_direct(standin.base_url)
    direct.submit(make_batch())
    run_until(direct, lambda: direct.open == 1)
    direct.close()
    assert not direct.active and results(direct) == [] and pool.submitted == []
    direct.submit(make_batch())  # after close: the pool's, which the stop tells to give up
    assert len(pool.submitted) == 1


def test_an_idle_connection_past_the_keep_alive_expiry_is_replaced(standin, make_direct, monkeypatch):
    opened = []
    real_open = connection_module.Connection.open.__func__

    def counting_open(cls, *args):
        opened.append(args[0])
        return real_open(cls, *args)

    monkeypatch.setattr(connection_module.Connection, "open", classmethod(counting_open))
    monkeypatch.setattr(connection_module, "KEEPALIVE_EXPIRY_S", 0.2)
    direct = make_direct(standin.base_url)
    for pause in (0.0, 0.05, 0.3):  # the second reuses the connection, the third does not
        time.sleep(pause)
        direct.submit(make_batch())
        run_until(direct, lambda: not direct.active)
    assert [bool(r.delivered) for r in results(direct)] == [True, True, True]
    assert len(opened) == 2


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture
def https(https_standin):
    https_standin.reset()
    yield https_standin
    https_standin.reset()


def test_over_tls_many_batches_are_delivered_on_non_blocking_connections(https, certs, make_direct, pool):
    direct = make_direct(https.base_url, slots=3, tls=TlsSettings(ca_file=str(certs.ca)))
    batches = [make_batch(20) for _ in range(9)]
    for batch in batches:
        direct.submit(batch)
    run_until(direct, lambda: not direct.active)
    assert sorted(r.batch.id for r in results(direct) if r.delivered) == sorted(b.id for b in batches)
    assert len(https.events()) == 180 and pool.submitted == []


def test_a_refused_certificate_sends_the_batches_to_the_pool_unsent(https, make_direct, pool):
    direct = make_direct(https.base_url)  # the stand-in's CA is not trusted
    direct.submit(make_batch())
    run_until(direct, lambda: not direct.active)
    assert [tried for _batch, tried in pool.submitted] == [None]  # the pool's request finds it fatal
    assert https.requests() == []


# -- several destinations ---------------------------------------------------------------------------

OTHER_KEY = "mobile-write-key-0123456789"


@pytest.fixture
def two_lanes(standin):
    """A DirectSender for two destinations on the stand-in, each with its key, gate and pool."""
    standin.add_key(OTHER_KEY)
    lanes = {}
    for name, key in (("default", API_KEY), ("mobile", OTHER_KEY)):
        client = UserFluxClient(make_route(standin.base_url, Secret(key), 2.0))
        lanes[name] = Destination(name, client, Gate(FAST, destination=name), FakePool())
    direct = DirectSender(lanes.values(), queue.SimpleQueue(), slots=2)
    yield direct, lanes
    direct.close()


def batch_for(destination: str, n: int = 3) -> Batch:
    return Batch(False, time.monotonic(), make_items(n), destination=destination)


def test_each_batch_goes_with_its_destinations_key(standin, two_lanes):
    direct, _lanes = two_lanes
    web, mobile = batch_for("default"), batch_for("mobile", 2)
    direct.submit(web)
    direct.submit(mobile)
    run_until(direct, lambda: not direct.active)
    assert sorted(len(r.delivered) for r in results(direct)) == [2, 3]
    assert sorted((b.key, len(b.events)) for b in standin.batches()) == sorted([(API_KEY, 3), (OTHER_KEY, 2)])


def test_a_held_destination_sends_to_its_own_pool_and_the_other_goes_on_directly(standin, two_lanes):
    direct, lanes = two_lanes
    lanes["mobile"].gate.until = time.monotonic() + 60  # mobile's Retry-After
    held, free = batch_for("mobile"), batch_for("default")
    direct.submit(held)
    direct.submit(free)
    run_until(direct, lambda: not direct.active)
    assert [r.batch for r in results(direct)] == [free]
    assert [b.key for b in standin.batches()] == [API_KEY]
    assert lanes["mobile"].pool.submitted == [(held, None)]  # unsent: its senders wait out the hold
    assert lanes["default"].pool.submitted == []


def test_the_slots_are_each_destinations_own(standin, two_lanes):
    standin.set_delay(0.05)
    direct, lanes = two_lanes
    lanes["default"].pool.busy = 2  # every slot of the default destination taken
    direct.submit(batch_for("default"))
    direct.submit(batch_for("mobile"))
    direct.submit(batch_for("mobile"))
    run_until(direct, lambda: direct.open == 2)  # mobile's two: the default destination waits for room of its own
    assert {request.batch.destination for _connection, request in direct._busy.values()} == {"mobile"}
    lanes["default"].pool.busy = 0
    run_until(direct, lambda: not direct.active)
    assert len(results(direct)) == 3
