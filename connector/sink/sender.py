"""Take one batch to an end: delivered, refused event by event, or given up on.

Runs in a sender thread. Transient failures are retried (see retry.py). A refused
request (400/413/422) is split in halves until the events UserFlux refuses are alone;
the rest are delivered. 401/403 and misconfigurations end the batch with a fatal error:
its events are neither delivered nor refused, so nothing is committed or dead-lettered.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .. import metrics
from ..batcher import Batch, Item
from ..errors import AuthError, DeliveryConfigError, FatalError
from .client import AUTH, DELIVERED, FATAL, REJECT, RETRY, Answer, UserFluxClient
from .request import encode_batch
from .retry import RetryPolicy
from .throttle import Gate

log = logging.getLogger("connector.sink")


@dataclass
class BatchResult:
    batch: Batch
    delivered: list[Item] = field(default_factory=list)
    refused: list[tuple[Item, str]] = field(default_factory=list)  # (item, reason): invalid at stage deliver
    abandoned: list[Item] = field(default_factory=list)  # not finished: stop or revocation
    failure: FatalError | None = None
    delivered_at: float = 0.0  # unix time of the (last) 2xx


Tried = tuple[Answer, float]  # a request's answer, and how long the gate holds after it


class Health(Protocol):
    def error_answered(self, wait_s: float) -> None: ...


class BatchSender:
    def __init__(self, client: UserFluxClient, policy: RetryPolicy, stop: threading.Event,
                 encode: Callable[[list[dict]], bytes] = encode_batch, health: Health | None = None,
                 gate: Gate | None = None):
        self.client = client
        self.policy = policy
        self.stop = stop  # set when the pipeline gives up on work in flight
        self.encode = encode
        self.health = health  # told when UserFlux answers errors: an outage, not a stall
        self.gate = gate or Gate(policy)  # shared by every sender of the pipeline

    def send(self, batch: Batch, tried: Tried | None = None) -> BatchResult:
        """``tried``: the first request's answer, when it was sent elsewhere (direct.py)."""
        result = BatchResult(batch)
        if tried is None:
            metrics.batch_events.observe(len(batch.items))
        self._deliver(batch, batch.items, result, tried)
        return result

    def _deliver(self, batch: Batch, items: list[Item], result: BatchResult, tried: Tried | None = None) -> None:
        try:
            body = self.encode([item.event for item in items])
        except (ValueError, TypeError, RecursionError) as exc:
            # A value JSON cannot carry (1e400 decodes to infinity): find the event, like a 400.
            self._split(batch, items, f"the event cannot be encoded as JSON: {exc}", result)
            return
        attempts = 0
        while True:
            if tried is not None:
                # 1-3 were done where the request was sent; the batch goes on from its answer.
                answer, held = tried
                tried = None
            else:
                # 1. Wait at the gate: another sender's Retry-After, or UserFlux failing, holds all.
                ticket = None
                if result.failure is None and any(i.offsets.owned for i in items):
                    ticket, waited, cause = self.gate.wait(self.stop)
                    if waited > 0:
                        metrics.retry_wait.labels(cause).inc(waited)
                # 2. Still ours to send? (stopped, failed, or revoked while waiting)
                if ticket is None or result.failure is not None or not any(i.offsets.owned for i in items):
                    if ticket is not None:
                        self.gate.cancel(ticket)
                    result.abandoned.extend(items)
                    return
                # 3. Send, and tell the gate what UserFlux said. Opening a connection can
                #    take long: if a hold began meanwhile, nothing is sent; back to 1.
                try:
                    answer = self.client.post_batch(body, batch.location_enrichment,
                                                    admit=functools.partial(self.gate.admits, ticket))
                except BaseException:
                    self.gate.cancel(ticket)
                    raise
                if answer is None:
                    self.gate.cancel(ticket)
                    continue
                held = self.gate.report(ticket, answer.outcome == RETRY, answer.retry_after_s)
                metrics.requests.labels(answer.outcome, answer.code).inc()
                metrics.request_duration.observe(answer.duration_s)
            attempts += 1
            if answer.outcome == DELIVERED:
                result.delivered.extend(items)
                result.delivered_at = time.time()
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
            # 4. A retry. While UserFlux is failing the gate's schedule rules; an isolated
            #    failure only delays this batch, by its own backoff.
            own = 0.0 if self.gate.failing else self.policy.delay(attempts)
            delay = max(own, held)
            log.warning("batch #%d (%d events): %s; retry %d in %.2fs%s", batch.id, len(items), answer.detail,
                        attempts, delay, " (Retry-After)" if answer.retry_after_s is not None else "")
            metrics.retries.labels(answer.code).inc()
            if self.health is not None and answer.code.isdigit():  # an answer, not a timeout
                self.health.error_answered(delay)
            if own > 0:
                started = time.monotonic()
                stopped = self.stop.wait(own)
                metrics.retry_wait.labels("backoff").inc(time.monotonic() - started)
                if stopped:
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

