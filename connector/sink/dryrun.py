"""``run --dry-run``: print each batch as one JSON line on stdout instead of posting it."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from ..batcher import Batch
from .sender import BatchResult


class PrintingSender:
    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout
        self._lock = threading.Lock()

    def send(self, batch: Batch, tried: Any = None) -> BatchResult:
        line = json.dumps(
            {
                "batch": batch.id,
                "destination": batch.destination,
                "locationEnrichment": batch.location_enrichment,
                "events": [item.event for item in batch.items],
            },
            ensure_ascii=False,
        )
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()
        return BatchResult(batch, delivered=list(batch.items), delivered_at=time.time())
