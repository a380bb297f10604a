"""connector/sink/ratecap.py, and the gate that applies it (throttle.py): requests spaced to the cap."""

from __future__ import annotations

import threading
import time

import pytest

from connector import metrics
from connector.sink.ratecap import SLACK_S, RateCap
from connector.sink.retry import RetryPolicy
from connector.sink.throttle import Gate

NO_JITTER = RetryPolicy(initial_backoff_s=0.2, max_backoff_s=5, rng=lambda: 1.0)


class Clock:
    """A clock that moves only when told, and by as much as a sender waits on it."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class WaitingGate(Gate):
    """A gate on a fake clock whose waits move that clock instead of sleeping."""

    def __init__(self, cap: RateCap, destination: str = "capped"):
        self.fake = Clock()
        super().__init__(NO_JITTER, clock=self.fake, cap=cap, destination=destination)
        self._cond = _Jump(self.fake)


class _Jump:
    """Stands in for the gate's Condition: wait(t) advances the fake clock by t."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait(self, timeout: float) -> None:
        self.clock.now += timeout

    def notify_all(self) -> None:
        pass


def send_times(gate: WaitingGate, batches: list[int]) -> list[float]:
    stop = threading.Event()
    found = []
    for events in batches:
        ticket, _, _ = gate.wait(stop, events)
        assert ticket is not None
        found.append(ticket.sent_at)
    return found


def test_an_events_cap_spaces_requests_by_their_events():
    gate = WaitingGate(RateCap(events_per_s=100))
    times = send_times(gate, [50, 50, 10, 50])
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # 50 events at 100/s: the next request half a second later (less the slack, once).
    assert gaps == pytest.approx([0.5 - SLACK_S, 0.5, 0.1])


def test_a_requests_cap_spaces_requests_whatever_their_size():
    gate = WaitingGate(RateCap(requests_per_s=4))
    times = send_times(gate, [1, 50, 50, 50, 50])
    assert times[-1] - times[0] == pytest.approx(4 * 0.25 - SLACK_S)


def test_with_both_caps_the_stricter_one_spaces_each_request():
    cap = RateCap(events_per_s=100, requests_per_s=20)
    assert cap.cost(50) == pytest.approx(0.5) and cap.cost(1) == pytest.approx(0.05)
    assert cap.describe() == "100 events/s and 20 requests/s"


def test_the_rate_over_a_long_run_is_the_cap_and_never_above_it():
    gate = WaitingGate(RateCap(events_per_s=250))
    times = send_times(gate, [50] * 200)
    window = times[-1] - times[0]
    # 199 spacings of 0.2 s, the first one shortened by the slack: at most cap * (W + slack).
    assert 199 * 50 / window == pytest.approx(250 * 39.8 / (39.8 - SLACK_S))
    assert 199 * 50 <= 250 * (window + SLACK_S) + 1e-6


def test_a_sender_that_wakes_late_by_less_than_the_slack_loses_no_rate():
    cap = RateCap(events_per_s=100)
    now = 0.0
    cap.take(now, 10)  # the next may go at 0.1 - slack
    assert cap.wait_s(now) == pytest.approx(0.1 - SLACK_S)
    now = 0.1 - SLACK_S + 0.03  # woke 30 ms late
    assert cap.wait_s(now) == 0.0
    cap.take(now, 10)
    assert cap.wait_s(now) == pytest.approx(0.2 - SLACK_S - now)  # still counted from 0.1, not from now


def test_after_a_quiet_spell_there_is_no_burst_beyond_the_slack():
    cap = RateCap(events_per_s=100)
    cap.take(0.0, 50)
    cap.take(100.0, 50)  # long after: counts from now
    assert cap.wait_s(100.0) == pytest.approx(0.5 - SLACK_S)


def test_a_refunded_request_gives_its_time_back():
    cap = RateCap(events_per_s=100)
    cap.take(0.0, 50)
    cap.take(0.45, 50)
    cap.refund(50)
    assert cap.wait_s(0.45) == pytest.approx(0.5 - SLACK_S - 0.45)


def test_a_cap_needs_a_rate():
    with pytest.raises(ValueError):
        RateCap()


# -- at the gate --------------------------------------------------------------------------------


def test_the_pipelines_thread_is_refused_while_the_cap_says_wait_and_passes_after():
    gate = WaitingGate(RateCap(events_per_s=100))
    first = gate.try_pass(50)
    assert first is not None and first.events == 50
    assert gate.try_pass(50) is None  # it never waits: the batch goes to a sender thread
    gate.fake.now += 0.5 - SLACK_S
    assert gate.try_pass(50) is not None


def test_a_cancelled_ticket_gives_its_share_of_the_cap_back():
    gate = WaitingGate(RateCap(events_per_s=100))
    ticket = gate.try_pass(50)
    assert ticket is not None and gate.try_pass(50) is None
    gate.cancel(ticket)  # not sent: a hold began while it connected
    assert gate.try_pass(50) is not None


def test_an_abandoned_request_that_was_sent_keeps_its_share():
    gate = WaitingGate(RateCap(events_per_s=100))
    ticket = gate.try_pass(50)
    assert ticket is not None
    gate.cancel(ticket, sent=True)
    assert gate.try_pass(50) is None


def test_time_waited_for_the_cap_is_counted_under_its_destination():
    counter = metrics.rate_cap_wait.labels("counted")
    before = counter._value.get()
    gate = WaitingGate(RateCap(events_per_s=100), destination="counted")
    send_times(gate, [50, 50, 50])
    assert counter._value.get() - before == pytest.approx(2 * 0.5 - SLACK_S)
    assert metrics.retry_wait.labels("backoff", "counted")._value.get() == 0


def test_a_retry_after_still_holds_a_capped_gate_and_is_counted_as_such():
    gate = WaitingGate(RateCap(requests_per_s=1000), destination="held")
    stop = threading.Event()
    ticket, _, _ = gate.wait(stop, 1)
    gate.report(ticket, retryable=True, retry_after_s=2.0)
    started = gate.fake.now
    ticket, waited, cause = gate.wait(stop, 1)
    assert ticket is not None and cause == "retry_after" and gate.fake.now - started >= 2.0
    assert metrics.retry_wait.labels("retry_after", "held")._value.get() >= 2.0


def test_two_gates_do_not_share_a_cap():
    web, mobile = WaitingGate(RateCap(events_per_s=10)), WaitingGate(RateCap(events_per_s=10))
    assert web.try_pass(50) is not None
    assert mobile.try_pass(50) is not None  # its own cap: the other's spending is not its


def test_senders_waiting_for_the_cap_take_their_turns_in_the_order_they_came():
    # Real threads and time: 10-event requests at 100 events/s, one every 0.1 s.
    gate, stop = Gate(NO_JITTER, cap=RateCap(events_per_s=100), destination="fifo"), threading.Event()
    assert gate.try_pass(10) is not None  # the cap is now spent for 0.1 s
    order: list[int] = []

    def sender(i: int) -> None:
        ticket, _, _ = gate.wait(stop, 10)
        assert ticket is not None
        order.append(i)

    threads = []
    for i in range(4):
        threads.append(threading.Thread(target=sender, args=(i,)))
        threads[-1].start()
        deadline = time.monotonic() + 2
        while len(gate._turns) < i + 1 and len(order) < i + 1:  # in line before the next one comes
            assert time.monotonic() < deadline
            time.sleep(0.001)
    assert gate.try_pass(10) is None  # the pipeline's thread does not jump the line
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3] and not gate._turns


def test_a_sender_stopped_while_in_line_leaves_it():
    gate, stop = Gate(NO_JITTER, cap=RateCap(events_per_s=1), destination="left"), threading.Event()
    assert gate.try_pass(10) is not None  # 10 s of the cap spent
    found: list = []
    waiter = threading.Thread(target=lambda: found.append(gate.wait(stop, 10)))
    waiter.start()
    deadline = time.monotonic() + 2
    while not gate._turns:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    stop.set()
    waiter.join(2)
    assert found[0][0] is None and not gate._turns
