"""The commit stage: tell Kafka how far every owned partition is done.

The position comes from the offset tracker, so a committed offset never passes a
message that is still buffered, in flight, or waiting for its dead letter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from confluent_kafka import KafkaError, TopicPartition

from . import metrics
from .kafka import Key
from .offsets import OffsetTracker

log = logging.getLogger("connector.checkpoint")


class Committer(Protocol):
    """Who commits for the group: the consumer (source.py's KafkaSource)."""

    def commit(self, positions: list[tuple[str, int, int]], asynchronous: bool) -> bool: ...


class Checkpoint:
    def __init__(
        self,
        source: Committer | None,
        tracker: OffsetTracker,
        interval_s: float,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_committed: Callable[[Key, int], None] | None = None,
    ):
        self.source = source
        self.tracker = tracker
        self.interval_s = interval_s
        self.enabled = enabled  # False in --dry-run: nothing is ever committed
        self.clock = clock
        self.on_committed = on_committed  # told of every position the broker acknowledged
        self._asked: dict[Key, int] = {}  # the last position asked for, per partition
        self._next = clock() + interval_s

    def maybe_commit(self) -> None:
        if self.clock() >= self._next:
            self.commit(asynchronous=True)

    def commit(self, keys: Iterable[Key] | None = None, asynchronous: bool = False) -> int:
        """Commit the given partitions (default: every owned one); return how many moved."""
        self._next = self.clock() + self.interval_s
        # 1. For each owned partition, the position below which every message is done.
        chosen = (
            self.tracker.partitions
            if keys is None
            else {k: self.tracker.partitions[k] for k in keys if k in self.tracker.partitions}
        )
        positions = [(k, p.position) for k, p in chosen.items() if p.position is not None]
        # 2. Keep only the positions that moved since the last commit asked for.
        moved = [(k, pos) for k, pos in positions if self._asked.get(k) != pos]
        if not moved or not self.enabled or self.source is None:
            return 0
        # 3. Commit them: asynchronously while running, synchronously on revoke and shutdown.
        ok = self.source.commit([(t, p, pos) for (t, p), pos in moved], asynchronous=asynchronous)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "commit%s %s: %s",
                " (async)" if asynchronous else "",
                ", ".join(f"{t}[{p}]={pos}" for (t, p), pos in moved),
                "asked" if ok else "failed",
            )
        # 4. Remember what was asked, so an unchanged partition is not committed again;
        #    a failure forgets it, and the next commit asks again.
        for key, pos in moved:
            if ok:
                self._asked[key] = pos
            else:
                self._asked.pop(key, None)
        if not asynchronous:
            metrics.commits.labels("ok" if ok else "failed").inc()
            if ok:
                self._acknowledged((k, pos) for k, pos in moved)
        return len(moved) if ok else 0

    def on_commit_result(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's answer to an asynchronous commit (served on the pipeline thread)."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "commit answer: %s for %s",
                error.str() if error else "ok",
                ", ".join(f"{p.topic}[{p.partition}]={p.offset}" for p in partitions),
            )
        failed = partitions if error is not None else [p for p in partitions if p.error is not None]
        if error is not None and error.code() == KafkaError._NO_OFFSET:
            return
        self._acknowledged(
            ((p.topic, p.partition), p.offset)
            for p in partitions
            if error is None and p.error is None and p.offset >= 0
        )
        if not failed:
            metrics.commits.labels("ok").inc()
            return
        metrics.commits.labels("failed").inc()
        why = (
            error.str()
            if error is not None
            else "; ".join(
                f"{p.topic}[{p.partition}]: {p.error.str() if p.error is not None else '?'}" for p in failed[:5]
            )
        )
        log.warning("offset commit failed (the next commit retries it): %s", why)
        for part in failed:
            self._asked.pop((part.topic, part.partition), None)

    def _acknowledged(self, positions: Iterable[tuple[Key, int]]) -> None:
        if self.on_committed is not None:
            for key, position in positions:
                self.on_committed(key, position)

    def forget(self, keys: Iterable[Key]) -> None:
        """Partitions no longer owned: a later owner may commit other positions."""
        for key in keys:
            self._asked.pop(key, None)
