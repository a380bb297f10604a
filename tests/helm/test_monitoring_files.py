"""The chart ships the repository's dashboard and alert rules byte for byte: its files/
hold copies (real files, so a packaged chart carries them), kept equal to dashboards/
by `make dashboard`."""

from __future__ import annotations

import json

import yaml

from tests.support.connector_process import REPO
from tests.support.helm import CHART, SCENARIOS, one, render, render_text

DASHBOARD = REPO / "dashboards" / "userflux-connector.json"
RULES = REPO / "dashboards" / "alerts.yaml"


def test_the_chart_s_files_are_copies_of_the_repository_s():
    for source in (DASHBOARD, RULES):
        shipped = CHART / "files" / source.name
        assert not shipped.is_symlink(), f"{shipped} is a link: `helm package` elsewhere would not find its target"
        assert shipped.read_bytes() == source.read_bytes(), f"{shipped} differs from {source}: run `make dashboard`"


def test_the_dashboard_configmap_carries_the_dashboard_byte_for_byte():
    manifests = render([SCENARIOS["monitoring"]])
    configmap = one(manifests, "ConfigMap", "-dashboard")
    assert configmap["data"] == {DASHBOARD.name: DASHBOARD.read_text()}
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"  # the sidecar's default label
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert json.loads(configmap["data"][DASHBOARD.name])["uid"] == "userflux-connector"


def test_the_prometheus_rule_is_the_rules_file_byte_for_byte():
    manifests = render([SCENARIOS["monitoring"]])
    rule = one(manifests, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["spec"]["groups"] and all(group["rules"] for group in rule["spec"]["groups"])
    # The text under spec: is the file itself, indented: comments and templates intact.
    text = render_text([SCENARIOS["monitoring"]])
    document = next(d for d in text.split("\n---\n") if "kind: PrometheusRule" in d)
    spec = document.split("\nspec:\n", 1)[1]
    assert "\n".join(line[2:] for line in spec.splitlines()) + "\n" == RULES.read_text().rstrip("\n") + "\n"


def test_monitoring_objects_are_off_unless_asked_for():
    kinds = {m["kind"] for m in render([SCENARIOS["default"]])}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert all(not m["metadata"]["name"].endswith("-dashboard") for m in render([SCENARIOS["default"]]))
