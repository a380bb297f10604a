"""The batch stage: mapped events into batches of at most ``batch_size``.

A batch never mixes destinations (each is a UserFlux project with a key of its own) nor
``locationEnrichment`` values (a query parameter of the whole request): events are
batched by their mapping's ``batch_key``, ``(destination, location_enrichment)``, built
once per mapping. A partial batch is sent once its first event has waited ``linger``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from .config.model import DEFAULT_DESTINATION
from .offsets import PartitionOffsets

BatchKey = tuple[str, bool]  # (destination, location_enrichment); a bare bool means the default destination


class Item:
    """One mapped event and where it came from, until it is done."""

    __slots__ = ("event", "message", "offsets", "offset")

    def __init__(self, event: dict, message: Any, offsets: PartitionOffsets, offset: int | None = None):
        self.event = event
        self.message = message  # the Kafka message, kept for the dead-letter topic
        self.offsets = offsets
        self.offset = message.offset() if offset is None else offset


class Batch:
    __slots__ = ("id", "items", "location_enrichment", "opened", "destination", "key")

    _ids = itertools.count(1)

    def __init__(
        self,
        location_enrichment: bool,
        opened: float,
        items: list[Item] | None = None,
        destination: str = DEFAULT_DESTINATION,
    ):
        self.id = next(Batch._ids)
        self.items: list[Item] = items if items is not None else []
        self.location_enrichment = location_enrichment
        self.opened = opened
        self.destination = destination  # the UserFlux project it goes to (sink/destination.py)
        self.key: BatchKey | bool = (destination, location_enrichment)  # the batcher's

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (
            f"<Batch #{self.id} events={len(self.items)} destination={self.destination} "
            f"locationEnrichment={self.location_enrichment}>"
        )


class Batcher:
    def __init__(self, batch_size: int, linger_s: float, clock: Callable[[], float] = time.monotonic):
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.clock = clock
        self._open: dict[BatchKey | bool, Batch] = {}

    def add(self, item: Item, key: BatchKey | bool) -> Batch | None:
        """Add an event under its mapping's ``batch_key`` (or a bare locationEnrichment
        flag, for the default destination); return the batch it filled, if it did."""
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = self._open_batch(key)
        batch.items.append(item)
        if len(batch.items) >= self.batch_size:
            del self._open[key]
            return batch
        return None

    def _open_batch(self, key: BatchKey | bool) -> Batch:
        destination, location_enrichment = key if type(key) is tuple else (DEFAULT_DESTINATION, bool(key))
        batch = Batch(location_enrichment, self.clock(), destination=destination)
        batch.key = key
        return batch

    def due(self) -> list[Batch]:
        """Partial batches whose linger has passed."""
        if not self._open:
            return []
        cutoff = self.clock() - self.linger_s
        ready = [b for b in self._open.values() if b.opened <= cutoff]
        for batch in ready:
            del self._open[batch.key]
        return ready

    def flush(self) -> list[Batch]:
        """Every open batch, now (rebalance, shutdown)."""
        ready = list(self._open.values())
        self._open.clear()
        return ready

    def next_due_in(self) -> float | None:
        """Seconds until the oldest open batch is due, or None when nothing is open."""
        if not self._open:
            return None
        oldest = min(b.opened for b in self._open.values())
        return max(0.0, oldest + self.linger_s - self.clock())

    @property
    def buffered(self) -> int:
        return sum(len(b.items) for b in self._open.values())
