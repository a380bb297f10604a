"""Waiting for the schema registry: a message whose writer schema cannot be fetched now
is not invalid, so it is neither dead-lettered nor passed; reading stops until the
registry answers.

When the registry does not answer (unreachable, a timeout, 5xx; formats/registry.py
tells these apart from a 404 or a refusal), the pipeline hands this module the message
and every message read after it in the same call, in order: they are *held*, as if not
read yet (the offset tracker forgets the first, so the commit stops right below it and
nothing after it is committed). Every partition is paused in Kafka, so nothing more is
fetched, while the loop goes on serving completions, commits, rebalances and probes.
The held messages are tried again after a backoff that doubles from
``schema_registry.initial_backoff_ms`` up to ``max_backoff_ms``; each try is one fetch,
bounded by ``schema_registry.request_timeout_s``. When they all pass, the partitions this
wait paused are resumed. /healthz says why reading waits (``registry_unavailable``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import metrics
from .backpressure import Pausable
from .health import Status
from .kafka import Key

log = logging.getLogger("connector.pipeline")


class RegistryWait:
    def __init__(
        self,
        source: Pausable,
        status: Status,
        initial_backoff_s: float,
        max_backoff_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.source = source
        self.status = status
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.held: list[Any] = []  # messages not mapped yet, in the order read
        self.attempts = 0  # failed tries in a row
        self.retry_at = 0.0
        self.paused: set[Key] = set()  # what this wait paused in Kafka
        self.since: float | None = None

    @property
    def waiting(self) -> bool:
        return self.since is not None

    def hold(self, messages: list[Any], reason: str) -> None:
        """The first of ``messages`` needs the registry, which did not answer: hold them."""
        now = self.clock()
        self.held = list(messages) + self.held  # a retry's leftovers come before anything read since
        self.attempts += 1
        delay = min(self.max_backoff_s, self.initial_backoff_s * 2 ** min(self.attempts - 1, 30))
        self.retry_at = now + delay
        if self.since is None:
            self.since = now
            self.paused = set(self.source.assignment())
            self.source.pause(self.paused)
            metrics.schema_registry_waiting.set(1)
            log.warning("%s; reading waits for the schema registry (nothing is dead-lettered meanwhile)", reason)
        elif self.attempts in (2, 5) or self.attempts % 20 == 0:
            log.warning("%s (try %d, waiting %.0fs; next in %.1fs)", reason, self.attempts, now - self.since, delay)
        self.status.registry_unavailable(reason)

    def add(self, messages: list[Any]) -> None:
        """Messages read while waiting (a fetch already under way when the pause came)."""
        self.held.extend(messages)

    def due(self) -> bool:
        return self.waiting and self.clock() >= self.retry_at

    def take(self) -> list[Any]:
        """The held messages, to try again."""
        held, self.held = self.held, []
        return held

    def settle(self, still_paused: set[Key] | None = None, why: str = "the schema registry answered") -> None:
        """After a try: if nothing is held any more, the registry answered: read again.
        ``still_paused``: partitions backpressure holds paused, which stay so."""
        if self.since is None or self.held:
            return
        waited = self.clock() - self.since
        resume = (self.paused - (still_paused or set())) & set(self.source.assignment())
        if resume:
            self.source.resume(resume)
        log.info("%s after %.1fs: reading again", why, waited)
        self.since, self.attempts, self.paused = None, 0, set()
        metrics.schema_registry_waiting.set(0)
        self.status.registry_unavailable(None)

    def assigned(self, keys: list[Key]) -> None:
        """Partitions assigned while waiting are paused too."""
        if self.since is not None and keys:
            self.source.pause(keys)
            self.paused |= set(keys)

    def release(self, keys: Iterable[Key]) -> None:
        """Partitions revoked or lost: their held messages go (the next owner reads them)."""
        gone = set(keys)
        if not gone:
            return
        self.paused -= gone
        if self.held:
            self.held = [m for m in self.held if (m.topic(), m.partition()) not in gone]
        if self.since is not None and not self.held:
            self.settle(why="the partitions waiting for the schema registry went to another member")
