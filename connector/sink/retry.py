"""When to try a failed request again.

Exponential backoff with jitter: attempt n waits a random time between half and all of
``min(max, initial * 2^(n-1))``, so replicas that failed together do not retry together.
A ``Retry-After`` from the server wins over the backoff: we never retry sooner than asked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

# A Retry-After beyond this is a server mistake; waiting an hour still keeps the data.
MAX_RETRY_AFTER_S = 3600.0


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # asctime and "-0000" dates: HTTP dates are always GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class RetryPolicy:
    def __init__(
        self,
        initial_backoff_s: float,
        max_backoff_s: float,
        max_attempts: int = 0,
        rng: Callable[[], float] = random.random,
    ):
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_attempts = max_attempts  # 0: forever
        self.rng = rng

    def gives_up(self, attempts: int) -> bool:
        return self.max_attempts > 0 and attempts >= self.max_attempts

    def delay(self, attempts: int, retry_after_s: float | None = None) -> float:
        """The wait before the next try, after ``attempts`` failed tries (1, 2, ...)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * (2 ** min(attempts - 1, 32)))
        backoff = ceiling / 2 + self.rng() * ceiling / 2
        if retry_after_s is not None:
            # Honour the server, plus a little jitter so replicas spread out.
            return retry_after_s + self.rng() * min(1.0, retry_after_s / 10 + 0.05)
        return backoff
