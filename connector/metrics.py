"""The connector's Prometheus metrics, in one place so dashboards have one reference.

Names follow Prometheus conventions: ``userflux_connector_`` prefix, ``_total`` for
counters, base units (seconds). Labels never carry secrets or message contents.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "userflux_connector"

messages_consumed = Counter(
    f"{PREFIX}_messages_consumed", "Kafka messages read, by topic.", ["topic"])
messages_skipped = Counter(
    f"{PREFIX}_messages_skipped", "Messages a mapping's where: filter skipped (committed, not sent).", ["topic"])
messages_invalid = Counter(
    f"{PREFIX}_messages_invalid",
    "Messages that can never be delivered, by stage (deserialize, map, deliver) and the on_invalid action taken.",
    ["topic", "stage", "action"])
events_delivered = Counter(
    f"{PREFIX}_events_delivered", "Events UserFlux accepted (answered 2xx).", ["topic"])
requests = Counter(
    f"{PREFIX}_requests",
    "Requests to UserFlux by outcome (delivered, retry, rejected, auth, fatal) and status code "
    "(or timeout/connection).",
    ["outcome", "code"])
request_duration = Histogram(
    f"{PREFIX}_request_duration_seconds", "Time for one request to UserFlux, answer or error.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
batch_events = Histogram(
    f"{PREFIX}_batch_events", "Events per batch sent.", buckets=(1, 5, 10, 20, 30, 40, 50))
pending_messages = Gauge(
    f"{PREFIX}_pending_messages", "Messages read and not yet committable (buffered, in flight, or behind one).")
in_flight_batches = Gauge(
    f"{PREFIX}_in_flight_batches", "Batches handed to the sender and not finished.")
commits = Counter(
    f"{PREFIX}_commits", "Offset commits by result (ok, failed).", ["result"])
paused = Gauge(
    f"{PREFIX}_consumption_paused", "1 while reading is paused because too much is pending.")
last_delivery = Gauge(
    f"{PREFIX}_last_delivery_timestamp_seconds", "Unix time of the last batch UserFlux accepted.")
