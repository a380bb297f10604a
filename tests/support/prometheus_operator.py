"""The scrape configuration the Prometheus Operator generates for the chart's monitor, with
file-based service discovery standing in for Kubernetes.

No Kubernetes runs in the tests. The Operator turns a ServiceMonitor (or PodMonitor) into
a Prometheus scrape job that discovers targets through the Kubernetes API and relabels
their ``__meta_kubernetes_*`` labels into ``namespace``, ``pod``, ``job``... This module
writes the same relabelling rules for a rendered monitor (``scrape_configs``), and a
``file_sd`` targets file (``write_targets``) whose target groups carry the meta labels
Kubernetes service discovery would give the pod (``role: pod``, for a PodMonitor) or the
endpoint of the Service in front of it (``role: endpoints``, for a ServiceMonitor). So
``job`` and the other target labels come out of the relabelling, as in a cluster, and
are not written by the test.

What the Operator generates (``pkg/prometheus/promcfg.go``, ``generateServiceMonitorConfig``
and ``generatePodMonitorConfig``; the expected configurations in ``promcfg_test.go``;
the field docs in ``pkg/apis/monitoring/v1/servicemonitor_types.go`` and
``podmonitor_types.go``), in order:

- job name ``serviceMonitor/<namespace>/<name>/<endpoint index>`` (``podMonitor/...``);
  ``scrape_interval``, ``scrape_timeout``, ``metrics_path``, ``scheme`` from the endpoint;
- ``job`` copied to ``__tmp_prometheus_job_name``;
- the selector as ``keep`` rules: ``matchLabels`` k: v on
  ``[__meta_kubernetes_service_label_k, __meta_kubernetes_service_labelpresent_k]``
  with regex ``(v);true`` (``pod_label`` for a PodMonitor); ``matchExpressions`` In,
  NotIn, Exists, DoesNotExist likewise;
- the port: ``keep`` on ``__meta_kubernetes_endpoint_port_name`` (ServiceMonitor) or
  ``__meta_kubernetes_pod_container_port_name`` (PodMonitor) equal to the endpoint's port;
- target labels. ServiceMonitor: ``node`` or ``pod`` from the endpoint address's target
  (``Node;(.*)`` / ``Pod;(.*)``), ``namespace``, ``service``, ``pod``, ``container``;
  then ``targetLabels`` (from the Service) and ``podTargetLabels`` (from the Pod).
  PodMonitor: ``namespace``, ``container``, ``pod``, then ``podTargetLabels``;
- ``job``: ServiceMonitor: the Service's name, replaced by the value of the Service label
  named by ``spec.jobLabel`` when set and present. PodMonitor: ``<namespace>/<name>`` of
  the PodMonitor, replaced by the value of the Pod label named by ``spec.jobLabel``;
- ``endpoint``: the endpoint's port name;
- the endpoint's own ``relabelings``, then (when set) the enforced namespace label, then
  the sharding ``hashmod`` (left out here: one shard keeps every target);
- ``metric_relabel_configs`` from ``metricRelabelings``.

``instance`` is not written by the Operator: Prometheus sets it to ``__address__`` (the
pod's IP and port in a cluster; 127.0.0.1 and the test server's port here). The
Prometheus object's external labels (``prometheus``, ``prometheus_replica``) are not
target labels: queries and rules do not see them.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

_INVALID_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")


def sanitize_label_name(name: str) -> str:
    """Kubernetes label key -> Prometheus label name, as Kubernetes SD and the Operator do."""
    return _INVALID_LABEL_CHAR.sub("_", name)


@dataclasses.dataclass(frozen=True)
class Pod:
    """A pod as Kubernetes service discovery would describe it; ``address`` is where its
    metrics port listens (host:port)."""

    name: str
    namespace: str
    address: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    container: str = "connector"
    port_name: str = "metrics"


@dataclasses.dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    port_name: str = "metrics"


def _labels(prefix: str, labels: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for key, value in labels.items():
        found[f"__meta_kubernetes_{prefix}_label_{sanitize_label_name(key)}"] = value
        found[f"__meta_kubernetes_{prefix}_labelpresent_{sanitize_label_name(key)}"] = "true"
    return found


def pod_target(pod: Pod) -> dict[str, Any]:
    """A file_sd target group with the meta labels of ``role: pod`` for the pod's port."""
    port = pod.address.rsplit(":", 1)[1]
    return {
        "targets": [pod.address],
        "labels": {
            "__meta_kubernetes_namespace": pod.namespace,
            "__meta_kubernetes_pod_name": pod.name,
            "__meta_kubernetes_pod_ready": "true",
            "__meta_kubernetes_pod_phase": "Running",
            "__meta_kubernetes_pod_container_name": pod.container,
            "__meta_kubernetes_pod_container_port_name": pod.port_name,
            "__meta_kubernetes_pod_container_port_number": port,
            "__meta_kubernetes_pod_container_port_protocol": "TCP",
            **_labels("pod", pod.labels),
        },
    }


def endpoint_target(pod: Pod, service: Service) -> dict[str, Any]:
    """A file_sd target group with the meta labels of ``role: endpoints`` for the Service's
    endpoint on the pod (the pod's meta labels are attached too, as Kubernetes SD does)."""
    group = pod_target(pod)
    group["labels"].update(
        {
            "__meta_kubernetes_service_name": service.name,
            **_labels("service", service.labels),
            "__meta_kubernetes_endpoints_name": service.name,
            "__meta_kubernetes_endpoint_port_name": service.port_name,
            "__meta_kubernetes_endpoint_port_protocol": "TCP",
            "__meta_kubernetes_endpoint_ready": "true",
            "__meta_kubernetes_endpoint_address_target_kind": "Pod",
            "__meta_kubernetes_endpoint_address_target_name": pod.name,
        }
    )
    return group


def write_targets(path: pathlib.Path, groups: Iterable[Mapping[str, Any]]) -> pathlib.Path:
    """Write a file_sd targets file (JSON); Prometheus re-reads it when it changes."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(list(groups), indent=1))
    tmp.replace(path)  # atomically: Prometheus never reads half a file
    return path


# --- relabelling ---------------------------------------------------------------------------

_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


def relabel_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A monitor's RelabelConfig (camelCase, any-case action) as Prometheus configuration."""
    unknown = set(spec) - set(_RELABEL_KEYS)
    if unknown:
        raise ValueError(f"relabel config with unknown fields {sorted(unknown)}: {dict(spec)}")
    config = {_RELABEL_KEYS[k]: v for k, v in spec.items()}
    if "action" in config:
        config["action"] = str(config["action"]).lower()
    return config


def _selector_rules(selector: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    rules = []
    for key in sorted(selector.get("matchLabels") or {}):
        name = sanitize_label_name(key)
        rules.append(
            {
                "action": "keep",
                "source_labels": [
                    f"__meta_kubernetes_{prefix}_label_{name}",
                    f"__meta_kubernetes_{prefix}_labelpresent_{name}",
                ],
                "regex": f"({selector['matchLabels'][key]});true",
            }
        )
    for expression in selector.get("matchExpressions") or []:
        name, op = sanitize_label_name(expression["key"]), expression["operator"]
        values = "|".join(expression.get("values") or [])
        label, present = f"__meta_kubernetes_{prefix}_label_{name}", f"__meta_kubernetes_{prefix}_labelpresent_{name}"
        if op in ("In", "NotIn"):
            rules.append(
                {
                    "action": "keep" if op == "In" else "drop",
                    "source_labels": [label, present],
                    "regex": f"({values});true",
                }
            )
        elif op in ("Exists", "DoesNotExist"):
            rules.append({"action": "keep" if op == "Exists" else "drop", "source_labels": [present], "regex": "true"})
        else:
            raise ValueError(f"unknown selector operator {op!r}")
    return rules


def _copy_labels(source_prefix: str, names: Iterable[str]) -> list[dict[str, Any]]:
    return [
        {
            "source_labels": [f"__meta_kubernetes_{source_prefix}_label_{sanitize_label_name(n)}"],
            "target_label": sanitize_label_name(n),
            "regex": "(.+)",
            "replacement": "${1}",
        }
        for n in names
    ]


def relabel_configs(monitor: Mapping[str, Any], endpoint: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The relabel_configs the Operator generates for one endpoint of the monitor."""
    kind, spec, meta = monitor["kind"], monitor["spec"], monitor["metadata"]
    if "port" not in endpoint:
        raise ValueError("only endpoints with a named port are mimicked (the chart's are)")
    rules: list[dict[str, Any]] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    if kind == "ServiceMonitor":
        rules += _selector_rules(spec.get("selector") or {}, "service")
        rules.append(
            {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": endpoint["port"]}
        )
        target = ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"]
        rules += [
            {
                "source_labels": target,
                "separator": ";",
                "regex": "Node;(.*)",
                "replacement": "${1}",
                "target_label": "node",
            },
            {
                "source_labels": target,
                "separator": ";",
                "regex": "Pod;(.*)",
                "replacement": "${1}",
                "target_label": "pod",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        ]
        rules += _copy_labels("service", spec.get("targetLabels") or [])
        rules += _copy_labels("pod", spec.get("podTargetLabels") or [])
        rules.append(
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"}
        )
        if spec.get("jobLabel"):
            rules += _copy_labels("service", [spec["jobLabel"]])
            rules[-1]["target_label"] = "job"
    elif kind == "PodMonitor":
        rules += _selector_rules(spec.get("selector") or {}, "pod")
        rules.append(
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": endpoint["port"],
            }
        )
        rules += [
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]
        rules += _copy_labels("pod", spec.get("podTargetLabels") or [])
        rules.append({"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"})
        if spec.get("jobLabel"):
            rules += _copy_labels("pod", [spec["jobLabel"]])
            rules[-1]["target_label"] = "job"
    else:
        raise ValueError(f"not a ServiceMonitor or PodMonitor: {kind}")
    rules.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    rules += [relabel_config(r) for r in endpoint.get("relabelings") or []]
    return rules


def _endpoints(monitor: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    key = "endpoints" if monitor["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
    return list(monitor["spec"].get(key) or [])


def duration_seconds(duration: str) -> float:
    """A Prometheus duration (`5m`, `1h30m`, `500ms`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, pos = 0.0, 0
    for match in re.finditer(r"(\d+)(ms|s|m|h|d|w|y)", duration):
        if match.start() != pos:
            break
        total, pos = total + int(match.group(1)) * units[match.group(2)], match.end()
    if pos != len(duration) or not duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return total


def scrape_interval(monitor: Mapping[str, Any], index: int = 0) -> str | None:
    """The rendered scrape interval of the monitor's endpoint (None: Prometheus' global)."""
    return _endpoints(monitor)[index].get("interval")


def scrape_configs(
    monitor: Mapping[str, Any], targets_file: pathlib.Path, interval: str | None = None
) -> list[dict[str, Any]]:
    """One scrape config per endpoint of a rendered ServiceMonitor or PodMonitor, discovering
    its targets from ``targets_file``.

    ``interval`` replaces the rendered scrape interval (tests cannot wait 30 s per
    sample); the scrape timeout is then lowered to the interval when above it, which
    Prometheus requires. Everything else is as the Operator generates it.
    """
    meta, kind = monitor["metadata"], monitor["kind"]
    prefix = "serviceMonitor" if kind == "ServiceMonitor" else "podMonitor"
    configs = []
    for index, endpoint in enumerate(_endpoints(monitor)):
        config: dict[str, Any] = {
            "job_name": f"{prefix}/{meta['namespace']}/{meta['name']}/{index}",
            "honor_labels": bool(endpoint.get("honorLabels", False)),
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        }
        chosen = interval or endpoint.get("interval")
        if chosen:
            config["scrape_interval"] = chosen
        timeout = endpoint.get("scrapeTimeout")
        if timeout and chosen and duration_seconds(timeout) > duration_seconds(chosen):
            timeout = chosen
        if timeout:
            config["scrape_timeout"] = timeout
        if endpoint.get("path"):
            config["metrics_path"] = endpoint["path"]
        if endpoint.get("scheme"):
            config["scheme"] = endpoint["scheme"]
        config["relabel_configs"] = relabel_configs(monitor, endpoint)
        if endpoint.get("metricRelabelings"):
            config["metric_relabel_configs"] = [relabel_config(r) for r in endpoint["metricRelabelings"]]
        configs.append(config)
    if not configs:
        raise ValueError(f"{kind} {meta['name']} has no endpoints")
    return configs


def write_rule_file(prometheus_rule: Mapping[str, Any], path: pathlib.Path) -> pathlib.Path:
    """A rendered PrometheusRule's spec as a Prometheus rules file (its ``groups``), as the
    Operator puts it in the rules ConfigMap it mounts into Prometheus."""
    if prometheus_rule.get("kind") != "PrometheusRule":
        raise ValueError(f"not a PrometheusRule: {prometheus_rule.get('kind')}")
    path.write_text(yaml.safe_dump({"groups": prometheus_rule["spec"]["groups"]}, sort_keys=False))
    return path
