"""Take one batch to an end: delivered, refused event by event, or given up on.

Runs in a sender thread, from the batch's first request or from the answer to one sent
elsewhere (direct.py). Each request is one attempt (``_attempt``: wait at the gate, send,
count the outcome); what follows depends only on the outcome (outcome.py): delivered; a
refused request (400/413/422) split in halves until the events UserFlux refuses are
alone, the rest delivered; 401/403 and misconfigurations end the batch with a fatal
error (its events are neither delivered nor refused, so nothing is committed or
dead-lettered); anything transient retried after a backoff (``_back_off``, retry.py).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .. import metrics
from ..batcher import Batch, Item
from ..config.model import DEFAULT_DESTINATION, destination_key
from ..errors import AuthError, DeliveryConfigError, FatalError
from . import outcome
from .client import UserFluxClient
from .outcome import AUTH, DELIVERED, FATAL, REJECT, Outcome
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


Tried = tuple[Outcome, float]  # a request's outcome, and how long the gate holds after it


class Health(Protocol):
    def error_answered(self, wait_s: float) -> None: ...


class BatchSender:
    def __init__(
        self,
        client: UserFluxClient,
        policy: RetryPolicy,
        stop: threading.Event,
        encode: Callable[[list[dict]], bytes] = encode_batch,
        health: Health | None = None,
        gate: Gate | None = None,
    ):
        self.client = client
        self.policy = policy
        self.stop = stop  # set when the pipeline gives up on work in flight
        self.encode = encode
        self.health = health  # told when UserFlux answers errors: an outage, not a stall
        self.gate = gate or Gate(policy)  # shared by every sender of the pipeline

    def send(self, batch: Batch, tried: Tried | None = None) -> BatchResult:
        """``tried``: the first request's outcome, when it was sent elsewhere (direct.py)."""
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
            if tried is None:
                tried = self._attempt(batch, items, body, result)
                if tried is None:  # stopped, failed elsewhere, or revoked: not ours to send
                    result.abandoned.extend(items)
                    return
            answer, held = tried
            tried = None
            attempts += 1
            if answer.kind == DELIVERED:
                result.delivered.extend(items)
                result.delivered_at = time.time()
                return
            if answer.kind == REJECT:
                if len(items) > 1:
                    log.info(
                        "batch #%d: UserFlux refused %d events (%s); splitting to find the refused ones",
                        batch.id,
                        len(items),
                        answer.detail,
                    )
                self._split(batch, items, f"UserFlux refused the event: {answer.detail}", result)
                return
            if answer.kind in (AUTH, FATAL):
                result.failure = self._fatal(answer, items)
                result.abandoned.extend(items)
                return
            if self.policy.gives_up(attempts):
                reason = f"UserFlux did not accept it after {attempts} attempts; last answer: {answer.detail}"
                result.refused.extend((item, reason) for item in items)
                return
            if not self._back_off(batch, items, answer, held, attempts):
                result.abandoned.extend(items)
                return

    def _attempt(self, batch: Batch, items: list[Item], body: bytes, result: BatchResult) -> Tried | None:
        """One request: its outcome, counted; None when it is not ours to send any more."""
        while True:
            # 1. Wait at the gate: another sender's Retry-After, or UserFlux failing, holds all;
            #    the rate cap spaces the requests.
            if result.failure is not None or not any(i.offsets.owned for i in items):
                return None
            ticket, _, _ = self.gate.wait(self.stop, len(items))  # counts the time waited, by cause
            # 2. Still ours to send? (stopped, failed, or revoked while waiting)
            if ticket is None:
                return None
            if result.failure is not None or not any(i.offsets.owned for i in items):
                self.gate.cancel(ticket)
                return None
            # 3. Send. Opening a connection can take long: if a hold began meanwhile,
            #    nothing is sent (None); back to 1.
            try:
                answer = self.client.post_batch(
                    body, batch.location_enrichment, admit=functools.partial(self.gate.admits, ticket)
                )
            except BaseException:
                self.gate.cancel(ticket)
                raise
            if answer is None:
                self.gate.cancel(ticket)
                continue
            # 4. Count it: the gate hears what UserFlux said, and so do the metrics.
            return answer, outcome.record(self.gate, ticket, answer)

    def _back_off(self, batch: Batch, items: list[Item], answer: Outcome, held: float, attempts: int) -> bool:
        """Before a retry. While UserFlux is failing the gate's schedule rules; an isolated
        failure only delays this batch, by its own backoff. False when stopped meanwhile."""
        own = 0.0 if self.gate.failing else self.policy.delay(attempts)
        delay = max(own, held)
        log.warning(
            "batch #%d (%d events): %s; retry %d in %.2fs%s",
            batch.id,
            len(items),
            answer.detail,
            attempts,
            delay,
            " (Retry-After)" if answer.retry_after_s is not None else "",
        )
        metrics.retries.labels(answer.code, self.gate.destination).inc()
        if self.health is not None and answer.code.isdigit():  # an answer, not a timeout
            self.health.error_answered(delay)
        if own > 0:
            started = time.monotonic()
            stopped = self.stop.wait(own)
            metrics.retry_wait.labels("backoff", self.gate.destination).inc(time.monotonic() - started)
            if stopped:
                return False
        return True

    def _split(self, batch: Batch, items: list[Item], reason: str, result: BatchResult) -> None:
        """Deliver each half on its own until the events that fail stand alone, refused with ``reason``."""
        if len(items) == 1:
            result.refused.append((items[0], reason))
            return
        middle = len(items) // 2
        self._deliver(batch, items[:middle], result)
        self._deliver(batch, items[middle:], result)

    def _fatal(self, answer: Outcome, items: list[Item]) -> FatalError:
        names = sorted({str(item.event.get("name")) for item in items})
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        destination = self.gate.destination
        # Which project, in words, and the settings to look at.
        whose = "" if destination == DEFAULT_DESTINATION else f" of destination {destination!r}"
        key, base_url = destination_key(destination, "api_key"), destination_key(destination, "base_url")
        if answer.kind == AUTH:
            return AuthError(
                f"UserFlux refused the write key{whose}: {answer.detail}. The key in {key} is wrong, "
                f"revoked, not allowed from this IP, or not allowed to send these events ({shown}). "
                "Nothing was dropped or dead-lettered; offsets stay at the last delivered message."
            )
        if answer.code == "tls":
            return DeliveryConfigError(
                f"{answer.detail} (POST {self.client.url}{whose}): set {destination_key(destination, 'tls.ca_file')} "
                f"to the CA that signed it, or check {base_url}. Nothing was dropped; offsets stay at the last "
                "delivered message."
            )
        return DeliveryConfigError(
            f"UserFlux answered {answer.detail} to POST {self.client.url}{whose}: no retry can fix this; "
            f"check {base_url}. Nothing was dropped; offsets stay at the last delivered message."
        )
