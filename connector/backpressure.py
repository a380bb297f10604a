"""Backpressure: memory stays bounded however long UserFlux is away.

When ``max_pending_messages`` messages are read but not yet committable (buffered, in
flight, or behind an unfinished one), the connector stops reading: it *holds*, taking
only completions, until half are done. A short hold is the ordinary rhythm of a
backlog: the main loop reads faster than UserFlux takes, and librdkafka keeps what it
has fetched, so reading resumes at once. A hold that lasts ``PAUSE_AFTER_S`` is an
outage: every owned partition is then paused in Kafka too, which drops librdkafka's
prefetched messages and lets the loop serve rebalances again while nothing is read
(a partition assigned meanwhile is paused at once). During an outage the connector holds
at most that many messages, and Kafka keeps the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from . import metrics
from .kafka import Key

log = logging.getLogger("connector.pipeline")

# A hold this long is not the rhythm of a backlog but an outage: pause in Kafka too.
PAUSE_AFTER_S = 2.0


class Pausable(Protocol):
    def assignment(self) -> set[Key]: ...
    def pause(self, keys: Iterable[Key]) -> None: ...
    def resume(self, keys: Iterable[Key]) -> None: ...


class Backpressure:
    def __init__(self, source: Pausable, limit: int, clock: Callable[[], float] = time.monotonic):
        self.source = source
        self.limit = limit
        self.clock = clock
        self.holding_since: float | None = None  # reading stopped, since then
        self.paused: set[Key] | None = None  # the partitions paused in Kafka, in a long hold

    @property
    def consuming(self) -> bool:
        """Whether the loop calls consume() now: while it does not hold, and while the
        hold has paused the partitions in Kafka (paused partitions give nothing, so
        consume() then only serves rebalance callbacks)."""
        return self.holding_since is None or self.paused is not None

    def room(self, pending: int) -> int:
        """How many more messages may be read now."""
        return self.limit - pending

    def apply(self, pending: int) -> None:
        if self.holding_since is None:
            if pending >= self.limit:
                self.holding_since = self.clock()
                metrics.paused.set(1)
        elif pending <= self.limit // 2:
            if self.paused is not None:
                self.source.resume(self.paused & self.source.assignment())
                log.info("%d messages pending: resuming consumption", pending)
                self.paused = None
                metrics.paused_partitions.set(0)
            self.holding_since = None
            metrics.paused.set(0)
        elif self.paused is None:
            if self.clock() - self.holding_since >= PAUSE_AFTER_S:
                self.paused = self.source.assignment()
                self.source.pause(self.paused)
                metrics.paused_partitions.set(len(self.paused))
                log.info(
                    "%d messages pending (limit %d) for %.0fs: pausing consumption until half are done",
                    pending,
                    self.limit,
                    PAUSE_AFTER_S,
                )
        else:
            newly_assigned = self.source.assignment() - self.paused
            if newly_assigned:
                self.source.pause(newly_assigned)
                self.paused |= newly_assigned
                metrics.paused_partitions.set(len(self.paused))

    def assigned(self, keys: list[Key]) -> None:
        """Partitions just assigned: set their pause in Kafka to what the hold says now.
        librdkafka keeps a partition's pause across losing it and getting it back, so a
        partition lost while paused would otherwise come back paused for good."""
        if not keys:
            return
        if self.paused is not None:
            self.source.pause(keys)
            self.paused |= set(keys)
            metrics.paused_partitions.set(len(self.paused))
        else:
            self.source.resume(keys)

    def release(self, keys: Iterable[Key]) -> None:
        """Partitions revoked or lost: no longer ours to resume."""
        if self.paused is not None:
            self.paused -= set(keys)
            metrics.paused_partitions.set(len(self.paused))
