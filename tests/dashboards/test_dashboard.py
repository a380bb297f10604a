"""The Grafana dashboard: up to date with its generator, importable, and its queries sound."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from dashboards import build_dashboard
from tests.support.monitoring import (
    DASHBOARD,
    dashboard_expressions,
    dashboard_panels,
    documented_metrics,
    documented_name,
    load_dashboard,
    metric_names,
    selectors,
    substitute_grafana_variables,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return load_dashboard()


def graphs(dashboard: dict) -> list[dict]:
    return [p for p in dashboard_panels(dashboard) if p["type"] != "row"]


def rows(dashboard: dict) -> dict[str, list[dict]]:
    """Row title -> the panels under it (rows are flat: a panel belongs to the row above it)."""
    found: dict[str, list[dict]] = {}
    current = None
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = found.setdefault(panel["title"], [])
        else:
            assert current is not None, f"panel {panel['title']!r} above the first row"
            current.append(panel)
    return found


def test_the_committed_json_is_what_the_generator_builds():
    assert DASHBOARD.read_text() == build_dashboard.render(), "run `make dashboard` and commit the JSON"


def test_identity_and_a_schema_grafana_10_reads(dashboard):
    assert dashboard["uid"] == "userflux-connector"
    assert dashboard["title"]
    assert dashboard["id"] is None  # import creates it; no instance's database id
    # 36 made data sources objects ({type, uid}); 38 is Grafana 10.0's, 39 Grafana 10.4's.
    assert 36 <= dashboard["schemaVersion"] <= 39


def test_the_variables_are_a_prometheus_data_source_then_namespace_pod_topic_and_destination(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "pod", "topic", "destination"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "pod", "topic", "destination"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE
        assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"
        assert re.fullmatch(rf"label_values\(.+, {name}\)", variable["definition"])
    # Each narrows the next: pods of the chosen namespaces, topics of the chosen pods.
    assert 'namespace=~"$namespace"' in variables["pod"]["definition"]
    assert 'pod=~"$pod"' in variables["topic"]["definition"]
    assert 'pod=~"$pod"' in variables["destination"]["definition"]


def test_every_panel_and_query_uses_the_data_source_variable(dashboard):
    for panel in graphs(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panel_ids_are_unique_and_panels_do_not_overlap(dashboard):
    panels = list(dashboard_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_rows_are_overview_throughput_delivery_kafka_errors_schema_registry(dashboard):
    assert list(rows(dashboard)) == ["Overview", "Throughput", "Delivery", "Kafka", "Errors", "Schema registry"]


def used_in(panels: list[dict]) -> set[str]:
    histograms = [m.name for m in documented_metrics().values() if m.type == "histogram"]
    return {
        documented_name(name, histograms).removeprefix("userflux_connector_")
        for panel in panels
        for target in panel["targets"]
        for name in metric_names(target["expr"])
    }


def test_the_overview_is_six_stats_for_what_matters_most(dashboard):
    overview = rows(dashboard)["Overview"]
    assert [p["type"] for p in overview] == ["stat"] * 6
    assert used_in(overview) == {
        "events_delivered_total",
        "requests_total",
        "consumer_lag_messages",
        "dead_letters_total",
        "oldest_pending_age_seconds",
        "up",
    }
    by_title = {p["title"]: p for p in overview}
    assert by_title["Error ratio"]["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert by_title["Oldest pending"]["fieldConfig"]["defaults"]["unit"] == "s"


@pytest.mark.parametrize(
    "row, metrics",
    [
        ("Throughput", {"messages_consumed_total", "events_delivered_total", "messages_filtered_total"}),
        (
            "Delivery",
            {
                "requests_total",
                "request_duration_seconds",
                "end_to_end_latency_seconds",
                "retries_total",
                "retry_wait_seconds_total",
                "rate_cap_wait_seconds_total",
                "in_flight_batches",
                "in_flight_events",
                "batch_events",
            },
        ),
        ("Kafka", {"consumer_lag_messages", "commits_total", "rebalances_total", "paused_partitions"}),
        ("Errors", {"messages_invalid_total", "dead_letters_total"}),
    ],
)
def test_each_row_shows_what_the_issue_lists(dashboard, row, metrics):
    assert metrics <= used_in(rows(dashboard)[row])


def test_latency_panels_show_p50_p95_p99(dashboard):
    for title in ("Request latency", "End-to-end latency"):
        panel = next(p for p in graphs(dashboard) if p["title"] == title)
        quantiles = [re.match(r"histogram_quantile\(([\d.]+),", t["expr"]).group(1) for t in panel["targets"]]
        assert quantiles == ["0.5", "0.95", "0.99"]
        assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_every_selector_filters_by_namespace_pod_topic_and_destination_where_it_has_one(dashboard):
    documented = documented_metrics()
    histograms = [m.name for m in documented.values() if m.type == "histogram"]
    for where, expr in dashboard_expressions(dashboard):
        if where.startswith("variable"):
            continue  # variables filter by the variables before them; checked above
        for selector in selectors(expr):
            assert selector.matcher("namespace") == ("=~", "$namespace"), f"{where}: {selector}"
            assert selector.matcher("pod") == ("=~", "$pod"), f"{where}: {selector}"
            if selector.name == "up":
                assert selector.matcher("job") == ("=", "userflux-connector"), where
                continue
            metric = documented[documented_name(selector.name, histograms)]
            if "topic" in metric.labels:
                assert selector.matcher("topic") == ("=~", "$topic"), f"{where}: {selector}"
            if "destination" in metric.labels:
                assert selector.matcher("destination") == ("=~", "$destination"), f"{where}: {selector}"
            else:
                assert selector.matcher("destination") is None, f"{where}: {selector} has no destination label"


def test_counters_are_read_with_rate_and_histograms_with_quantiles_over_le(dashboard):
    documented = documented_metrics()
    histograms = [m.name for m in documented.values() if m.type == "histogram"]
    for where, expr in dashboard_expressions(dashboard):
        if where.startswith("variable"):
            continue  # label_values() reads any series
        for name in metric_names(expr) - {"up"}:
            kind = documented[documented_name(name, histograms)].type
            in_rate = re.search(rf"\b(rate|increase)\({name}\{{", expr)
            if kind == "counter" or name.endswith(("_sum", "_count")):
                assert in_rate, f"{where}: the counter {name} is read without rate()"
            elif name.endswith("_bucket"):
                by = re.search(rf"histogram_quantile\([\d.]+, sum by \(([^)]*)\) \(rate\({name}\{{", expr)
                assert by and "le" in [x.strip() for x in by.group(1).split(",")], f"{where}: {expr}"
            else:
                assert not in_rate, f"{where}: the {kind} {name} is read with rate()"


def test_every_query_is_valid_promql(dashboard, promtool, tmp_path):
    """promtool parses rule files: each query becomes a throwaway recording rule."""
    expressions = dashboard_expressions(dashboard)
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(expr)}
                    for i, (_, expr) in enumerate(expressions)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout
