"""connector/metrics.py: the helpers beside the metric definitions."""

from __future__ import annotations

import random

from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from connector.metrics import STAGES, observe_many, start_series, start_topic_series


def samples(histogram: Histogram) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in histogram.collect()[0].samples
        if not s.name.endswith("_created")
    }


def test_observe_many_counts_exactly_what_observe_would():
    values = [random.choice([0.0, 0.05, 0.1, 0.1000001, 2.5, 1e9, -1.0]) * random.random() for _ in range(500)]
    values += [0.05, 0.1, 2.5]  # on the bounds: a bound is "less than or equal"
    one, many = (Histogram("h", "h", buckets=(0.05, 0.1, 2.5), registry=CollectorRegistry()) for _ in range(2))
    for value in values:
        one.observe(value)
    observe_many(many, values)
    assert samples(one) == samples(many)


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_counters_with_known_label_values_exist_at_0_before_anything_happens():
    start_topic_series([("known-at-start", "web")], "dead_letter", dead_lettering=True)
    start_series(["web", "mobile"], capped=["mobile"])
    for name in ("messages_consumed", "messages_filtered"):
        assert value(f"userflux_connector_{name}_total", topic="known-at-start") == 0
    assert value("userflux_connector_events_delivered_total", topic="known-at-start", destination="web") == 0
    for stage in STAGES:
        assert (
            value(
                "userflux_connector_messages_invalid_total", topic="known-at-start", stage=stage, action="dead_letter"
            )
            == 0
        )
        assert value("userflux_connector_dead_letters_total", topic="known-at-start", stage=stage) == 0
        assert value("userflux_connector_dead_letter_failures_total", topic="known-at-start", stage=stage) == 0
    assert value("userflux_connector_commits_total", result="failed") is not None
    assert value("userflux_connector_rebalances_total", kind="lost") is not None
    assert value("userflux_connector_retry_wait_seconds_total", cause="retry_after", destination="mobile") == 0
    assert value("userflux_connector_rate_cap_wait_seconds_total", destination="mobile") == 0
    assert value("userflux_connector_rate_cap_wait_seconds_total", destination="web") is None  # no cap, no wait


def test_no_dead_letter_series_where_nothing_is_dead_lettered():
    start_topic_series([("skipping-topic", "default")], "skip", dead_lettering=False)
    assert value("userflux_connector_messages_invalid_total", topic="skipping-topic", stage="map", action="skip") == 0
    assert (
        value("userflux_connector_messages_invalid_total", topic="skipping-topic", stage="map", action="dead_letter")
        is None
    )
    assert value("userflux_connector_dead_letters_total", topic="skipping-topic", stage="map") is None
