"""Which offsets are done, per partition, and how far it is safe to commit.

Batches finish in any order, and one batch mixes partitions, so a partition's offsets
complete out of order. A partition may only be committed up to the first offset that is
not done yet: the committed position is "everything below this is delivered, skipped or
dead-lettered". That is the whole at-least-once guarantee, kept here and nowhere else.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class PartitionOffsets:
    """The offsets read from one partition while it is assigned to us."""

    __slots__ = ("topic", "partition", "_order", "_done", "_last_tracked", "_reads", "position", "owned")

    def __init__(self, topic: str, partition: int):
        self.topic = topic
        self.partition = partition
        self._order: deque[int] = deque()  # offsets read and not yet released, ascending
        self._done: set[int] = set()  # the done ones among them
        self._last_tracked = -1
        # (first offset, read time) per read that added offsets: a few per second, not one
        # per message; enough to tell when the oldest pending message was read.
        self._reads: deque[tuple[int, float]] = deque()
        self.position: int | None = None  # the offset to commit: everything below it is done
        self.owned = True  # False once revoked: late completions are ignored

    def track(self, offset: int, read_at: float = 0.0) -> bool:
        """Record a message as read at ``read_at`` (monotonic seconds). False for an offset
        at or below one already read (a redelivery after a fetch restart), which the caller
        must not process again."""
        if offset <= self._last_tracked:
            return False
        self._order.append(offset)
        self._last_tracked = offset
        if not self._reads or self._reads[-1][1] != read_at:
            self._reads.append((offset, read_at))
        return True

    def untrack(self, offset: int) -> None:
        """Forget the last offset tracked, as if it had not been read: it will be read (and
        tracked) again. The commit then stops at it, as it would below a pending one."""
        assert self._order and self._order[-1] == offset, (offset, self._order and self._order[-1])
        self._order.pop()
        self._last_tracked = offset - 1
        if self._reads and self._reads[-1][0] == offset:
            self._reads.pop()

    def done(self, offset: int) -> None:
        if offset in self._done or (self.position is not None and offset < self.position):
            return  # already done: a message can be finished once only
        self._done.add(offset)
        order, finished = self._order, self._done
        while order and order[0] in finished:
            released = order.popleft()
            finished.discard(released)
            self.position = released + 1

    @property
    def pending(self) -> int:
        """Messages read and not yet released (done ones behind an unfinished one count)."""
        return len(self._order)

    def oldest_read_at(self) -> float | None:
        """When the oldest pending message was read; None when nothing is pending.
        Called periodically, it also trims the read times no longer needed."""
        if not self._order:
            self._reads.clear()
            return None
        head, reads = self._order[0], self._reads
        while len(reads) > 1 and reads[1][0] <= head:
            reads.popleft()
        return reads[0][1]

    def __repr__(self) -> str:
        return f"<{self.topic}[{self.partition}] position={self.position} pending={self.pending}>"


class OffsetTracker:
    """Every partition currently assigned to this consumer."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], PartitionOffsets] = {}

    def assign(self, topic: str, partition: int) -> PartitionOffsets:
        key = (topic, partition)
        current = self.partitions.get(key)
        if current is None:
            current = self.partitions[key] = PartitionOffsets(topic, partition)
        return current

    def get(self, topic: str, partition: int) -> PartitionOffsets:
        """The tracker of an assigned partition (a message can only come from one)."""
        key = (topic, partition)
        current = self.partitions.get(key)
        if current is None:
            # librdkafka can hand out a message of a partition whose assign callback we
            # have not seen only through a bug; tracking it is still the safe choice.
            current = self.assign(topic, partition)
        return current

    def release(self, keys: Iterable[tuple[str, int]]) -> list[PartitionOffsets]:
        """Forget revoked or lost partitions; their late completions are ignored."""
        released = []
        for key in keys:
            current = self.partitions.pop(key, None)
            if current is not None:
                current.owned = False
                released.append(current)
        return released

    @property
    def pending(self) -> int:
        return sum(p.pending for p in self.partitions.values())
