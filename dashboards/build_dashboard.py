"""Builds dashboards/userflux-connector.json, the connector's Grafana dashboard.

The committed JSON is what ships (the Helm chart carries a copy, byte for byte); this module
is where it is written. After changing it, or dashboards/alerts.yaml, run ``make dashboard``
(``python -m dashboards.build_dashboard``): it writes the JSON and the chart's copies of the
JSON and the rules. Tests fail while any of them differs from what this produces.

Every query filters by the ``$namespace`` and ``$pod`` variables, by ``$topic`` when the
metric has a ``topic`` label, and by ``$destination`` when it has a ``destination`` label
(the UserFlux project: ``default``, or a name under ``userflux.destinations``). Counters
are read with ``rate()`` over Grafana's ``$__rate_interval``; histograms with
``histogram_quantile()`` over ``sum by (le)``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
OUTPUT = HERE / "userflux-connector.json"
RULES = HERE / "alerts.yaml"
# The Helm chart ships copies of both files (real files, not links, so `helm package`
# carries them wherever the chart goes); `main` keeps them equal, a test checks it.
CHART_FILES = HERE.parent / "helm" / "userflux-connector" / "files"

UID = "userflux-connector"
TITLE = "UserFlux connector"
# Grafana 10.0's dashboard schema; later versions migrate it on load.
SCHEMA_VERSION = 38

PREFIX = "userflux_connector_"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The scrape job, exactly: the chart's ServiceMonitor or PodMonitor relabels its targets to
# this job whatever the release is called (a plain Prometheus names its job so too).
JOB_MATCHER = 'job="userflux-connector"'
PODS = 'namespace=~"$namespace", pod=~"$pod"'
TOPICS = PODS + ', topic=~"$topic"'
DESTINATIONS = 'destination=~"$destination"'
# The metrics with a destination label (docs/operations.md): their queries filter by it.
BY_DESTINATION = frozenset(
    {
        "events_delivered_total",
        "requests_total",
        "retries_total",
        "retry_wait_seconds_total",
        "rate_cap_wait_seconds_total",
        "rate_cap_events_per_second",
        "rate_cap_requests_per_second",
        "request_duration_seconds_bucket",
        "request_duration_seconds_sum",
        "request_duration_seconds_count",
    }
)
RATE_INTERVAL = "[$__rate_interval]"
NOT_DELIVERED = 'outcome!="delivered"'
REFUSED = 'outcome=~"rejected|auth|fatal"'

STAT_HEIGHT, STAT_WIDTH = 4, 4
GRAPH_HEIGHT, GRAPH_WIDTH = 8, 12


# --- PromQL ------------------------------------------------------------------------------


def series(metric: str, topic: bool = False, extra: str = "") -> str:
    """A selector for one of the connector's metrics, filtered by the dashboard's variables."""
    matchers = TOPICS if topic else PODS
    if metric in BY_DESTINATION:
        matchers += ", " + DESTINATIONS
    return f"{PREFIX}{metric}{{{matchers}{', ' + extra if extra else ''}}}"


def rate(metric: str, topic: bool = False, extra: str = "") -> str:
    return f"rate({series(metric, topic, extra)}{RATE_INTERVAL})"


def rate_by(labels: str, metric: str, topic: bool = False, extra: str = "") -> str:
    """Per-second rate of a counter, summed by ``labels``."""
    return f"sum by ({labels}) ({rate(metric, topic, extra)})"


def counted(labels: str, metric: str, extra: str = "") -> str:
    """How many in each interval, summed by ``labels``, for counters whose series are born
    with their first increment (label values not known at start, like a status code):
    rate() and increase() see nothing of the increments that create a series, so a series
    born inside the interval counts with its whole value."""
    s = series(metric, extra=extra)
    return f"sum by ({labels}) (({s} unless {s} offset $__rate_interval) or increase({s}{RATE_INTERVAL}))"


def quantile(q: float, histogram: str) -> str:
    return f"histogram_quantile({q}, sum by (le) ({rate(histogram + '_bucket')}))"


def by_partition(metric: str) -> str:
    """One value per partition: a partition moving between pods stays one series."""
    return f"max by (namespace, topic, partition) ({series(metric, topic=True)})"


# --- panels ------------------------------------------------------------------------------


def target(expr: str, legend: str = "__auto", ref: str = "A") -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True, "refId": ref}


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in steps]}


def stat(
    title: str, description: str, expr: str, unit: str, steps: tuple[tuple[str, float | None], ...] = (("green", None),)
) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, legend=title)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "thresholds"},
                "thresholds": thresholds(*steps),
                "mappings": [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
    }


def graph(
    title: str, description: str, queries: list[tuple[str, str]], unit: str = "short", bars: bool = False
) -> dict[str, Any]:
    """A time series panel; ``queries`` are (expression, legend) pairs."""
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "color": {"mode": "palette-classic"},
                "custom": {
                    "drawStyle": "bars" if bars else "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "showPoints": "never",
                    "spanNulls": False,
                    "stacking": {"mode": "none", "group": "A"},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


OVERVIEW = [
    stat(
        "Events delivered /s",
        "Events UserFlux accepted (2xx) per second.",
        f"sum({rate('events_delivered_total', topic=True)}) or vector(0)",
        "short",
    ),
    stat(
        "Error ratio",
        "Share of requests to UserFlux that did not deliver: retried (5xx, 429, timeouts, connection "
        "errors), rejected (400/413/422), refused (401/403) or fatal.",
        # No failed request has no series: 0, not "No data" (and no request at all, no ratio).
        f"(sum({rate('requests_total', extra=NOT_DELIVERED)}) or vector(0)) / sum({rate('requests_total')})",
        "percentunit",
        (("green", None), ("orange", 0.05), ("red", 0.1)),
    ),
    stat(
        "Total lag",
        "Messages in the owned partitions not yet committed (high watermark minus committed offset).",
        f"sum({by_partition('consumer_lag_messages')})",
        "short",
        (("green", None), ("orange", 10000), ("red", 100000)),
    ),
    stat(
        "Dead letters /s",
        "Invalid messages written to the dead-letter topic per second.",
        f"sum({rate('dead_letters_total', topic=True)}) or vector(0)",
        "short",
        (("green", None), ("red", 0.001)),
    ),
    stat(
        "Oldest pending",
        "Age of the oldest message read and not yet done (delivered, filtered or "
        "dead-lettered), over all partitions. Keeps growing while the connector is stuck.",
        f"max({series('oldest_pending_age_seconds', topic=True)})",
        "s",
        (("green", None), ("orange", 60), ("red", 300)),
    ),
    stat(
        "Replicas up",
        "Connector pods Prometheus scrapes successfully.",
        f"sum(up{{{JOB_MATCHER}, {PODS}}})",
        "none",
        (("red", None), ("green", 1)),
    ),
]

THROUGHPUT = [
    graph(
        "Messages consumed /s by topic",
        "Kafka messages read.",
        [(rate_by("topic", "messages_consumed_total", topic=True), "{{topic}}")],
    ),
    graph(
        "Events delivered /s by topic",
        "Events UserFlux accepted (2xx).",
        [(rate_by("topic", "events_delivered_total", topic=True), "{{topic}}")],
    ),
    graph(
        "Messages filtered /s by topic",
        "Messages a mapping's where: filter left out (committed, not sent).",
        [(rate_by("topic", "messages_filtered_total", topic=True), "{{topic}}")],
    ),
    graph(
        "Events delivered /s by pod",
        "How the work is shared between the replicas.",
        [(rate_by("pod", "events_delivered_total", topic=True), "{{pod}}")],
    ),
    graph(
        "Events delivered /s by destination",
        "Events each UserFlux project accepted, and its rate cap where it has one: "
        "max_events_per_second of every pod together (each pod caps its own sending).",
        [
            (rate_by("destination", "events_delivered_total", topic=True), "{{destination}}"),
            (f"sum by (destination) ({series('rate_cap_events_per_second')})", "{{destination}} cap"),
        ],
    ),
]

DELIVERY = [
    graph(
        "Requests /s by status code",
        "Requests to UserFlux by HTTP status, or timeout / connection.",
        [(rate_by("code", "requests_total"), "{{code}}")],
        "reqps",
    ),
    graph(
        "Requests /s by outcome",
        "delivered, retry (will be sent again), rejected (400/413/422: the batch is "
        "split), auth (401/403), fatal (404, 3xx, other 4xx).",
        [(rate_by("outcome", "requests_total"), "{{outcome}}")],
        "reqps",
    ),
    graph(
        "Request latency",
        "One request to UserFlux, answer or error.",
        [(quantile(q, "request_duration_seconds"), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)],
        "s",
    ),
    graph(
        "End-to-end latency",
        "From the Kafka message's timestamp to the 2xx that delivered it.",
        [(quantile(q, "end_to_end_latency_seconds"), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)],
        "s",
    ),
    graph(
        "Retries /s by reason",
        "Requests retried, by the status code that caused it, or timeout / connection.",
        [(rate_by("reason", "retries_total"), "{{reason}}")],
    ),
    graph(
        "Senders waiting to retry",
        "Seconds per second spent waiting before a retry: the average number of senders "
        "waiting, by destination. backoff is the connector's own backoff; retry_after is what "
        "UserFlux asked for (it holds every sender of that destination, and no other).",
        [(rate_by("destination, cause", "retry_wait_seconds_total"), "{{destination}} {{cause}}")],
    ),
    graph(
        "Senders waiting for the rate cap",
        "Seconds per second spent waiting for a destination's max_events_per_second or "
        "max_requests_per_second: the average number of senders waiting. Steadily above 0, the "
        "cap is what limits the delivery, and backpressure slows the reading to match.",
        [(rate_by("destination", "rate_cap_wait_seconds_total"), "{{destination}}")],
    ),
    graph(
        "Batches in flight",
        "Batches handed to the senders and not finished (at most userflux.max_in_flight per pod).",
        [(f"sum by (pod) ({series('in_flight_batches')})", "{{pod}}")],
    ),
    graph(
        "Events buffered, in flight; messages pending",
        "Buffered: events in open batches, not yet sent. In flight: events in batches being sent. Pending: "
        "messages read and not yet committable; reading pauses at pipeline.max_pending_messages.",
        [
            (f"sum({series('buffered_events')})", "buffered events"),
            (f"sum({series('in_flight_events')})", "in-flight events"),
            (f"sum({series('pending_messages')})", "pending messages"),
        ],
    ),
    graph(
        "Events per batch",
        "Events in each batch sent (at most userflux.batch_size, 50).",
        [
            (f"sum({rate('batch_events_sum')}) / sum({rate('batch_events_count')})", "average"),
            (quantile(0.5, "batch_events"), "p50"),
            (quantile(0.95, "batch_events"), "p95"),
        ],
    ),
    graph(
        "Time since last delivery",
        "Seconds since UserFlux last accepted a batch, per pod (none for a pod "
        "that has delivered nothing since it started).",
        [(f"time() - (max by (pod) ({series('last_delivery_timestamp_seconds')}) > 0)", "{{pod}}")],
        "s",
    ),
]

KAFKA = [
    graph(
        "Consumer lag by partition",
        "High watermark minus committed offset, per owned partition.",
        [(by_partition("consumer_lag_messages"), "{{topic}}/{{partition}} ({{namespace}})")],
    ),
    graph(
        "Oldest pending message by partition",
        "Age of the oldest message read from the partition and not yet done; 0 when nothing is pending.",
        [(by_partition("oldest_pending_age_seconds"), "{{topic}}/{{partition}} ({{namespace}})")],
        "s",
    ),
    graph("Offset commits /s", "Offset commits by result.", [(rate_by("result", "commits_total"), "{{result}}")]),
    graph(
        "Rebalances",
        "Partition assignments, revocations and losses (the group moved on without this member).",
        [(f"sum by (kind) (increase({series('rebalances_total')}{RATE_INTERVAL}))", "{{kind}}")],
        bars=True,
    ),
    graph(
        "Assigned partitions by pod",
        "Partitions each member owns.",
        [(f"sum by (pod) ({series('assigned_partitions')})", "{{pod}}")],
    ),
    graph(
        "Paused partitions (backpressure)",
        "Partitions paused because too many messages are pending; reading resumes when half are done.",
        [
            (f"sum by (pod) ({series('paused_partitions')})", "{{pod}} partitions"),
            (f"max by (pod) ({series('consumption_paused')})", "{{pod}} reading paused"),
        ],
    ),
]

ERRORS = [
    graph(
        "Invalid messages /s by stage",
        "Messages that can never be delivered: deserialize (not JSON, or not in its format), map "
        "(no name, no id, bad timestamp...), deliver (UserFlux refused the event).",
        [(rate_by("stage", "messages_invalid_total", topic=True), "{{stage}}")],
    ),
    graph(
        "Invalid messages /s by action",
        "What on_invalid did with them: dead_letter, skip, stop, print (dry run).",
        [(rate_by("action", "messages_invalid_total", topic=True), "{{action}}")],
    ),
    graph(
        "Dead letters /s",
        "Invalid messages written to the dead-letter topic, by source topic and stage.",
        [(rate_by("topic, stage", "dead_letters_total", topic=True), "{{topic}} {{stage}}")],
    ),
    graph(
        "Dead letters refused by the broker",
        "The run stops at the first one and commits nothing past it.",
        [
            (
                f"sum by (topic, stage) (increase({series('dead_letter_failures_total', topic=True)}{RATE_INTERVAL}))",
                "{{topic}} {{stage}}",
            )
        ],
        bars=True,
    ),
    graph(
        "Requests UserFlux refused",
        "rejected (400/413/422), auth (401/403) and fatal answers, by code, per interval: one refusal "
        "shows too (a refused key is one request, then the pod stops).",
        [(counted("outcome, code", "requests_total", extra=REFUSED), "{{outcome}} {{code}}")],
        bars=True,
    ),
    graph(
        "Write key refused",
        "1 while a pod lingers after UserFlux refused the write key or the address; it "
        "then exits with code 3 and restarts.",
        [(f"max by (pod) ({series('key_refused')})", "{{pod}}")],
    ),
]

REGISTRY = [
    graph(
        "Schema registry requests /s; reading waiting",
        "Requests for writer schemas (Avro, Protobuf, JSON Schema topics), by outcome: each schema id is "
        "fetched once. 'waiting' is 1 while reading waits for the registry to answer (unreachable, "
        "timeout, 5xx): nothing is dead-lettered meanwhile, and the lag grows.",
        [
            (rate_by("outcome", "schema_registry_requests_total"), "{{outcome}}"),
            (f"max by (pod) ({series('schema_registry_waiting')})", "{{pod}} waiting"),
        ],
    ),
    graph(
        "Decode failures /s by format and reason",
        "Values or keys that did not decode in their format (each is an invalid message at stage "
        "deserialize): not_wire_format, unknown_schema, wrong_schema_type, bad_schema, undecodable.",
        [(rate_by("format, reason", "decode_failures_total"), "{{format}} {{reason}}")],
    ),
    graph(
        "Schemas cached by pod",
        "Writer schemas held compiled (at most schema_registry.cache_size).",
        [(f"max by (pod) ({series('schemas_cached')})", "{{pod}}")],
    ),
]

ROWS = [
    ("Overview", OVERVIEW),
    ("Throughput", THROUGHPUT),
    ("Delivery", DELIVERY),
    ("Kafka", KAFKA),
    ("Errors", ERRORS),
    ("Schema registry", REGISTRY),
]


def layout(rows: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Rows one under the other, their panels left to right, wrapping at Grafana's 24 columns."""
    panels, y, next_id = [], 0, 1
    for title, members in rows:
        panels.append(
            {
                "type": "row",
                "title": title,
                "id": next_id,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        next_id, y, x, line_height = next_id + 1, y + 1, 0, 0
        for panel in members:
            w, h = (STAT_WIDTH, STAT_HEIGHT) if panel["type"] == "stat" else (GRAPH_WIDTH, GRAPH_HEIGHT)
            if x + w > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append({"id": next_id, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **panel})
            next_id, x, line_height = next_id + 1, x + w, max(line_height, h)
        y += line_height
    return panels


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value query variable whose "All" is the regex ``.*`` (queries match with =~)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {},
        "options": [],
        "hide": 0,
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": TITLE,
        "description": "Kafka to UserFlux stream connector: throughput, delivery, Kafka consumption and errors.",
        "tags": ["userflux-connector", "kafka", "userflux"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "id": None,
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "weekStart": "",
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "regex": "",
                    "current": {},
                    "options": [],
                    "hide": 0,
                    "refresh": 1,
                    "multi": False,
                    "includeAll": False,
                },
                variable("namespace", "Namespace", f"label_values({PREFIX}build_info, namespace)"),
                variable("pod", "Pod", f'label_values({PREFIX}build_info{{namespace=~"$namespace"}}, pod)'),
                variable("topic", "Topic", f"label_values({series('messages_consumed_total')}, topic)"),
                variable(
                    "destination",
                    "Destination",
                    f"label_values({PREFIX}requests_total{{{PODS}}}, destination)",
                ),
            ]
        },
        "panels": layout(ROWS),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    text = render()
    OUTPUT.write_text(text)
    (CHART_FILES / OUTPUT.name).write_text(text)
    (CHART_FILES / RULES.name).write_text(RULES.read_text())
    print(f"wrote {OUTPUT.name}, and the chart's copies of it and of {RULES.name}")


if __name__ == "__main__":
    main()
