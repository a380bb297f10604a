"""Run up to ``max_in_flight`` batch senders at once, on threads: a pool per destination,
so that batches waiting out one project's Retry-After or rate cap never take the threads
another project's batches need (``SenderPools`` hands each batch to its destination's).

They take the batches whose first request (direct.py) did not end in a 2xx, with its
answer, and every batch when requests cannot go out from the pipeline's thread (a
proxy, the gate holding, no connection). Batches go in through ``submit``; each result
comes back on the completion queue the pipeline drains on its own thread, so every piece
of delivery state (offsets, batches, dead letters) is only ever changed by the pipeline
thread. The senders only read one flag of it, whether a batch's partitions are still
owned (``PartitionOffsets.owned``), to give up on revoked ones; a stale read costs one
request, which the partition's next owner may send again (a duplicate, never a loss).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from ..batcher import Batch
from ..errors import FatalError
from ..threads import daemon_thread
from .sender import BatchResult

log = logging.getLogger("connector.sink")


class Sender(Protocol):
    def send(self, batch: Batch, tried: Any = None) -> BatchResult: ...


class SenderPool:
    def __init__(self, sender: Sender, workers: int, completions: queue.Queue[BatchResult], name: str = "sender"):
        self.sender = sender
        self.completions = completions
        self._work: queue.SimpleQueue[tuple[Batch, Any] | None] = queue.SimpleQueue()
        self._submitted = 0  # only the pipeline's thread submits
        self._finished = 0
        self._count_lock = threading.Lock()
        # Daemon threads: a request stuck past the shutdown grace must not keep the
        # process alive; its batch is simply not committed.
        self._threads = [daemon_thread(self._run, f"{name}-{i}") for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, batch: Batch, tried: Any = None) -> None:
        """``tried``: the answer to the batch's first request, sent elsewhere (direct.py)."""
        self._submitted += 1
        self._work.put((batch, tried))

    @property
    def busy(self) -> int:
        """Batches submitted and not yet finished."""
        return self._submitted - self._finished

    def _run(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            batch, tried = work
            try:
                result = self.sender.send(batch, tried) if tried is not None else self.sender.send(batch)
            except Exception as exc:  # a bug must stop the run, not lose the batch silently
                log.exception("sender failed on batch #%d", batch.id)
                result = BatchResult(
                    batch,
                    abandoned=list(batch.items),
                    failure=FatalError(f"internal error while sending batch #{batch.id}: {exc!r}"),
                )
            with self._count_lock:
                self._finished += 1
            self.completions.put(result)

    def close(self, timeout_s: float = 0.0) -> None:
        for _ in self._threads:
            self._work.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class SenderPools:
    """The pools of every destination, as one: a batch goes to its destination's pool."""

    def __init__(self, pools: Mapping[str, SenderPool]):
        self.pools = dict(pools)

    def submit(self, batch: Batch, tried: Any = None) -> None:
        self.pools[batch.destination].submit(batch, tried)

    @property
    def busy(self) -> int:
        return sum(pool.busy for pool in self.pools.values())

    def close(self, timeout_s: float = 0.0) -> None:
        """Close every pool, within ``timeout_s`` in all."""
        deadline = time.monotonic() + timeout_s
        for pool in self.pools.values():
            pool.close(max(0.0, deadline - time.monotonic()))
