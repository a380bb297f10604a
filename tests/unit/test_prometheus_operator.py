"""The Operator's scrape configuration, as tests/support/prometheus_operator.py writes it."""

from __future__ import annotations

import pytest

from tests.support.prometheus_operator import (
    Pod,
    Service,
    endpoint_target,
    pod_target,
    relabel_config,
    sanitize_label_name,
    scrape_configs,
)

SELECTOR = {"app.kubernetes.io/name": "userflux-connector", "app.kubernetes.io/instance": "uf"}


def service_monitor(**spec):
    endpoint = {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    endpoint.update(spec.pop("endpoint", {}))
    return {
        "kind": "ServiceMonitor",
        "metadata": {"name": "uf-userflux-connector", "namespace": "streaming"},
        "spec": {"selector": {"matchLabels": SELECTOR}, "endpoints": [endpoint], **spec},
    }


def pod_monitor(**spec):
    return {
        "kind": "PodMonitor",
        "metadata": {"name": "uf-userflux-connector", "namespace": "streaming"},
        "spec": {
            "selector": {"matchLabels": SELECTOR},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
            **spec,
        },
    }


def apply(rules, labels):
    """A small relabelling engine, enough for the rules the Operator writes (replace with
    regex and ${1}, keep, drop), to check what they do to a target without Prometheus."""
    import re

    labels = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(labels.get(n, "") for n in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            result = match.expand(rule.get("replacement", "$1").replace("${1}", r"\1").replace("$1", r"\1"))
            if result:
                labels[rule["target_label"]] = result
            else:
                labels.pop(rule["target_label"], None)
    return {k: v for k, v in labels.items() if not k.startswith("__")}


POD = Pod(
    name="uf-userflux-connector-6d9f8-x2x7q",
    namespace="streaming",
    address="10.0.0.7:9400",
    labels={**SELECTOR, "team": "growth"},
)
SERVICE = Service(name="uf-userflux-connector", namespace="streaming", labels={**SELECTOR, "tier": "data"})


def test_label_names_are_sanitized_as_kubernetes_sd_does():
    assert sanitize_label_name("app.kubernetes.io/name") == "app_kubernetes_io_name"


def test_a_servicemonitor_job_is_named_and_timed_as_the_operator_names_it(tmp_path):
    [config] = scrape_configs(service_monitor(), tmp_path / "t.json")
    assert config["job_name"] == "serviceMonitor/streaming/uf-userflux-connector/0"
    assert (config["scrape_interval"], config["scrape_timeout"], config["metrics_path"]) == ("30s", "10s", "/metrics")
    assert config["file_sd_configs"] == [{"files": [str(tmp_path / "t.json")], "refresh_interval": "1s"}]


def test_a_shorter_interval_lowers_the_timeout_to_it(tmp_path):
    [config] = scrape_configs(service_monitor(), tmp_path / "t.json", interval="1s")
    assert (config["scrape_interval"], config["scrape_timeout"]) == ("1s", "1s")


def test_a_servicemonitor_target_gets_the_services_name_as_job():
    [config] = scrape_configs(service_monitor(), "t.json")
    group = endpoint_target(POD, SERVICE)
    labels = apply(config["relabel_configs"], {"job": config["job_name"], **group["labels"]})
    assert labels == {
        "job": "uf-userflux-connector",
        "namespace": "streaming",
        "pod": POD.name,
        "service": "uf-userflux-connector",
        "container": "connector",
        "endpoint": "metrics",
    }


def test_job_label_takes_the_value_of_the_named_service_label():
    [config] = scrape_configs(
        service_monitor(jobLabel="tier", targetLabels=["tier"], podTargetLabels=["team"]), "t.json"
    )
    labels = apply(config["relabel_configs"], endpoint_target(POD, SERVICE)["labels"])
    assert (labels["job"], labels["tier"], labels["team"]) == ("data", "data", "growth")


def test_a_job_label_the_service_lacks_leaves_the_services_name():
    [config] = scrape_configs(service_monitor(jobLabel="absent"), "t.json")
    assert apply(config["relabel_configs"], endpoint_target(POD, SERVICE)["labels"])["job"] == SERVICE.name


def test_a_podmonitor_target_gets_namespace_slash_name_as_job():
    [config] = scrape_configs(pod_monitor(), "t.json")
    assert config["job_name"] == "podMonitor/streaming/uf-userflux-connector/0"
    labels = apply(config["relabel_configs"], pod_target(POD)["labels"])
    assert labels == {
        "job": "streaming/uf-userflux-connector",
        "namespace": "streaming",
        "pod": POD.name,
        "container": "connector",
        "endpoint": "metrics",
    }


def test_a_podmonitor_job_label_comes_from_the_pod():
    [config] = scrape_configs(pod_monitor(jobLabel="team"), "t.json")
    assert apply(config["relabel_configs"], pod_target(POD)["labels"])["job"] == "growth"


def test_targets_the_selector_or_the_port_does_not_pick_are_dropped():
    [config] = scrape_configs(service_monitor(), "t.json")
    other = Service(name="other", namespace="streaming", labels={"app.kubernetes.io/name": "other"})
    assert apply(config["relabel_configs"], endpoint_target(POD, other)["labels"]) is None
    wrong_port = Service(name=SERVICE.name, namespace="streaming", labels=SERVICE.labels, port_name="http")
    assert apply(config["relabel_configs"], endpoint_target(POD, wrong_port)["labels"]) is None


def test_match_expressions_become_keep_and_drop_rules():
    monitor = service_monitor()
    monitor["spec"]["selector"] = {
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["data", "web"]},
            {"key": "legacy", "operator": "DoesNotExist"},
        ]
    }
    [config] = scrape_configs(monitor, "t.json")
    assert apply(config["relabel_configs"], endpoint_target(POD, SERVICE)["labels"]) is not None
    legacy = Service(name=SERVICE.name, namespace="streaming", labels={**SERVICE.labels, "legacy": "yes"})
    assert apply(config["relabel_configs"], endpoint_target(POD, legacy)["labels"]) is None


def test_the_monitors_own_relabelings_come_after_the_operators():
    monitor = service_monitor(
        endpoint={
            "relabelings": [
                {"sourceLabels": ["__meta_kubernetes_pod_label_team"], "targetLabel": "team", "action": "Replace"}
            ],
            "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}],
        }
    )
    [config] = scrape_configs(monitor, "t.json")
    assert config["relabel_configs"][-1] == {
        "source_labels": ["__meta_kubernetes_pod_label_team"],
        "target_label": "team",
        "action": "replace",
    }
    assert config["metric_relabel_configs"] == [{"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"}]


def test_an_unknown_relabel_field_is_refused():
    with pytest.raises(ValueError, match="nonsense"):
        relabel_config({"nonsense": 1})
