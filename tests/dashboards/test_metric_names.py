"""Reading metric names out of PromQL, and docs/operations.md as the reference of every metric used."""

from __future__ import annotations

import pytest

from tests.support.docs import github_anchor, heading_anchors
from tests.support.monitoring import (
    OPERATIONS,
    Selector,
    dashboard_expressions,
    documented_metrics,
    documented_name,
    exported_series,
    load_dashboard,
    load_rules,
    metric_names,
    rule_expressions,
    selectors,
    substitute_grafana_variables,
    used_metric_names,
    variable_query,
)


@pytest.mark.parametrize(
    "expr, names",
    [
        (
            'histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket{pod=~"$pod"}[$__rate_interval])))',
            {"x_seconds_bucket"},
        ),
        (
            "sum(rate(a_total[5m])) / ignoring(code) group_left sum(rate(b_total[5m] offset 1h)) > bool 1e3",
            {"a_total", "b_total"},
        ),
        ('count by (namespace, job) (up{job=~".*"}) unless on (namespace) (up == 1) or absent(up)', {"up"}),
        ("deriv((sum by (topic) (max by (topic, partition) (lag)))[15m:1m]) > 0", {"lag"}),
        ("sum(x) by (le, pod) + sum without (instance) (y)", {"x", "y"}),
        ('{__name__="by_name", a="b"}', {"by_name"}),
        ('label_replace(x, "dst", "$1", "src", "(.*)") and time() - z @ 100 > Inf', {"x", "z"}),
        ('max_over_time(k{a="sum(not_a_metric)"}[15m]) == 1', {"k"}),
        ("topk(3, rate(c_total[1m])) or vector(0)", {"c_total"}),
    ],
)
def test_metric_names_are_the_series_an_expression_reads(expr, names):
    assert metric_names(expr) == names


def test_selectors_keep_their_label_matchers():
    (selector,) = selectors('rate(x_total{namespace=~"$namespace", code!="204", "quoted"="v\\"q"}[5m])')
    assert selector == Selector(
        "x_total", (("namespace", "=~", "$namespace"), ("code", "!=", "204"), ("quoted", "=", 'v"q'))
    )
    assert selector.matcher("code") == ("!=", "204")
    assert selector.matcher("pod") is None


def test_documented_name_strips_histogram_suffixes_only_from_histograms():
    histograms = {"x_seconds", "batch_events"}
    assert documented_name("x_seconds_bucket", histograms) == "x_seconds"
    assert documented_name("batch_events_count", histograms) == "batch_events"
    assert documented_name("batch_events_sum", histograms) == "batch_events"
    assert documented_name("objects_count", histograms) == "objects_count"  # a gauge named so
    assert documented_name("retries_total", histograms) == "retries_total"


def test_grafana_variables_become_what_prometheus_receives():
    assert (
        substitute_grafana_variables('rate(x{a=~"$namespace", b=~"${pod}"}[$__rate_interval])')
        == 'rate(x{a=~".*", b=~".*"}[5m])'
    )
    assert substitute_grafana_variables("increase(x[$__interval]) / ${__range}") == "increase(x[1m]) / 1h"


def test_variable_queries_yield_their_expression():
    assert variable_query({"type": "query", "query": {"query": 'label_values(m{a=~"$a"}, pod)'}}) == 'm{a=~"$a"}'
    assert variable_query({"type": "query", "query": "query_result(sum(m))"}) == "sum(m)"
    assert variable_query({"type": "query", "query": "label_values(pod)"}) is None
    assert variable_query({"type": "datasource", "query": "prometheus"}) is None


def test_exported_series_come_from_type_lines_and_samples():
    scrape = "\n".join(
        [
            "# HELP a_total Things.",
            "# TYPE a_total counter",  # no sample yet: still exported
            "# TYPE d_seconds histogram",
            'd_seconds_bucket{le="+Inf"} 1.0',
            "d_seconds_count 1.0",
            "d_seconds_sum 0.1",
            "# TYPE g gauge",
            'g{topic="t"} 3.0',
            "untyped_one 1",
        ]
    )
    assert exported_series(scrape) == {
        "a_total": "counter",
        "d_seconds_bucket": "histogram",
        "d_seconds_sum": "histogram",
        "d_seconds_count": "histogram",
        "g": "gauge",
        "untyped_one": "untyped",
    }


def test_github_anchors():
    assert github_anchor(" UserFluxConnectorDown") == "userfluxconnectordown"
    assert github_anchor("`on_invalid` and `dead_letter`") == "on_invalid-and-dead_letter"
    assert github_anchor("Dashboard and alerts") == "dashboard-and-alerts"
    assert "dashboard-and-alerts" in heading_anchors(OPERATIONS.read_text())
    assert "not-a-heading" not in heading_anchors("```\n# not a heading\n```\n")


def test_the_docs_document_every_metric_the_dashboard_and_the_alerts_use():
    documented = documented_metrics()
    histograms = [m.name for m in documented.values() if m.type == "histogram"]
    used = used_metric_names(dashboard_expressions(load_dashboard()) + rule_expressions(load_rules()))
    assert used, "no metric found: the extraction is broken"
    missing = {name: where for name, where in used.items() if documented_name(name, histograms) not in documented}
    assert missing == {}, "used but not in the metric table of docs/operations.md"


def test_the_metric_table_is_well_formed():
    documented = documented_metrics()
    assert len(documented) >= 20
    for metric in documented.values():
        assert metric.type in ("counter", "gauge", "histogram"), metric
        assert metric.name.endswith("_total") == (metric.type == "counter"), metric
    assert documented["userflux_connector_consumer_lag_messages"].labels == ("topic", "partition")
    assert documented["userflux_connector_requests_total"].labels == ("outcome", "code", "destination")
