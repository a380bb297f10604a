"""Backpressure: memory stays bounded however long UserFlux is away.

When ``max_pending_messages`` messages are read but not yet committable (buffered, in
flight, or behind an unfinished one), every owned partition is paused; reading resumes
once half are done. A partition assigned while paused is paused at once. During an
outage the connector therefore holds at most that many messages, and Kafka keeps the rest.
"""

from __future__ import annotations

import logging
from typing import Iterable, Protocol

from . import metrics
from .source import Key

log = logging.getLogger("connector.pipeline")


class Pausable(Protocol):
    def assignment(self) -> set[Key]: ...
    def pause(self, keys: Iterable[Key]) -> None: ...
    def resume(self, keys: Iterable[Key]) -> None: ...


class Backpressure:
    def __init__(self, source: Pausable, limit: int):
        self.source = source
        self.limit = limit
        self.paused: set[Key] | None = None  # the paused partitions, while it holds

    def room(self, pending: int) -> int:
        """How many more messages may be read now."""
        return self.limit - pending

    def apply(self, pending: int) -> None:
        if self.paused is None:
            if pending >= self.limit:
                self.paused = self.source.assignment()
                self.source.pause(self.paused)
                self._show()
                log.info("%d messages pending (limit %d): pausing consumption until half are done",
                         pending, self.limit)
        elif pending <= self.limit // 2:
            self.source.resume(self.paused & self.source.assignment())
            self.paused = None
            self._show()
            log.info("%d messages pending: resuming consumption", pending)
        else:
            newly_assigned = self.source.assignment() - self.paused
            if newly_assigned:
                self.source.pause(newly_assigned)
                self.paused |= newly_assigned
                self._show()

    def release(self, keys: Iterable[Key]) -> None:
        """Partitions revoked or lost: no longer ours to resume."""
        if self.paused is not None:
            self.paused -= set(keys)
            self._show()

    def _show(self) -> None:
        metrics.paused.set(0 if self.paused is None else 1)
        metrics.paused_partitions.set(0 if self.paused is None else len(self.paused))
