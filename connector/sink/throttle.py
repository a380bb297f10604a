"""One gate in front of every sender of a destination: UserFlux throttles the key, not one
request, and each destination (each key) has a gate of its own, so one project being
throttled never holds back another.

* A ``Retry-After`` on any answer holds every sender until that time, including batches
  that were not refused themselves: no request goes out before the server asked.
* When requests keep failing (``FAILING_AFTER`` in a row, across senders, with no
  success between), UserFlux is down rather than flaking. The senders then back off
  together, on one exponential schedule (retry.py's), and only one request at a time
  probes whether it is back; the first success opens the gate for all.
* An isolated failure does not close the gate: only its own batch waits (sender.py).
* A send-rate cap (``max_events_per_second``, ``max_requests_per_second``; ratecap.py)
  spaces the requests: a sender waits its turn here, and the pipeline's thread, which
  never waits, hands the batch to the sender threads instead (direct.py).

Every sender calls ``wait`` (or, on the pipeline's thread, ``try_pass``) before each
request, ``admits`` once its connection is open, and ``report`` with the answer; a
ticket that was not used goes back with ``cancel``. The time waited here is counted by
cause: ``retry_wait_seconds_total`` (backoff, retry_after) and ``rate_cap_wait_seconds_total``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..config.model import DEFAULT_DESTINATION
from .ratecap import RateCap
from .retry import RetryPolicy

RATE_CAP = "rate_cap"  # the cause of a wait for the rate cap
FAILING_AFTER = 3  # failures in a row that mean UserFlux is failing, not flaking
_SLICE_S = 0.1  # waits are sliced so a stop is noticed promptly


@dataclass(frozen=True)
class Ticket:
    """Leave to send one request: when, whether it is the probe, and its events (what it
    took of the rate cap)."""

    sent_at: float
    probe: bool
    events: int = 0


class Gate:
    def __init__(
        self,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        cap: RateCap | None = None,
        destination: str = DEFAULT_DESTINATION,
    ):
        self.policy = policy
        self.clock = clock
        self.cap = cap
        self.destination = destination  # the metrics' label
        self._waited: dict[str, Any] = {}  # the counters of the time waited, by cause
        if cap is not None:  # from 0, so that the first wait shows in increase()
            self._counter(RATE_CAP)
        self._cond = threading.Condition()
        self.until = 0.0  # nobody sends before this
        self.cause = "backoff"  # why the gate is held: backoff or retry_after
        self.streak = 0  # retryable failures in a row, across senders
        self.level = 0  # rounds of shared backoff since the last success
        self._round_at = float("-inf")  # when the current backoff round began
        self._probing = False
        self._turns: deque[object] = deque()  # the senders waiting for the rate cap, in order

    @property
    def failing(self) -> bool:
        return self.streak >= FAILING_AFTER

    def wait(self, stop: threading.Event, events: int = 0) -> tuple[Ticket | None, float, str]:
        """Block until this sender may send a request of ``events`` events. Returns
        (ticket, seconds waited, why: the cause of the last wait); the ticket is None when
        ``stop`` was set meanwhile. The time waited is counted, by cause."""
        started = self.clock()
        cause = self.cause
        waits: dict[str, float] = {}
        turn: object | None = None  # our place in the queue for the rate cap, once we wait for it
        try:
            with self._cond:
                while not stop.is_set():
                    now = self.clock()
                    if now < self.until:
                        cause = self.cause
                        pause = min(_SLICE_S, self.until - now)
                    elif self.failing and self._probing:
                        pause = _SLICE_S  # one probe at a time while UserFlux fails
                    elif self.cap is not None and (
                        (self._turns and self._turns[0] is not turn) or self.cap.wait_s(now) > 0
                    ):
                        # The cap's turns are taken in order: batches are sent in the order
                        # they came, so offsets complete in order and none waits behind luckier ones.
                        if turn is None:
                            turn = object()
                            self._turns.append(turn)
                        cause = RATE_CAP
                        pause = min(_SLICE_S, self.cap.wait_s(now)) if self._turns[0] is turn else _SLICE_S
                    else:
                        if turn is not None:
                            self._turns.popleft()  # ours: the next in line may go next
                            turn = None
                            self._cond.notify_all()
                        return self._ticket(now, events), now - started, cause
                    self._cond.wait(pause)
                    waits[cause] = waits.get(cause, 0.0) + self.clock() - now
            return None, self.clock() - started, cause
        finally:
            if turn is not None:  # stopped while in line
                with self._cond:
                    self._turns.remove(turn)
                    self._cond.notify_all()
            for why, seconds in waits.items():
                self._counter(why).inc(seconds)

    def try_pass(self, events: int = 0) -> Ticket | None:
        """A ticket if ``wait`` would give one now, else None (without waiting, and without
        jumping the queue of the senders waiting for the rate cap)."""
        with self._cond:
            now = self.clock()
            if now < self.until or (self.failing and self._probing):
                return None
            if self.cap is not None and (self._turns or self.cap.wait_s(now) > 0):
                return None
            return self._ticket(now, events)

    def _ticket(self, now: float, events: int) -> Ticket:
        """Leave to send, now (under the lock)."""
        self._probing = self._probing or self.failing
        if self.cap is not None:
            self.cap.take(now, events)
        return Ticket(now, self.failing, events)

    def _counter(self, cause: str) -> Any:
        counter = self._waited.get(cause)
        if counter is None:
            counter = self._waited[cause] = (
                metrics.rate_cap_wait.labels(self.destination)
                if cause == RATE_CAP
                else metrics.retry_wait.labels(cause, self.destination)
            )
        return counter

    def admits(self, ticket: Ticket) -> bool:
        """Whether a ticket's request may still go out: no hold is on. Asked once its
        connection is open, which can take long enough for another sender's Retry-After or
        the shared backoff to begin meanwhile."""
        return self.clock() >= self.until

    def report(self, ticket: Ticket, retryable: bool, retry_after_s: float | None = None) -> float:
        """The answer to a ticket's request; returns how long the gate now holds (0: open)."""
        with self._cond:
            now = self.clock()
            if ticket.probe:
                self._probing = False
            if not retryable:  # an answer that is not a failure of UserFlux's: it is up
                self.streak, self.level = 0, 0
            else:
                self.streak += 1
                if retry_after_s is not None:  # with a little jitter, so replicas spread out
                    self._hold(now + self.policy.delay(1, retry_after_s), "retry_after")
                # One step up the schedule per round: failures of requests sent before
                # this round began are the same outage, already counted.
                if self.failing and ticket.sent_at >= self._round_at:
                    self.level += 1
                    self._round_at = now
                    self._hold(now + self.policy.delay(self.level), "backoff")
            self._cond.notify_all()
            return max(0.0, self.until - now)

    def cancel(self, ticket: Ticket, sent: bool = False) -> None:
        """The ticket's request will have no answer: free the probe. Unless it was ``sent``
        (abandoned at a stop), nothing went out (the sender stopped, or a hold began while it
        connected), so what it took of the rate cap is given back."""
        refund = self.cap is not None and not sent
        if ticket.probe or refund:
            with self._cond:
                if ticket.probe:
                    self._probing = False
                if refund:
                    assert self.cap is not None
                    self.cap.refund(ticket.events)
                self._cond.notify_all()

    def _hold(self, until: float, cause: str) -> None:
        if until > self.until:
            self.until, self.cause = until, cause
