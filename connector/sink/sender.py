"""Take one batch to an end: delivered, refused event by event, or given up on.

Runs in a sender thread. Transient failures are retried (see retry.py). A refused
request (400/413/422) is split in halves until the events UserFlux refuses are alone;
the rest are delivered. 401/403 and misconfigurations end the batch with a fatal error:
its events are neither delivered nor refused, so nothing is committed or dead-lettered.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

from .. import metrics
from ..batcher import Batch, Item
from ..errors import AuthError, DeliveryConfigError, FatalError
from .client import AUTH, DELIVERED, FATAL, REJECT, Answer, UserFluxClient
from .request import encode_batch
from .retry import RetryPolicy

log = logging.getLogger("connector.sink")


@dataclass
class BatchResult:
    batch: Batch
    delivered: list[Item] = field(default_factory=list)
    refused: list[tuple[Item, str]] = field(default_factory=list)  # (item, reason): invalid at stage deliver
    abandoned: list[Item] = field(default_factory=list)  # not finished: stop or revocation
    failure: FatalError | None = None


class BatchSender:
    def __init__(self, client: UserFluxClient, policy: RetryPolicy, stop: threading.Event,
                 encode: Callable[[list[dict]], bytes] = encode_batch):
        self.client = client
        self.policy = policy
        self.stop = stop  # set when the pipeline gives up on work in flight
        self.encode = encode

    def send(self, batch: Batch) -> BatchResult:
        result = BatchResult(batch)
        metrics.batch_events.observe(len(batch.items))
        self._deliver(batch, batch.items, result)
        return result

    def _deliver(self, batch: Batch, items: list[Item], result: BatchResult) -> None:
        try:
            body = self.encode([item.event for item in items])
        except (ValueError, TypeError, RecursionError) as exc:
            # A value JSON cannot carry (1e400 decodes to infinity): find the event, like a 400.
            self._split(batch, items, f"the event cannot be encoded as JSON: {exc}", result)
            return
        attempts = 0
        while True:
            if result.failure is not None or self.stop.is_set() or not any(i.offsets.owned for i in items):
                result.abandoned.extend(items)
                return
            answer = self.client.post_batch(body, batch.location_enrichment)
            attempts += 1
            metrics.requests.labels(answer.outcome, answer.code).inc()
            metrics.request_duration.observe(answer.duration_s)
            if answer.outcome == DELIVERED:
                result.delivered.extend(items)
                return
            if answer.outcome == REJECT:
                if len(items) > 1:
                    log.info("batch #%d: UserFlux refused %d events (%s); splitting to find the refused ones",
                             batch.id, len(items), answer.detail)
                self._split(batch, items, f"UserFlux refused the event: {answer.detail}", result)
                return
            if answer.outcome in (AUTH, FATAL):
                result.failure = self._fatal(answer, items)
                result.abandoned.extend(items)
                return
            if self.policy.gives_up(attempts):
                reason = f"UserFlux did not accept it after {attempts} attempts; last answer: {answer.detail}"
                result.refused.extend((item, reason) for item in items)
                return
            delay = self.policy.delay(attempts, answer.retry_after_s)
            log.warning("batch #%d (%d events): %s; retry %d in %.2fs%s", batch.id, len(items), answer.detail,
                        attempts, delay, " (Retry-After)" if answer.retry_after_s is not None else "")
            if self.stop.wait(delay):
                result.abandoned.extend(items)
                return

    def _split(self, batch: Batch, items: list[Item], reason: str, result: BatchResult) -> None:
        """Deliver each half on its own until the events that fail stand alone, refused with ``reason``."""
        if len(items) == 1:
            result.refused.append((items[0], reason))
            return
        middle = len(items) // 2
        self._deliver(batch, items[:middle], result)
        self._deliver(batch, items[middle:], result)

    def _fatal(self, answer: Answer, items: list[Item]) -> FatalError:
        names = sorted({str(item.event.get("name")) for item in items})
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        if answer.outcome == AUTH:
            return AuthError(
                f"UserFlux refused the write key: {answer.detail}. The key in userflux.api_key is wrong, "
                f"revoked, not allowed from this IP, or not allowed to send these events ({shown}). "
                "Nothing was dropped or dead-lettered; offsets stay at the last delivered message."
            )
        if answer.code == "tls":
            return DeliveryConfigError(
                f"{answer.detail} (POST {self.client.url}): set userflux.tls.ca_file to the CA that signed it, "
                "or check userflux.base_url. Nothing was dropped; offsets stay at the last delivered message."
            )
        return DeliveryConfigError(
            f"UserFlux answered {answer.detail} to POST {self.client.url}: no retry can fix this; "
            "check userflux.base_url. Nothing was dropped; offsets stay at the last delivered message."
        )

