"""connector/metrics.py: the helpers beside the metric definitions."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram

from connector.metrics import observe_many


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
