"""The chart lints and renders for its defaults and every ci/ scenario, and every
manifest it renders is valid Kubernetes (offline schemas) or, for the Prometheus
Operator and KEDA kinds, carries the fields those controllers need."""

from __future__ import annotations

import json
import pathlib
import shutil

import kubernetes_validate
import pytest
import yaml

from tests.support.helm import CHART, NAMESPACE, RELEASE, SCENARIOS, find, helm, one, render

# The oldest Kubernetes the chart supports (PDB policy/v1, HPA autoscaling/v2, ...) and
# the newest the offline schemas know.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"}


def test_every_scenario_the_issue_names_is_there():
    assert {"default", "existing-secret", "sasl", "monitoring", "keda", "hpa"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_passes_strictly(scenario):
    result = helm("lint", str(CHART), "--strict", "--values", str(SCENARIOS[scenario]))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_manifest_is_valid(scenario):
    manifests = render([SCENARIOS[scenario]])
    assert manifests
    for manifest in manifests:
        if manifest["kind"] in CRD_KINDS:
            continue  # no offline schema: checked field by field below
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)
        assert manifest["metadata"]["namespace"] == NAMESPACE or manifest["kind"] == "ConfigMap"


def test_the_default_install_renders_what_a_stateless_consumer_needs():
    manifests = render([SCENARIOS["default"]])
    kinds = sorted(m["kind"] for m in manifests)
    # The Pod is `helm test`'s hook (templates/tests/readyz.yaml).
    assert kinds == ["ConfigMap", "Deployment", "Pod", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount"]
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "userflux-connector:" + _app_version()
    assert container["args"][:3] == ["run", "--config", "/etc/userflux-connector/config.yaml"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_the_metrics_port_follows_the_connector_config():
    manifests = render([SCENARIOS["default"]], {"config.metrics.port": 9100})
    container = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == 9100
    assert one(manifests, "Service")["spec"]["ports"][0]["port"] == 9100


def test_service_monitor_selects_the_metrics_service_port():
    manifests = render([SCENARIOS["monitoring"]])
    monitor, service = one(manifests, "ServiceMonitor"), one(manifests, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    ports = {p["name"] for p in service["spec"]["ports"]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PodMonitor"])
@pytest.mark.parametrize("release", ["uf", "userflux-connector", "events-to-uf"])
def test_the_monitor_fixes_the_job_whatever_the_release_is_called(kind, release):
    # The Operator derives the job from the Service or PodMonitor, named after the release;
    # the chart's relabelings come after that and set job="userflux-connector", which the
    # alert rules and the dashboard select exactly, and release= the release's name.
    sets = {"prometheus.monitor.kind": kind, "service.enabled": kind == "ServiceMonitor", "nameOverride": "uf2x"}
    args = [arg for key, value in sets.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]
    text = helm(
        "template", release, str(CHART), "--namespace", NAMESPACE, "--values", str(SCENARIOS["monitoring"]), *args
    ).stdout
    manifests = [m for m in yaml.safe_load_all(text) if m]
    monitor = one(manifests, kind)
    endpoint = monitor["spec"]["endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"][0]
    assert endpoint["relabelings"][:2] == [
        {"action": "replace", "targetLabel": "job", "replacement": "userflux-connector"},
        {
            "action": "replace",
            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
            "targetLabel": "release",
        },
    ]
    pod = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod["app.kubernetes.io/instance"] == release


def test_the_user_s_relabelings_come_after_the_chart_s():
    mine = [{"action": "replace", "targetLabel": "cluster", "replacement": "eu-1"}]
    manifests = render([SCENARIOS["monitoring"]], {"prometheus.monitor.relabelings": mine})
    relabelings = one(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["relabelings"]
    assert [r["targetLabel"] for r in relabelings] == ["job", "release", "cluster"]


def test_pod_monitor_selects_the_pods_metrics_port():
    manifests = render([SCENARIOS["podmonitor"]])
    assert not find(manifests, "Service") and not find(manifests, "ServiceMonitor")
    monitor, deployment = one(manifests, "PodMonitor"), one(manifests, "Deployment")
    pod = deployment["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_what_renders_does_not_depend_on_what_the_api_server_serves(scenario):
    # helm template (and Argo CD, Flux) sees no cluster; helm install sees one: the same chart.
    served = ["monitoring.coreos.com/v1", "keda.sh/v1alpha1", "autoscaling/v2", "policy/v1"]
    assert render([SCENARIOS[scenario]], api_versions=served) == render([SCENARIOS[scenario]])


def test_keda_scales_the_deployment_on_lag_capped_at_the_partitions():
    manifests = render([SCENARIOS["keda"]])
    assert not find(manifests, "HorizontalPodAutoscaler")
    scaled, deployment = one(manifests, "ScaledObject"), one(manifests, "Deployment")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 12)
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["bootstrapServers"] == "kafka.kafka:9092"
    assert trigger["metadata"]["consumerGroup"] == "userflux-prod"
    assert trigger["metadata"]["lagThreshold"] == "5000"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    assert trigger["metadata"]["offsetResetPolicy"] == "earliest"  # the chart's default auto.offset.reset
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA wants strings
    assert trigger["authenticationRef"] == {"name": "kafka-scaler-auth"}


@pytest.mark.parametrize("reset, policy", [("smallest", "earliest"), ("largest", "latest"), ("error", "latest")])
def test_keda_reads_lag_from_where_the_connector_would_start(reset, policy):
    manifests = render([SCENARIOS["keda"]], {"config.kafka.auto\\.offset\\.reset": reset})
    assert one(manifests, "ScaledObject")["spec"]["triggers"][0]["metadata"]["offsetResetPolicy"] == policy


def test_keda_may_scale_to_zero_while_there_is_no_lag():
    manifests = render([SCENARIOS["keda"]], {"autoscaling.minReplicas": 0})
    assert one(manifests, "ScaledObject")["spec"]["minReplicaCount"] == 0


def test_hpa_scales_the_deployment_on_cpu():
    manifests = render([SCENARIOS["hpa"]])
    assert not find(manifests, "ScaledObject")
    hpa, deployment = one(manifests, "HorizontalPodAutoscaler"), one(manifests, "Deployment")
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert one(manifests, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "selector": deployment["spec"]["selector"],
    }


def _selectors(pod_spec: dict) -> list[dict]:
    """Every labelSelector of the pod's spread constraints and pod (anti-)affinity terms."""
    found = [c["labelSelector"] for c in pod_spec.get("topologySpreadConstraints", [])]
    for kind in ("podAffinity", "podAntiAffinity"):
        rules = pod_spec.get("affinity", {}).get(kind, {})
        found += [t["labelSelector"] for t in rules.get("requiredDuringSchedulingIgnoredDuringExecution", [])]
        found += [
            t["podAffinityTerm"]["labelSelector"]
            for t in rules.get("preferredDuringSchedulingIgnoredDuringExecution", [])
        ]
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_spread_and_affinity_select_this_release_s_pods_only(scenario):
    deployment = one(render([SCENARIOS[scenario]]), "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/instance"] == RELEASE
    for found in _selectors(deployment["spec"]["template"]["spec"]):
        assert found["matchLabels"] == selector, found  # the release's instance too: no spreading against another


def test_a_constraint_or_term_without_a_selector_gets_the_release_s_and_one_with_one_keeps_it():
    theirs = {"matchLabels": {"team": "data"}}
    sets = {
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"},
            {
                "maxSkew": 2,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": theirs,
            },
        ],
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname"}],
            },
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["streaming"]}]}
                    ]
                }
            },
        },
    }
    pod = one(render([SCENARIOS["default"]], sets), "Deployment")["spec"]["template"]["spec"]
    ours = {"matchLabels": {"app.kubernetes.io/name": "userflux-connector", "app.kubernetes.io/instance": RELEASE}}
    assert _selectors(pod) == [ours, theirs, ours]
    assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "DoNotSchedule"
    assert pod["affinity"]["nodeAffinity"] == sets["affinity"]["nodeAffinity"]


def test_the_helm_test_hook_asks_the_service_for_readyz():
    manifests = render([SCENARIOS["default"]])
    hooks = [m for m in manifests if m["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    assert [m["kind"] for m in hooks] == ["Pod"]
    (pod,) = hooks
    service, deployment = one(manifests, "Service"), one(manifests, "Deployment")
    port = service["spec"]["ports"][0]["port"]
    container = pod["spec"]["containers"][0]
    assert container["command"][-1] == f"http://{service['metadata']['name']}:{port}/readyz"
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Not one of the connector's pods: no selector of the release picks it.
    labels = pod["metadata"]["labels"]
    for selector in (
        service["spec"]["selector"],
        one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert not selector.items() <= labels.items()


def test_no_helm_test_hook_without_the_service():
    manifests = render([SCENARIOS["podmonitor"]])
    assert not [m for m in manifests if m["kind"] == "Pod"]


def test_scheduling_values_reach_the_pod():
    pod = one(render([SCENARIOS["hpa"]]), "Deployment")["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "high-priority"
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "podAntiAffinity" in pod["affinity"]
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]
    spread = one(render([SCENARIOS["keda"]]), "Deployment")["spec"]["template"]["spec"]
    assert spread["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"


def _app_version() -> str:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def test_notes_say_how_to_watch_it_and_that_extra_replicas_sit_idle(tmp_path: pathlib.Path):
    # helm renders NOTES.txt only on install (which needs a cluster): a copy of the chart
    # renders it with template, wrapped in a YAML document.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart, symlinks=False)
    templates = chart / "templates"
    notes = (templates / "NOTES.txt").read_text()
    (templates / "_notes.tpl").write_text('{{- define "notes" }}' + notes + "{{- end }}")
    (templates / "notes.yaml").write_text('notes: {{ include "notes" . | toJson }}')
    rendered = helm(
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "--values",
        str(SCENARIOS["keda"]),
        "--show-only",
        "templates/notes.yaml",
    ).stdout
    notes = " ".join(yaml.safe_load(rendered)["notes"].split())
    assert f"rollout status deployment/{RELEASE}-userflux-connector" in notes
    assert "replicas beyond the partition count of the mapped topics get no partition and sit idle" in notes
    assert "Autoscaling (keda) keeps 2 to 12 replicas" in notes


def test_the_replay_job_is_rendered_only_when_asked_for_and_reads_the_same_config_and_secrets():
    assert find(render([SCENARIOS["default"]]), "Job") == []
    manifests = render([SCENARIOS["replay"]], kube_version="1.29.0")
    job = one(manifests, "Job", "-replay")
    for version in ("1.29.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(job, version, strict=True)
    deployment = one(manifests, "Deployment")
    pod, deployed = job["spec"]["template"]["spec"], deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "replay", "--config", "/etc/userflux-connector/config.yaml", "--log-level", "INFO", "--log-format", "json",
        "--output", "json", "--max-replays", "5", "--stage", "map", "--stage", "deliver", "--source-topic", "events",
        "--since", "2026-03-01T00:00:00Z", "--until", "2026-03-02T00:00:00Z",
    ]  # fmt: skip
    # The same ConfigMap, the same Secret-backed variables, the same mounts as the Deployment's.
    assert pod["volumes"] == deployed["volumes"]
    assert container["env"] == deployed["containers"][0]["env"] and container["volumeMounts"]
    assert container["volumeMounts"] == deployed["containers"][0]["volumeMounts"]
    assert pod["restartPolicy"] == "Never" and "ports" not in container and "livenessProbe" not in container
    assert container["resources"]["limits"] == {"memory": "256Mi"}
    # A retry after a crash resumes; a wrong config, a refused key or dead letters left do not retry.
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2, 3, 6]
    assert job["spec"]["backoffLimit"] == 3
    # Where Kubernetes has no podFailurePolicy, no retry at all: one after exit 6 would spend
    # the dead letters' replay counts.
    older = one(render([SCENARIOS["replay"]], kube_version="1.28.0"), "Job")
    assert older["spec"]["backoffLimit"] == 0 and "podFailurePolicy" not in older["spec"]
    # Nothing that selects the connector's pods selects the replay's.
    labels = job["spec"]["template"]["metadata"]["labels"]
    for selector in (one(manifests, "Service")["spec"]["selector"],
                     one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):  # fmt: skip
        assert not selector.items() <= labels.items()


def test_the_replay_job_passes_no_filter_it_was_not_given():
    job = one(render([SCENARIOS["default"]], {"replay.enabled": True}), "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][-2:] == ["--max-replays", "3"]
    assert (
        container["resources"]
        == one(render([SCENARIOS["default"]]), "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]
    )
