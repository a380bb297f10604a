"""connector/sink/sender.py: one batch to an end, against the UserFlux stand-in."""

from __future__ import annotations

import json
import threading
import time

import pytest

from connector.batcher import Batch, Item
from connector.errors import AuthError, DeliveryConfigError
from connector.offsets import PartitionOffsets
from connector.sink import connection as connection_module
from connector.sink.outcome import AUTH, DELIVERED, REJECT, RETRY, Outcome
from connector.sink.retry import RetryPolicy
from connector.sink.sender import BatchSender
from connector.sink.throttle import Gate
from tests.conftest import API_KEY
from tests.support.fakes import FakeClock, make_items

FAST = RetryPolicy(initial_backoff_s=0.002, max_backoff_s=0.01)


def make_batch(items: list[Item], location_enrichment: bool = False) -> Batch:
    return Batch(location_enrichment, time.monotonic(), list(items))


def names(items) -> list[str]:
    """Event names of Items, or of events the stand-in accepted."""
    return [(item["name"] if isinstance(item, dict) else item.event["name"]) for item in items]


@pytest.fixture
def stop():
    return threading.Event()


def timer(seconds: float, action) -> threading.Timer:
    t = threading.Timer(seconds, action)
    t.daemon = True
    t.start()
    return t


# -- delivered -----------------------------------------------------------------------------


@pytest.mark.parametrize("enrich", [True, False])
def test_delivered_first_time(standin, client, stop, enrich):
    items = make_items(5)
    result = BatchSender(client, FAST, stop).send(make_batch(items, enrich))
    assert result.delivered == items
    assert result.refused == [] and result.abandoned == [] and result.failure is None
    [batch] = standin.batches()
    assert batch.location_enrichment is enrich
    assert batch.events == [item.event for item in items]


def test_an_event_json_cannot_carry_is_refused_alone_and_the_rest_delivered(standin, client, stop):
    items = make_items(5)
    items[3].event["properties"] = {"x": "\ud800"}  # a lone surrogate: neither encoder can write it
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert result.delivered == items[:3] + items[4:]
    [(refused, reason)] = result.refused
    assert refused is items[3]
    assert reason.startswith("the event cannot be encoded as JSON")
    assert [e["name"] for e in standin.events()] == [i.event["name"] for i in items if i is not items[3]]


def test_transient_errors_are_retried_until_delivered(standin, client, stop):
    items = make_items(3)
    standin.fail_next(3, 503)
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert result.delivered == items and result.refused == [] and result.abandoned == []
    assert [r.status for r in standin.requests()] == [503, 503, 503, 204]
    assert len(standin.events()) == 3  # the failed tries stored nothing


def test_retries_until_the_outage_heals(standin, client, stop):
    items = make_items(2)
    standin.fail_always(500)
    healer = timer(0.15, standin.heal)
    started = time.monotonic()
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    elapsed = time.monotonic() - started
    healer.join(1)
    assert result.delivered == items
    assert 0.1 <= elapsed < 2.0
    statuses = [r.status for r in standin.requests()]
    assert statuses[-1] == 204 and statuses.count(500) >= 3 and set(statuses[:-1]) == {500}


def test_dropped_connections_are_retried(standin, client, stop):
    items = make_items(2)
    standin.drop_next(2)
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert result.delivered == items
    assert [r.status for r in standin.requests()] == [0, 0, 204]


def test_timeouts_are_retried_and_may_duplicate(standin, make_client, stop):
    short = make_client(standin.base_url, timeout_s=0.1)
    items = make_items(2)
    standin.set_delay(0.25)
    timer(0.12, standin.heal)  # the first try times out; a later one is answered in time
    result = BatchSender(short, FAST, stop).send(make_batch(items))
    assert result.delivered == items
    # The timed-out request was still accepted, late: at least once, never lost.
    standin.wait_for_events(4, timeout_s=2.0)
    assert names(standin.events()).count("evt_0") >= 2


def test_retry_after_is_honoured(standin, client, stop):
    standin.fail_next(1, 429, retry_after="0.3")
    started = time.monotonic()
    result = BatchSender(client, FAST, stop).send(make_batch(make_items(1)))
    elapsed = time.monotonic() - started
    assert len(result.delivered) == 1
    assert 0.3 <= elapsed < 1.5  # FAST alone would have retried after a few ms
    assert [r.status for r in standin.requests()] == [429, 204]


def test_without_retry_after_the_backoff_is_used(standin, client, stop):
    standin.fail_next(1, 429)
    started = time.monotonic()
    result = BatchSender(client, FAST, stop).send(make_batch(make_items(1)))
    assert len(result.delivered) == 1
    assert time.monotonic() - started < 0.25  # the control for the test above


class Health:
    def __init__(self):
        self.waits: list[float] = []

    def error_answered(self, wait_s: float) -> None:
        self.waits.append(wait_s)


def test_answered_errors_tell_health_it_is_an_outage_and_timeouts_do_not(standin, make_client, stop):
    health = Health()
    standin.fail_next(2, 503, retry_after="0.05")
    result = BatchSender(make_client(standin.base_url), FAST, stop, health=health).send(make_batch(make_items(1)))
    assert len(result.delivered) == 1 and len(health.waits) == 2 and all(w >= 0.05 for w in health.waits)
    quiet = Health()
    standin.drop_next(2)  # no answer at all: that is what a stall looks like
    BatchSender(make_client(standin.base_url), FAST, stop, health=quiet).send(make_batch(make_items(1)))
    assert quiet.waits == []


def test_each_delivered_batch_carries_the_time_of_its_answer(standin, client, stop):
    before = time.time()
    result = BatchSender(client, FAST, stop).send(make_batch(make_items(2)))
    assert before <= result.delivered_at <= time.time()


# -- refused -------------------------------------------------------------------------------


def test_one_refused_event_among_50_is_isolated_and_the_other_49_delivered(standin, client, stop):
    items = make_items(50)
    standin.reject_events(lambda e: e["name"] == "evt_17")
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert [item for item, _ in result.refused] == [items[17]]
    reason = result.refused[0][1]
    assert reason.startswith("UserFlux refused the event: HTTP 400")
    assert "refused by a reject rule" in reason
    expected = [item for item in items if item is not items[17]]
    assert sorted(names(result.delivered)) == sorted(names(expected))
    assert result.abandoned == [] and result.failure is None
    accepted = names(standin.events())
    assert sorted(accepted) == sorted(names(expected))  # exactly those 49, each once
    assert len(accepted) == 49
    assert len(standin.requests()) <= 13  # halving: about 2 * log2(50) + 1 requests, not 50


def test_several_refused_events_are_all_isolated(standin, client, stop):
    items = make_items(50)
    bad = {"evt_0", "evt_1", "evt_24", "evt_25", "evt_49"}
    standin.reject_events(lambda e: e["name"] in bad)
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert sorted(names(item for item, _ in result.refused)) == sorted(bad)
    assert len(result.delivered) == 45
    assert sorted(names(standin.events())) == sorted(names(result.delivered))
    assert not set(names(result.delivered)) & bad


def test_a_refused_request_is_split_even_when_every_event_is_fine(standin, client, stop):
    items = make_items(4)
    standin.fail_next(1, 413)  # e.g. the body was too large as a whole
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert result.refused == []
    assert sorted(names(result.delivered)) == sorted(names(items))
    assert [r.status for r in standin.requests()] == [413, 204, 204]


def test_a_single_refused_event_is_reported_not_retried(standin, client, stop):
    items = make_items(1)
    standin.fail_always(422)
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert [(item, "422" in reason) for item, reason in result.refused] == [(items[0], True)]
    assert result.delivered == [] and result.abandoned == []
    assert len(standin.requests()) == 1


# -- fatal -----------------------------------------------------------------------------------


def test_wrong_key_is_an_auth_error_and_nothing_is_delivered_or_refused(standin, make_client, stop):
    wrong = make_client(standin.base_url, key="not-the-key")
    items = make_items(3)
    result = BatchSender(wrong, FAST, stop).send(make_batch(items))
    assert isinstance(result.failure, AuthError)
    assert result.abandoned == items
    assert result.delivered == [] and result.refused == []
    assert len(standin.requests()) == 1  # not retried
    assert "not-the-key" not in str(result.failure) and API_KEY not in str(result.failure)


def test_403_is_an_auth_error(standin, client, stop):
    standin.fail_next(1, 403)
    items = make_items(2)
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert isinstance(result.failure, AuthError)
    assert result.abandoned == items and result.delivered == [] and result.refused == []
    assert "evt_0" in str(result.failure)  # names the events, to diagnose a restricted key


def test_a_refused_key_names_its_destination_and_the_key_to_fix(standin, make_client, stop):
    wrong = make_client(standin.base_url, key="not-the-mobile-key")
    gate = Gate(FAST, destination="mobile")
    result = BatchSender(wrong, FAST, stop, gate=gate).send(make_batch(make_items(1)))
    assert isinstance(result.failure, AuthError)
    assert str(result.failure).startswith("UserFlux refused the write key of destination 'mobile': HTTP 401")
    assert "The key in userflux.destinations.mobile.api_key is wrong" in str(result.failure)
    default = BatchSender(wrong, FAST, stop).send(make_batch(make_items(1))).failure
    assert str(default).startswith("UserFlux refused the write key: HTTP 401")
    assert "The key in userflux.api_key is wrong" in str(default)


def test_a_wrong_address_names_its_destination(standin, make_client, stop):
    wrong = make_client(standin.base_url + "/api")
    result = BatchSender(wrong, FAST, stop, gate=Gate(FAST, destination="mobile")).send(make_batch(make_items(1)))
    assert isinstance(result.failure, DeliveryConfigError)
    assert "of destination 'mobile': no retry can fix this; check userflux.destinations.mobile.base_url" in str(
        result.failure
    )


def test_wrong_base_url_is_a_delivery_config_error(standin, make_client, stop):
    wrong = make_client(standin.base_url + "/api")
    items = make_items(2)
    result = BatchSender(wrong, FAST, stop).send(make_batch(items))
    assert isinstance(result.failure, DeliveryConfigError)
    assert "404" in str(result.failure)
    assert result.abandoned == items and result.delivered == [] and result.refused == []


class ScriptedClient:
    """Answers from a script, to reach states the stand-in cannot be timed into."""

    url = "https://integration-api.userflux.co/event/ingest/batch"

    def __init__(self, *answers: Outcome):
        self.answers = list(answers)
        self.bodies: list[list[str]] = []

    def post_batch(self, body: bytes, location_enrichment: bool, admit=None) -> Outcome:
        self.bodies.append([e["name"] for e in json.loads(body)["events"]])
        return self.answers.pop(0)


def test_an_auth_error_while_splitting_abandons_every_unfinished_event(stop):
    items = make_items(4)
    client = ScriptedClient(
        Outcome(REJECT, "400", "HTTP 400"),  # [0..3]
        Outcome(REJECT, "400", "HTTP 400"),  # [0, 1]
        Outcome(REJECT, "400", "HTTP 400"),  # [0] refused
        Outcome(AUTH, "401", "HTTP 401"),  # [1]: the key was revoked meanwhile
    )
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert isinstance(result.failure, AuthError)
    assert [item for item, _ in result.refused] == [items[0]]
    assert result.abandoned == [items[1], items[2], items[3]]  # [2, 3] never sent
    assert result.delivered == []
    assert client.bodies == [names(items), ["evt_0", "evt_1"], ["evt_0"], ["evt_1"]]


def test_every_item_ends_in_exactly_one_list(stop):
    items = make_items(6)
    client = ScriptedClient(
        Outcome(REJECT, "400", "x"),  # [0..5]
        Outcome(DELIVERED, "204", ""),  # [0..2]
        Outcome(RETRY, "503", "x"),
        Outcome(REJECT, "400", "x"),  # [3..5]: retried, then refused
        Outcome(DELIVERED, "204", ""),  # [3]
        Outcome(REJECT, "400", "x"),  # [4, 5]
        Outcome(REJECT, "400", "x"),  # [4] refused
        Outcome(DELIVERED, "204", ""),  # [5]
    )
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    finished = result.delivered + [i for i, _ in result.refused] + result.abandoned
    assert sorted(id(i) for i in finished) == sorted(id(i) for i in items)
    assert names(i for i, _ in result.refused) == ["evt_4"]
    assert names(result.delivered) == ["evt_0", "evt_1", "evt_2", "evt_3", "evt_5"]
    assert client.answers == []


# -- giving up -------------------------------------------------------------------------------


def test_max_attempts_gives_up_and_refuses_with_a_reason(standin, client, stop):
    items = make_items(3)
    standin.fail_always(503)
    policy = RetryPolicy(0.002, 0.01, max_attempts=3)
    result = BatchSender(client, policy, stop).send(make_batch(items))
    assert [item for item, _ in result.refused] == items
    reason = result.refused[0][1]
    assert "after 3 attempts" in reason and "503" in reason
    assert result.delivered == [] and result.abandoned == [] and result.failure is None
    assert len(standin.requests()) == 3


def test_stop_during_backoff_abandons_quickly(standin, client, stop):
    items = make_items(3)
    standin.fail_always(500)
    slow = RetryPolicy(initial_backoff_s=5.0, max_backoff_s=5.0)
    timer(0.1, stop.set)
    started = time.monotonic()
    result = BatchSender(client, slow, stop).send(make_batch(items))
    assert time.monotonic() - started < 1.0
    assert result.abandoned == items
    assert result.delivered == [] and result.refused == [] and result.failure is None
    assert len(standin.requests()) == 1


def test_stop_already_set_sends_nothing(standin, client, stop):
    stop.set()
    items = make_items(2)
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert result.abandoned == items and result.delivered == []
    assert standin.requests() == []


def test_revoked_partition_is_abandoned_without_sending(standin, client, stop):
    part = PartitionOffsets("events", 0)
    items = make_items(2, part)
    part.owned = False
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert result.abandoned == items and result.delivered == []
    assert standin.requests() == []


def test_revoked_during_retries_is_abandoned(standin, client, stop):
    part = PartitionOffsets("events", 0)
    items = make_items(2, part)
    standin.fail_always(503)
    timer(0.1, lambda: setattr(part, "owned", False))
    started = time.monotonic()
    result = BatchSender(client, RetryPolicy(0.02, 0.02), stop).send(make_batch(items))
    assert time.monotonic() - started < 1.0
    assert result.abandoned == items and result.delivered == [] and result.refused == []
    assert len(standin.requests()) >= 2


class RevokedDuringTheHold(Gate):
    """A gate on a fake clock: a sender that finds it held waits the hold out, and the
    partition ``part`` is revoked meanwhile."""

    def __init__(self, policy: RetryPolicy, part: PartitionOffsets):
        super().__init__(policy, clock=FakeClock(100.0))
        self.part = part
        self.held_waits: list[str] = []  # the cause of each hold a sender waited out

    def wait(self, stop, events=0):
        if self.clock() < self.until:
            self.held_waits.append(self.cause)
            self.part.owned = False  # a rebalance, while the sender waits
            self.clock.advance(self.until - self.clock())
        return super().wait(stop, events)


def test_a_batch_revoked_while_it_waits_at_the_gate_is_abandoned_not_sent(stop):
    # Checked after the wait, not only before it: a Retry-After can hold a batch for
    # minutes, and its partition's next owner is sending the same events by then.
    part = PartitionOffsets("events", 0)
    items = make_items(3, part)
    gate = RevokedDuringTheHold(FAST, part)
    client = ScriptedClient(Outcome(RETRY, "429", "HTTP 429", retry_after_s=30.0), Outcome(DELIVERED, "204", ""))
    result = BatchSender(client, FAST, stop, gate=gate).send(make_batch(items))
    assert gate.held_waits == ["retry_after"]
    assert client.bodies == [names(items)]  # the first request only
    assert result.abandoned == items and result.delivered == [] and result.refused == []


def test_a_batch_with_one_partition_still_owned_is_sent(standin, client, stop):
    kept, revoked = PartitionOffsets("events", 0), PartitionOffsets("events", 1)
    items = make_items(2, kept) + make_items(2, revoked)
    revoked.owned = False
    result = BatchSender(client, FAST, stop).send(make_batch(items))
    assert result.delivered == items
    assert len(standin.events()) == 4


def test_a_retry_after_told_to_one_batch_holds_every_other_batch(standin, client, stop):
    sender = BatchSender(client, FAST, stop)  # one sender object, as the pool shares it
    standin.fail_next(1, 429, retry_after="0.5")
    first = threading.Thread(target=sender.send, args=(make_batch(make_items(1)),))
    first.start()
    deadline = time.monotonic() + 5
    while sender.gate.until <= time.monotonic() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the first batch's sender has read the 429
    started = time.monotonic()
    result = sender.send(make_batch(make_items(1)))  # never refused itself
    assert len(result.delivered) == 1 and time.monotonic() - started >= 0.3
    first.join(5)
    assert [r.status for r in standin.requests()] == [429, 204, 204]


def test_a_hold_that_began_while_the_connection_opened_is_waited_out(standin, client, stop, monkeypatch):
    # A slow connect (SYN resends, a TLS handshake far away) must not carry a request past
    # a Retry-After another sender was told meanwhile.
    opening, opened = threading.Event(), threading.Event()
    real_open = connection_module.Connection.open

    def slow_open(*args, **kwargs):
        opening.set()
        time.sleep(0.3)
        connection = real_open(*args, **kwargs)
        opened.set()
        return connection

    monkeypatch.setattr(connection_module.Connection, "open", slow_open)
    sender = BatchSender(client, FAST, stop)
    results = []
    thread = threading.Thread(target=lambda: results.append(sender.send(make_batch(make_items(1)))))
    thread.start()  # a new thread: it opens a connection of its own
    assert opening.wait(5)
    ticket = sender.gate.try_pass()  # another sender is told Retry-After: 0.5 while this one connects
    told_at = time.monotonic()
    assert ticket is not None and sender.gate.report(ticket, True, 0.5) >= 0.5
    thread.join(5)
    assert opened.is_set() and len(results) == 1 and len(results[0].delivered) == 1
    [request] = standin.requests()
    assert request.status == 204 and request.received_at >= told_at + 0.5
