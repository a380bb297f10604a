"""A destination's send-rate cap: at most so many events and/or requests per second.

Requests are spaced, not counted per window (the generic cell rate algorithm, GCRA): a
request of ``n`` events pushes the time the next one may go, ``due``, by the larger of
``n / events per second`` and ``1 / requests per second``, so the rate can only reach
the cap on average and never bursts above it after a quiet spell. A request may go ``SLACK_S``
before its time: a sender that wakes a little late then loses nothing, since the next
request's time is counted from the previous one's, not from when it went. Over any
window of ``W`` seconds a destination so sends at most ``cap * (W + SLACK_S)`` events
plus the one batch that starts at its end; a batch is never split to meet the cap.

Every request counts, retries and the halves of a split batch included: they all reach
UserFlux. A request given leave and then not sent gives its share back (``refund``).
The gate (throttle.py) asks, under its lock, on the clock it is given.
"""

from __future__ import annotations

SLACK_S = 0.05  # how early a request may go; what a late wake-up may cost without losing rate


class RateCap:
    def __init__(self, events_per_s: float | None = None, requests_per_s: float | None = None):
        if not events_per_s and not requests_per_s:
            raise ValueError("a rate cap needs events_per_s or requests_per_s")
        self.events_per_s = events_per_s
        self.requests_per_s = requests_per_s
        self._per_event = 1.0 / events_per_s if events_per_s else 0.0
        self._per_request = 1.0 / requests_per_s if requests_per_s else 0.0
        self._due = float("-inf")  # when the next request may go (less SLACK_S)

    def wait_s(self, now: float) -> float:
        """How long until a request may go (0: now)."""
        return max(0.0, self._due - SLACK_S - now)

    def take(self, now: float, events: int) -> None:
        """A request of ``events`` events goes now (``wait_s`` said it may)."""
        self._due = max(self._due, now) + self.cost(events)

    def refund(self, events: int) -> None:
        """A request given leave was not sent: the time it took is given back."""
        self._due -= self.cost(events)

    def cost(self, events: int) -> float:
        """The seconds one request of ``events`` events takes of the cap."""
        return max(events * self._per_event, self._per_request)

    def describe(self) -> str:
        parts = []
        if self.events_per_s:
            parts.append(f"{self.events_per_s:g} events/s")
        if self.requests_per_s:
            parts.append(f"{self.requests_per_s:g} requests/s")
        return " and ".join(parts)
