"""The Prometheus harness itself: a real Prometheus, configured from what the chart renders.

The chart (ci/monitoring-values.yaml) renders a ServiceMonitor and the PrometheusRule;
tests/support/prometheus_operator.py turns them into the scrape job and rule file the
Prometheus Operator would generate, with file-based discovery standing in for Kubernetes.
The target is a tiny prometheus-client server on loopback, not the connector: this test
checks the harness (labels as the Operator sets them, the repository's rules loaded and
evaluated, an alert reaching firing, every dashboard query accepted by PromQL), so the
tests that use it can trust it. No Kafka; a few seconds.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from tests.support.grafana_vars import ALL, compute_intervals, dashboard_variables, interpolate
from tests.support.helm import NAMESPACE, POD_ENV, RELEASE, SCENARIOS, one, render
from tests.support.monitoring import ALERTS, dashboard_expressions, load_dashboard, load_rules
from tests.support.prometheus import PrometheusError, PrometheusServer
from tests.support.prometheus_operator import (
    Pod,
    Service,
    endpoint_target,
    pod_target,
    scrape_configs,
    write_rule_file,
    write_targets,
)

POD_NAME = POD_ENV["POD_NAME"]
SCRAPE_INTERVAL = "1s"
# A test-only rule: always true, firing after its (short) `for`.
ALWAYS_TRUE = {
    "groups": [
        {
            "name": "harness",
            "rules": [
                {"alert": "HarnessAlwaysTrue", "expr": "vector(1)", "for": "2s", "labels": {"severity": "none"}},
                {
                    "alert": "HarnessTargetUp",
                    "expr": 'harness_smoke_ready{job="userflux-connector"} == 1',
                    "for": "1s",
                },
            ],
        }
    ]
}


@pytest.fixture(scope="module")
def exporter():
    """A prometheus-client server on loopback: the stand-in target."""
    registry = CollectorRegistry()
    Gauge("harness_smoke_ready", "Always 1.", registry=registry).set(1)
    Counter("harness_smoke_ticks", "Counts nothing much.", registry=registry).inc(3)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def start(work, configs, rules, binary) -> PrometheusServer:
    try:
        return PrometheusServer(
            work, configs, rules, scrape_interval=SCRAPE_INTERVAL, evaluation_interval="1s", binary=binary
        ).start()
    except PrometheusError as exc:
        pytest.fail(f"Prometheus could not start:\n{exc}", pytrace=False)


def promtool_check(promtool: str, *args: str) -> None:
    result = subprocess.run([promtool, "check", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render([SCENARIOS["monitoring"]], api_versions=["monitoring.coreos.com/v1"])


@pytest.fixture(scope="module")
def pod(rendered, exporter) -> Pod:
    template = one(rendered, "Deployment")["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["metrics"]
    return Pod(
        name=POD_NAME,
        namespace=NAMESPACE,
        address=exporter,
        labels=template["metadata"]["labels"],
        container=container["name"],
    )


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, rendered, pod, promtool, prometheus_binary):
    work = tmp_path_factory.mktemp("prometheus")
    monitor, service = one(rendered, "ServiceMonitor"), one(rendered, "Service")
    targets = write_targets(
        work / "targets.json",
        [
            endpoint_target(
                pod,
                Service(
                    name=service["metadata"]["name"],
                    namespace=NAMESPACE,
                    labels=service["metadata"]["labels"],
                    port_name=service["spec"]["ports"][0]["name"],
                ),
            )
        ],
    )
    rules = write_rule_file(one(rendered, "PrometheusRule"), work / "userflux-connector.rules.yaml")
    test_rules = work / "harness.rules.yaml"
    test_rules.write_text(yaml.safe_dump(ALWAYS_TRUE))
    server = PrometheusServer(
        work,
        scrape_configs(monitor, targets, interval=SCRAPE_INTERVAL),
        [rules, test_rules],
        scrape_interval=SCRAPE_INTERVAL,
        evaluation_interval="1s",
        binary=prometheus_binary,
    )
    server.config_path.write_text(yaml.safe_dump(server.config(), sort_keys=False))
    promtool_check(promtool, "rules", str(rules), str(test_rules))
    promtool_check(promtool, "config", str(server.config_path))
    try:
        server.start()
    except PrometheusError as exc:
        pytest.fail(f"Prometheus could not start:\n{exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def test_the_rule_file_is_the_repositorys(rendered):
    rule = one(rendered, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())


def test_the_target_has_the_labels_the_operator_gives_a_servicemonitor_target(prometheus, rendered, exporter):
    monitor = one(rendered, "ServiceMonitor")
    target = prometheus.wait_for_target_up({"namespace": NAMESPACE, "pod": POD_NAME})
    service = one(rendered, "Service")["metadata"]["name"]
    assert target["labels"] == {
        # The Operator names the job after the Service; the chart's relabeling, applied
        # after that, fixes it to what the rules and the dashboard select.
        "job": "userflux-connector",
        "release": RELEASE,
        "namespace": NAMESPACE,
        "pod": POD_NAME,
        "service": service,
        "container": "connector",
        "endpoint": "metrics",
        "instance": exporter,
    }
    assert target["scrapePool"] == f"serviceMonitor/{NAMESPACE}/{monitor['metadata']['name']}/0"
    assert target["scrapeUrl"] == f"http://{exporter}{monitor['spec']['endpoints'][0]['path']}"


def test_a_query_returns_the_targets_series_with_its_labels(prometheus):
    result = prometheus.wait_for_series(f'harness_smoke_ready{{namespace="{NAMESPACE}", pod="{POD_NAME}"}}')
    assert len(result) == 1 and result[0]["value"][1] == "1"
    # The rules find the connector by this job; the target is found by it.
    up = prometheus.query('up{job="userflux-connector"}')
    assert [s["value"][1] for s in up] == ["1"]


def test_a_range_query_returns_samples(prometheus):
    prometheus.wait_for_series("harness_smoke_ticks_total")
    end = time.time()
    result = prometheus.query_range("harness_smoke_ticks_total", end - 30, end, 1)
    assert len(result) == 1 and result[0]["values"] and result[0]["values"][-1][1] == "3"


def test_the_repositorys_rules_are_loaded_and_evaluate_without_error(prometheus):
    groups = prometheus.wait_for_rule_evaluations()
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert {rule["alert"] for rule in load_rules()} <= loaded
    assert next(g for g in groups if g["name"] == "harness")["interval"] == 1


def test_an_always_true_rule_goes_firing(prometheus):
    alert = prometheus.wait_for_alert("HarnessAlwaysTrue", state="firing", timeout_s=20)
    assert alert["labels"] == {"alertname": "HarnessAlwaysTrue", "severity": "none"}
    firing = prometheus.wait_for_alert("HarnessTargetUp", state="firing", timeout_s=20)
    assert firing["labels"]["namespace"] == NAMESPACE and firing["labels"]["pod"] == POD_NAME
    assert prometheus.query('ALERTS{alertname="HarnessAlwaysTrue", alertstate="firing"}')


def test_every_dashboard_query_is_accepted_as_grafana_would_send_it(prometheus):
    dashboard = load_dashboard()
    variables = dashboard_variables(
        dashboard, {"datasource": "prometheus", "namespace": [NAMESPACE], "pod": [POD_NAME], "topic": ALL}
    )
    intervals = compute_intervals(300, max_data_points=1000, scrape_interval=SCRAPE_INTERVAL)
    end = time.time()
    for where, expr in dashboard_expressions(dashboard):
        query = interpolate(expr, variables, intervals)
        try:
            prometheus.query_range(query, end - 300, end, intervals.step_ms / 1000)
        except PrometheusError as exc:
            pytest.fail(f"{where}: Prometheus refused {query!r}: {exc}")


def test_a_podmonitor_target_gets_the_same_job_and_release(tmp_path, pod, prometheus_binary):
    rendered = render([SCENARIOS["podmonitor"]], api_versions=["monitoring.coreos.com/v1"])
    monitor = one(rendered, "PodMonitor")
    targets = write_targets(tmp_path / "targets.json", [pod_target(pod)])
    with start(tmp_path, scrape_configs(monitor, targets, interval=SCRAPE_INTERVAL), [], prometheus_binary) as server:
        target = server.wait_for_target_up({"pod": POD_NAME})
    name = monitor["metadata"]["name"]
    assert monitor["metadata"]["name"] == name  # the Operator's job would be f"{NAMESPACE}/{name}"
    assert target["labels"] == {
        "job": "userflux-connector",
        "release": RELEASE,
        "namespace": NAMESPACE,
        "pod": POD_NAME,
        "container": "connector",
        "endpoint": "metrics",
        "instance": pod.address,
    }


def test_a_pod_the_selector_does_not_pick_is_not_scraped(tmp_path, rendered, pod, prometheus_binary):
    stranger = Pod(name="other-0", namespace=NAMESPACE, address=pod.address, labels={"app": "other"})
    targets = write_targets(
        tmp_path / "targets.json",
        [endpoint_target(stranger, Service(name="other", namespace=NAMESPACE, labels={"app": "other"}))],
    )
    with start(
        tmp_path, scrape_configs(one(rendered, "ServiceMonitor"), targets, SCRAPE_INTERVAL), [], prometheus_binary
    ) as server:
        time.sleep(1.5)  # the targets file is read at start; relabelling drops the target
        assert server.targets() == []


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path, prometheus_binary):
    broken = tmp_path / "broken.rules.yaml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: 'sum(('\n")
    with pytest.raises(PrometheusError) as caught:
        PrometheusServer(tmp_path, [], [broken], binary=prometheus_binary).start(timeout_s=15)
    message = str(caught.value)
    assert "exited during start-up" in message and "broken.rules.yaml" in message
