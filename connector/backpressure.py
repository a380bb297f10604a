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

With mappings to several destinations, ``DestinationBackpressure`` bounds each
destination's pending messages on its own instead, pausing only the partitions of the
destination that cannot keep up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

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


class DestinationBackpressure:
    """Backpressure with several destinations: each destination's pending messages are
    bounded on their own, so one that cannot send (a long ``Retry-After``, an outage of its
    project, a rate cap below what its topics bring) holds back no other.

    When a destination's messages read and not yet committable reach ``limit``, the
    partitions its mappings read are paused in Kafka at once, while the others go on
    being read; they are resumed when half are done. The whole process so holds at most
    ``limit`` messages per destination (plus one ``consume()`` call's worth). As with one
    destination, a hold is only told at INFO once it has lasted ``PAUSE_AFTER_S``: a
    destination whose rate cap is below what its topics bring holds every few seconds.
    """

    def __init__(
        self,
        source: Pausable,
        limit: int,
        partitions: Mapping[Key, Any],
        destination_of: Callable[[Key], str],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.source = source
        self.limit = limit
        self.partitions = partitions  # Key -> PartitionOffsets (its ``pending``): the tracker's
        self.destination_of = destination_of
        self.clock = clock
        self.held: dict[str, set[Key]] = {}  # the destinations held, and their partitions paused
        self._since: dict[str, float] = {}  # when each hold began
        self._told: set[str] = set()  # the holds logged at INFO
        self._room = limit

    @property
    def consuming(self) -> bool:
        return True  # the partitions of a destination that holds are paused in Kafka

    @property
    def paused(self) -> set[Key]:
        """Every partition paused here (as Backpressure.paused, for the registry wait)."""
        return set().union(*self.held.values())

    def room(self, pending: int) -> int:
        """How many more messages may be read now: what the fullest destination still
        reading has room for (as of the last ``apply``)."""
        return self._room

    def apply(self, pending: int) -> None:
        counts: dict[str, int] = {}
        for key, offsets in self.partitions.items():
            destination = self.destination_of(key)
            counts[destination] = counts.get(destination, 0) + offsets.pending
        now = self.clock()
        for destination, count in counts.items():
            if destination not in self.held:
                if count >= self.limit:
                    self._hold(destination, count, now)
            elif count <= self.limit // 2:
                self._release(destination, count)
            elif destination not in self._told and now - self._since[destination] >= PAUSE_AFTER_S:
                self._told.add(destination)
                log.info(
                    "%d messages of destination %s pending (limit %d) for %.0fs: its %d partitions stay paused "
                    "until half are done",
                    count,
                    destination,
                    self.limit,
                    PAUSE_AFTER_S,
                    len(self.held[destination]),
                )
        for destination in [d for d in self.held if d not in counts]:  # none of its partitions left
            self._release(destination, 0)
        reading = [self.limit - count for destination, count in counts.items() if destination not in self.held]
        self._room = min(reading) if reading else 0

    def _hold(self, destination: str, count: int, now: float) -> None:
        keys = {key for key in self.source.assignment() if self.destination_of(key) == destination}
        self.source.pause(keys)
        self.held[destination] = keys
        self._since[destination] = now
        self._count()
        log.debug(
            "%d messages of destination %s pending (limit %d): pausing its %d partitions until half are done",
            count,
            destination,
            self.limit,
            len(keys),
        )

    def _release(self, destination: str, count: int) -> None:
        keys = self.held.pop(destination)
        self.source.resume(keys & self.source.assignment())
        self._count()
        told = destination in self._told
        self._told.discard(destination)
        log.log(
            logging.INFO if told else logging.DEBUG,
            "%d messages of destination %s pending: resuming its partitions",
            count,
            destination,
        )

    def _count(self) -> None:
        metrics.paused.set(1 if self.held else 0)
        metrics.paused_partitions.set(sum(len(keys) for keys in self.held.values()))

    def assigned(self, keys: list[Key]) -> None:
        """Partitions just assigned: paused if their destination holds, else resumed (a
        partition lost while paused would otherwise come back paused for good)."""
        held = [key for key in keys if self.destination_of(key) in self.held]
        free = [key for key in keys if self.destination_of(key) not in self.held]
        if held:
            self.source.pause(held)
            for key in held:
                self.held[self.destination_of(key)].add(key)
            self._count()
        if free:
            self.source.resume(free)

    def release(self, keys: Iterable[Key]) -> None:
        """Partitions revoked or lost: no longer ours to resume."""
        gone = set(keys)
        for keys in self.held.values():
            keys -= gone
        self._count()
