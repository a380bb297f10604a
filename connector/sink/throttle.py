"""One gate in front of every sender: UserFlux throttles the key, not one request.

* A ``Retry-After`` on any answer holds every sender until that time, including batches
  that were not refused themselves: no request goes out before the server asked.
* When requests keep failing (``FAILING_AFTER`` in a row, across senders, with no
  success between), UserFlux is down rather than flaking. The senders then back off
  together, on one exponential schedule (retry.py's), and only one request at a time
  probes whether it is back; the first success opens the gate for all.
* An isolated failure does not close the gate: only its own batch waits (sender.py).

Every sender calls ``wait`` (or, on the pipeline's thread, ``try_pass``) before each
request, ``admits`` once its connection is open, and ``report`` with the answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .retry import RetryPolicy

FAILING_AFTER = 3  # failures in a row that mean UserFlux is failing, not flaking
_SLICE_S = 0.1  # waits are sliced so a stop is noticed promptly


@dataclass(frozen=True)
class Ticket:
    """Leave to send one request: when, and whether it is the probe."""

    sent_at: float
    probe: bool


class Gate:
    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.clock = clock
        self._cond = threading.Condition()
        self.until = 0.0  # nobody sends before this
        self.cause = "backoff"  # why the gate is held: backoff or retry_after
        self.streak = 0  # retryable failures in a row, across senders
        self.level = 0  # rounds of shared backoff since the last success
        self._round_at = float("-inf")  # when the current backoff round began
        self._probing = False

    @property
    def failing(self) -> bool:
        return self.streak >= FAILING_AFTER

    def wait(self, stop: threading.Event) -> tuple[Ticket | None, float, str]:
        """Block until this sender may send. Returns (ticket, seconds waited, why); the
        ticket is None when ``stop`` was set meanwhile."""
        started = self.clock()
        cause = self.cause
        with self._cond:
            while not stop.is_set():
                now = self.clock()
                if now < self.until:
                    cause = self.cause
                    self._cond.wait(min(_SLICE_S, self.until - now))
                elif self.failing and self._probing:
                    self._cond.wait(_SLICE_S)  # one probe at a time while UserFlux fails
                else:
                    self._probing = self._probing or self.failing
                    return Ticket(now, self.failing), now - started, cause
        return None, self.clock() - started, cause

    def try_pass(self) -> Ticket | None:
        """A ticket if ``wait`` would give one now, else None (without waiting)."""
        with self._cond:
            now = self.clock()
            if now < self.until or (self.failing and self._probing):
                return None
            self._probing = self._probing or self.failing
            return Ticket(now, self.failing)

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

    def cancel(self, ticket: Ticket) -> None:
        """The ticket was not used (the sender stopped): free the probe."""
        if ticket.probe:
            with self._cond:
                self._probing = False
                self._cond.notify_all()

    def _hold(self, until: float, cause: str) -> None:
        if until > self.until:
            self.until, self.cause = until, cause
