"""The UserFlux projects one connector delivers to, each with everything of its own.

A destination (one of ``userflux.destinations``, or ``default``, the top-level key's) is
a write key and where its API is: a ``UserFluxClient`` (and its ``Route``) for its
requests, a ``Gate`` (throttle.py: its ``Retry-After``, its shared backoff, its rate
cap) and a pool of ``max_in_flight`` sender threads (pool.py). Nothing of that is shared
between destinations, so a project that is throttled, failing or capped holds back no
other; the pipeline's own thread is shared, and never waits on any of them (direct.py).
Batches never mix destinations (batcher.py keys them by their mapping's), and each batch
names its own, which is how the senders find it.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from .. import metrics
from ..config.model import DEFAULT_DESTINATION, UserFluxSettings
from .client import Route, UserFluxClient, make_route
from .pool import SenderPool
from .ratecap import RateCap
from .retry import RetryPolicy
from .sender import BatchResult, BatchSender, Health
from .throttle import Gate


class Destination:
    def __init__(self, name: str, client: UserFluxClient, gate: Gate, pool: Any):
        self.name = name
        self.client = client
        self.gate = gate
        self.pool = pool

    @property
    def route(self) -> Route:
        return self.client.route

    @property
    def direct(self) -> bool:
        """Whether the pipeline's thread may write its requests itself (not through a proxy)."""
        return self.client.proxy is None

    def __repr__(self) -> str:
        return f"<Destination {self.name} {self.client.url}>"


def retry_policy(uf: UserFluxSettings) -> RetryPolicy:
    retry = uf.retry
    return RetryPolicy(retry.initial_backoff_ms / 1000, retry.max_backoff_ms / 1000, retry.max_attempts)


def thread_name(destination: str) -> str:
    """The sender threads' name: ``sender-N`` for the default destination, ``sender-<name>-N``
    for the others (the kernel keeps 15 bytes of it)."""
    return "sender" if destination == DEFAULT_DESTINATION else f"sender-{destination}"


def open_destinations(
    uf: UserFluxSettings,
    stop: threading.Event,
    completions: queue.Queue[BatchResult],
    health: Health | None = None,
) -> dict[str, Destination]:
    """Every configured destination, its sender threads started. ``stop`` makes them give up
    on what they are sending; their results go to ``completions``."""
    policy = retry_policy(uf)
    found = {}
    for settings in uf.all_destinations:
        name = settings.name
        client = UserFluxClient(make_route(settings.base_url, settings.api_key, uf.request_timeout_s, settings.tls))
        cap = None
        if settings.max_events_per_second or settings.max_requests_per_second:
            cap = RateCap(settings.max_events_per_second, settings.max_requests_per_second)
        gate = Gate(policy, cap=cap, destination=name)
        sender = BatchSender(client, policy, stop, health=health, gate=gate)
        pool = SenderPool(sender, uf.max_in_flight, completions, name=thread_name(name))
        found[name] = Destination(name, client, gate, pool)
        if settings.max_events_per_second:
            metrics.rate_cap_events.labels(name).set(settings.max_events_per_second)
        if settings.max_requests_per_second:
            metrics.rate_cap_requests.labels(name).set(settings.max_requests_per_second)
    return found
