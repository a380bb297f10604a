"""The connector's Prometheus metrics, in one place so dashboards have one reference.

Names follow Prometheus conventions: ``userflux_connector_`` prefix, ``_total`` for
counters, base units (seconds). Labels are bounded (topic, partition, status code, stage,
reason class, destination: one of the configured names) and never carry secrets or
message contents. docs/operations.md, "Metrics",
documents each one; the dashboard and the alert rules use only these names.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, Info

from . import __version__

PREFIX = "userflux_connector"

# -- throughput ---------------------------------------------------------------------------

messages_consumed = Counter(f"{PREFIX}_messages_consumed", "Kafka messages read, by topic.", ["topic"])
events_delivered = Counter(
    f"{PREFIX}_events_delivered",
    "Events UserFlux accepted (answered 2xx), by topic and destination.",
    ["topic", "destination"],
)
messages_filtered = Counter(
    f"{PREFIX}_messages_filtered", "Messages a mapping's where: filter left out (committed, not sent).", ["topic"]
)
messages_invalid = Counter(
    f"{PREFIX}_messages_invalid",
    "Messages that can never be delivered, by stage (deserialize, map, deliver) and the action taken "
    "(dead_letter, skip, stop, print).",
    ["topic", "stage", "action"],
)
dead_letters = Counter(
    f"{PREFIX}_dead_letters",
    "Invalid messages written to the dead-letter topic (acknowledged by the broker), by source topic and stage.",
    ["topic", "stage"],
)
dead_letter_failures = Counter(
    f"{PREFIX}_dead_letter_failures", "Dead letters the broker refused, by source topic and stage.", ["topic", "stage"]
)

# -- the schema registry (Avro, Protobuf and JSON Schema values and keys) ---------------------

schema_registry_requests = Counter(
    f"{PREFIX}_schema_registry_requests",
    "Requests to the schema registry by outcome (ok, not_found, refused, server_error, timeout, unreachable).",
    ["outcome"],
)
schemas_cached = Gauge(f"{PREFIX}_schemas_cached", "Writer schemas held compiled, by schema id (bounded).")
schema_registry_waiting = Gauge(
    f"{PREFIX}_schema_registry_waiting",
    "1 while reading waits for the schema registry to answer (nothing is dead-lettered meanwhile).",
)
decode_failures = Counter(
    f"{PREFIX}_decode_failures",
    "Values or keys that did not decode in their format, by format and reason "
    "(not_wire_format, unknown_schema, wrong_schema_type, bad_schema, undecodable, too_large, tombstone).",
    ["format", "reason"],
)

# -- delivery -----------------------------------------------------------------------------

requests = Counter(
    f"{PREFIX}_requests",
    "Requests to UserFlux by outcome (delivered, retry, rejected, auth, fatal), status code "
    "(or timeout/connection) and destination.",
    ["outcome", "code", "destination"],
)
retries = Counter(
    f"{PREFIX}_retries",
    "Requests retried, by reason (the status code, timeout or connection) and destination.",
    ["reason", "destination"],
)
retry_wait = Counter(
    f"{PREFIX}_retry_wait_seconds",
    "Seconds senders waited before retrying, by cause (backoff, retry_after) and destination.",
    ["cause", "destination"],
)
rate_cap_wait = Counter(
    f"{PREFIX}_rate_cap_wait_seconds",
    "Seconds senders waited for the destination's send-rate cap (max_events_per_second, max_requests_per_second).",
    ["destination"],
)
rate_cap_events = Gauge(
    f"{PREFIX}_rate_cap_events_per_second",
    "The destination's max_events_per_second (no series: no cap).",
    ["destination"],
)
rate_cap_requests = Gauge(
    f"{PREFIX}_rate_cap_requests_per_second",
    "The destination's max_requests_per_second (no series: no cap).",
    ["destination"],
)
request_duration = Histogram(
    f"{PREFIX}_request_duration_seconds",
    "Time for one request to UserFlux, answer or error, by destination.",
    ["destination"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
batch_events = Histogram(f"{PREFIX}_batch_events", "Events per batch sent.", buckets=(1, 5, 10, 20, 30, 40, 50))
end_to_end_latency = Histogram(
    f"{PREFIX}_end_to_end_latency_seconds",
    "From the Kafka message's timestamp to the 2xx answer that delivered its event.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
last_delivery = Gauge(f"{PREFIX}_last_delivery_timestamp_seconds", "Unix time of the last batch UserFlux accepted.")
key_refused = Gauge(
    f"{PREFIX}_key_refused",
    "1 once UserFlux refused the write key (401/403) or the address (404, 3xx): the process exits with code 3.",
)

# -- what is held in memory -----------------------------------------------------------------

pending_messages = Gauge(
    f"{PREFIX}_pending_messages", "Messages read and not yet committable (buffered, in flight, or behind one)."
)
buffered_events = Gauge(f"{PREFIX}_buffered_events", "Events in open batches, not yet handed to a sender.")
in_flight_events = Gauge(f"{PREFIX}_in_flight_events", "Events in batches handed to the senders and not finished.")
in_flight_batches = Gauge(f"{PREFIX}_in_flight_batches", "Batches handed to the senders and not finished.")

# -- Kafka ----------------------------------------------------------------------------------

commits = Counter(f"{PREFIX}_commits", "Offset commits by result (ok, failed).", ["result"])
rebalances = Counter(f"{PREFIX}_rebalances", "Partition changes by kind (assign, revoke, lost).", ["kind"])
paused = Gauge(f"{PREFIX}_consumption_paused", "1 while reading is paused because too much is pending.")
paused_partitions = Gauge(f"{PREFIX}_paused_partitions", "Partitions paused because too much is pending.")
assigned_partitions = Gauge(f"{PREFIX}_assigned_partitions", "Partitions this group member owns.")
consumer_lag = Gauge(
    f"{PREFIX}_consumer_lag_messages",
    "Messages behind, per owned partition: the high watermark minus the committed offset.",
    ["topic", "partition"],
)
committed_offset = Gauge(
    f"{PREFIX}_committed_offset", "The group's committed offset, per owned partition.", ["topic", "partition"]
)
oldest_pending_age = Gauge(
    f"{PREFIX}_oldest_pending_age_seconds",
    "Seconds since the oldest message read from the partition and not yet done was read (0: none pending).",
    ["topic", "partition"],
)

build_info = Info(f"{PREFIX}_build", "The connector's version.")
build_info.info({"version": __version__})

# -- series that exist before anything happens ------------------------------------------------
#
# A labelled counter has no series until its first increment: a panel shows "No data"
# instead of 0, and increase() misses that first increment (it needs a sample before it).
# Where the label values are known at start, the series are made at 0 instead.

# The stages an invalid message is found at (the `stage` label, and the
# userflux.error.stage header of its dead letter). A new stage is added here too.
STAGES = ("deserialize", "map", "deliver")
COMMIT_RESULTS = ("ok", "failed")
REBALANCE_KINDS = ("assign", "revoke", "lost")
RETRY_WAIT_CAUSES = ("backoff", "retry_after")


def start_series(destinations: Iterable[str], capped: Iterable[str] = ()) -> None:
    """The series of the counters whose label values are fixed, at 0 (idempotent): per
    destination its retry waits, and for a destination with a rate cap (``capped``) the
    waits for it."""
    for result in COMMIT_RESULTS:
        commits.labels(result)
    for kind in REBALANCE_KINDS:
        rebalances.labels(kind)
    for destination in destinations:
        for cause in RETRY_WAIT_CAUSES:
            retry_wait.labels(cause, destination)
    for destination in capped:
        rate_cap_wait.labels(destination)


def start_topic_series(topics: Iterable[tuple[str, str]], action: str, dead_lettering: bool) -> None:
    """The per-topic series, at 0, of topics we read (named in a mapping, or just assigned),
    each given with the destination its mapping delivers to: read, delivered, filtered,
    invalid by stage with the configured ``action``, and (when invalid messages are
    dead-lettered) dead letters and their failures by stage. Idempotent; ``requests`` and
    ``retries`` are left out, their codes are not known."""
    for topic, destination in topics:
        messages_consumed.labels(topic)
        events_delivered.labels(topic, destination)
        messages_filtered.labels(topic)
        for stage in STAGES:
            messages_invalid.labels(topic, stage, action)
            if dead_lettering:
                dead_letters.labels(topic, stage)
                dead_letter_failures.labels(topic, stage)


def observe_many(histogram: Histogram, values: Iterable[float]) -> None:
    """Observe many values of an unlabelled histogram at once: one lock per bucket touched
    rather than two per value (this runs for every delivered event). It relies on
    prometheus-client's layout (non-cumulative ``_buckets`` under ``_upper_bounds``, and
    ``_sum``); should that change, it falls back to ``observe``, and a unit test notices."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    if bounds is None or buckets is None or len(bounds) != len(buckets) or not hasattr(histogram, "_sum"):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    total = 0.0
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value, as observe() picks
        total += value
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(total)


class PartitionSeries:
    """The per-partition series, which exist only while the partition is ours.

    Written from the pipeline thread and the lag monitor's thread. The lock makes "is it
    still ours?" and "set the value" one step, so a revoked partition's series cannot come
    back after ``remove`` took it away.
    """

    GAUGES = (consumer_lag, committed_offset, oldest_pending_age)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owned: set[tuple[str, int]] = set()

    def add(self, keys: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            for topic, partition in keys:
                if (topic, partition) not in self._owned:
                    self._owned.add((topic, partition))
                    oldest_pending_age.labels(topic, str(partition)).set(0)

    def remove(self, keys: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            for key in keys:
                if key in self._owned:
                    self._owned.discard(key)
                    for gauge in self.GAUGES:
                        try:
                            gauge.remove(key[0], str(key[1]))
                        except KeyError:
                            pass  # never set

    def owns(self, key: tuple[str, int]) -> bool:
        with self._lock:
            return key in self._owned

    def owned(self) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(self._owned)

    def set(self, gauge: Gauge, key: tuple[str, int], value: float) -> bool:
        """Set ``gauge`` for an owned partition; False (nothing set) if it is not ours."""
        with self._lock:
            if key not in self._owned:
                return False
            gauge.labels(key[0], str(key[1])).set(value)
            return True
