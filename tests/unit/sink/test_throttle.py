"""connector/sink/throttle.py: one gate for every sender."""

from __future__ import annotations

import threading
import time

from connector.sink.retry import RetryPolicy
from connector.sink.throttle import FAILING_AFTER, Gate, Ticket
from tests.support.fakes import FakeClock

NO_JITTER = RetryPolicy(initial_backoff_s=0.2, max_backoff_s=5, rng=lambda: 1.0)


def open_gate() -> tuple[Gate, threading.Event]:
    return Gate(NO_JITTER), threading.Event()


def test_an_open_gate_lets_every_sender_through_at_once():
    gate, stop = open_gate()
    tickets = [gate.wait(stop) for _ in range(8)]
    assert all(t is not None and not t.probe and waited < 0.05 for t, waited, _ in tickets)


def test_a_retry_after_holds_every_sender_not_only_the_one_told():
    gate, stop = open_gate()
    first, _, _ = gate.wait(stop)
    other, _, _ = gate.wait(stop)  # in flight when the answer comes
    assert gate.report(first, retryable=True, retry_after_s=0.3) >= 0.3
    gate.report(other, retryable=False)  # a success does not lift the server's Retry-After
    started = time.monotonic()
    ticket, waited, cause = gate.wait(stop)  # a fresh batch, never refused itself
    assert ticket is not None and time.monotonic() - started >= 0.3 and waited >= 0.3 and cause == "retry_after"


def test_a_ticket_is_no_longer_admitted_once_a_hold_began():
    clock = FakeClock(100.0)
    gate, stop = Gate(NO_JITTER, clock=clock), threading.Event()
    connecting, _, _ = gate.wait(stop)
    told, _, _ = gate.wait(stop)
    assert gate.admits(connecting)
    gate.report(told, retryable=True, retry_after_s=1.0)
    assert not gate.admits(connecting)  # its sender waits again instead of writing
    clock.advance(1.2)
    assert gate.admits(connecting)


def test_an_isolated_failure_does_not_close_the_gate():
    gate, stop = open_gate()
    ticket, _, _ = gate.wait(stop)
    assert gate.report(ticket, retryable=True) == 0.0
    assert gate.wait(stop)[1] < 0.05 and not gate.failing


def test_failures_in_a_row_make_every_sender_back_off_together_and_one_probe():
    gate, stop = open_gate()
    in_flight = [gate.wait(stop)[0] for _ in range(FAILING_AFTER + 2)]
    holds = [gate.report(t, retryable=True) for t in in_flight]
    assert holds[: FAILING_AFTER - 1] == [0.0] * (FAILING_AFTER - 1)
    assert 0.15 < holds[FAILING_AFTER - 1] <= 0.2 + 1e-6 and gate.level == 1  # one round, however many were in flight
    probe, waited, cause = gate.wait(stop)
    assert probe.probe and waited >= 0.15 and cause == "backoff"
    blocked: list = []
    other = threading.Thread(target=lambda: blocked.append(gate.wait(stop)))
    other.start()
    other.join(0.3)
    assert other.is_alive()  # no second request while the probe is out
    gate.report(probe, retryable=True)  # the probe failed: the next round waits twice as long
    assert gate.level == 2 and 0.35 < gate.until - time.monotonic() <= 0.4 + 1e-6
    other.join(2)
    assert blocked and blocked[0][0].probe  # the next probe
    gate.report(blocked[0][0], retryable=False)  # UserFlux is back
    assert not gate.failing and gate.level == 0
    assert not gate.wait(stop)[0].probe


def test_a_cancelled_probe_frees_the_way_for_the_next():
    gate, stop = open_gate()
    for _ in range(FAILING_AFTER):
        gate.report(Ticket(time.monotonic(), False), retryable=True)
    gate.until = 0.0
    probe, _, _ = gate.wait(stop)
    gate.cancel(probe)
    assert gate.wait(stop)[0].probe


def test_a_stop_ends_the_wait():
    gate, stop = open_gate()
    gate.report(gate.wait(stop)[0], retryable=True, retry_after_s=60)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    ticket, _, _ = gate.wait(stop)
    assert ticket is None and time.monotonic() - started < 1.0
