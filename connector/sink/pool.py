"""Run up to ``max_in_flight`` batch senders at once.

Batches go in through ``submit``; each result comes back on the completion queue the
pipeline drains on its own thread, so every piece of delivery state (offsets, batches,
dead letters) is only ever touched by the pipeline thread.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Protocol

from ..batcher import Batch
from ..errors import FatalError
from ..threads import daemon_thread
from .sender import BatchResult

log = logging.getLogger("connector.sink")


class Sender(Protocol):
    def send(self, batch: Batch) -> BatchResult: ...


class SenderPool:
    def __init__(self, sender: Sender, workers: int, completions: "queue.SimpleQueue[BatchResult]"):
        self.sender = sender
        self.completions = completions
        self._work: "queue.SimpleQueue[Batch | None]" = queue.SimpleQueue()
        # Daemon threads: a request stuck past the shutdown grace must not keep the
        # process alive; its batch is simply not committed.
        self._threads = [
            daemon_thread(self._run, f"sender-{i}") for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, batch: Batch) -> None:
        self._work.put(batch)

    def _run(self) -> None:
        while True:
            batch = self._work.get()
            if batch is None:
                return
            try:
                result = self.sender.send(batch)
            except Exception as exc:  # a bug must stop the run, not lose the batch silently
                log.exception("sender failed on batch #%d", batch.id)
                result = BatchResult(batch, abandoned=list(batch.items),
                                     failure=FatalError(f"internal error while sending batch #{batch.id}: {exc!r}"))
            self.completions.put(result)

    def close(self, timeout_s: float = 0.0) -> None:
        for _ in self._threads:
            self._work.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
