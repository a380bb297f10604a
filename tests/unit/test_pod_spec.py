"""tests/support/pod_spec.py: a pod spec read as the kubelet reads it (the rules the
chart's pod test relies on, each against the Kubernetes documentation's examples)."""

from __future__ import annotations

import base64

import pytest

from tests.support.pod_spec import PodIdentity, PodSpecError, container_plan, expand

IMAGE = {
    "Entrypoint": ["userflux-connector"],
    "Cmd": ["run", "--config", "/etc/userflux-connector/config.yaml"],
    "Env": ["PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8"],
    "User": "10001:10001",
    "WorkingDir": "/",
}
IDENTITY = PodIdentity(name="web-6d9f8-x2x7q", namespace="streaming", pod_ip="10.1.2.3")


def pod(container: dict, **spec) -> dict:
    return {
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"team": "data"}},
        "spec": {"containers": [{"name": "c", "image": "i", **container}], **spec},
    }


def secret(name: str, **data: str) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"kind": "Secret", "metadata": {"name": name, "namespace": "streaming"}, "data": encoded}


def configmap(name: str, **data: str) -> dict:
    return {"kind": "ConfigMap", "metadata": {"name": name, "namespace": "streaming"}, "data": data}


def plan(container: dict, objects: list[dict] = (), image: dict = IMAGE, **spec):  # type: ignore[assignment]
    return container_plan(pod(container, **spec), list(objects), IDENTITY, image)


@pytest.mark.parametrize(
    "container, argv",
    [
        ({}, ["userflux-connector", "run", "--config", "/etc/userflux-connector/config.yaml"]),
        ({"args": ["check"]}, ["userflux-connector", "check"]),  # args replace CMD only
        ({"command": ["python3"]}, ["python3"]),  # command drops the image's CMD too
        ({"command": ["sh", "-c"], "args": ["echo hi"]}, ["sh", "-c", "echo hi"]),
    ],
)
def test_command_and_args_replace_entrypoint_and_cmd(container, argv):
    assert plan(container).argv == argv


def test_references_are_expanded_as_kubernetes_does():
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$$(A)", env) == "$(A)"  # escaped
    assert expand("$(MISSING) $A", env) == "$(MISSING) $A"  # unknown, and not a reference
    container = {"args": ["--name", "$(POD_NAME)"], "env": [{"name": "POD_NAME", "value": "p"}]}
    assert plan(container).argv == ["userflux-connector", "--name", "p"]


def test_the_environment_in_the_kubelet_s_order():
    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}}],
        "env": [
            {"name": "LANG", "value": "en_US.UTF-8"},  # over the image's
            {"name": "TOKEN", "value": "over-envFrom"},
            {"name": "URL", "value": "http://$(HOST):80"},  # a variable defined before it
            {"name": "HOST", "value": "later"},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "api-key"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        ],
        "resources": {"limits": {"memory": "512Mi"}},
    }
    objects = [configmap("settings", mode="fast"), secret("creds", TOKEN="from-secret", **{"api-key": "k-123"})]
    env = plan(container, objects).env
    assert env["PATH"] == "/opt/bin:/usr/bin" and env["LANG"] == "en_US.UTF-8"
    assert env["CFG_mode"] == "fast" and env["TOKEN"] == "over-envFrom"
    assert env["URL"] == "http://$(HOST):80"  # HOST came after it
    assert (env["KEY"], env["MODE"], env["NAME"], env["NS"], env["IP"]) == (
        "k-123",
        "fast",
        "web-6d9f8-x2x7q",
        "streaming",
        "10.1.2.3",
    )
    assert env["APP"] == "web" and env["MEM"] == "512" and env["HOSTNAME"] == "web-6d9f8-x2x7q"
    assert "GONE" not in env


@pytest.mark.parametrize(
    "container, objects, message",
    [
        ({"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, [], "Secret streaming/s"),
        (
            {"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "other"}}}]},
            [secret("s", k="v")],
            "has no key 'other'",
        ),
        ({"securityContext": {"runAsUser": 0, "runAsNonRoot": True}}, [], "runAsNonRoot"),
        ({"livenessProbe": {"httpGet": {"path": "/", "port": "web"}}}, [], "no port named 'web'"),
    ],
)
def test_what_the_kubelet_would_refuse_is_refused(container, objects, message):
    with pytest.raises(PodSpecError, match=message):
        plan(container, objects)


def test_the_user_the_container_s_context_over_the_pod_s_over_the_image_s():
    assert (plan({}).uid, plan({}).gid) == (10001, 10001)
    context = {"runAsUser": 2000, "runAsGroup": 3000, "fsGroup": 4000, "supplementalGroups": [5000]}
    pod_level = plan({}, securityContext=context)
    assert (pod_level.uid, pod_level.gid, pod_level.groups) == (2000, 3000, (3000, 4000, 5000))
    container_level = plan({"securityContext": {"runAsUser": 7000}}, securityContext=context)
    assert container_level.uid == 7000
    locked = plan({"securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}})
    assert locked.read_only_root and locked.no_new_privileges
    assert not plan({}).read_only_root and not plan({}).no_new_privileges


def test_volumes_as_files_read_only_or_as_writable_directories():
    container = {
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/app"},  # no readOnly: a ConfigMap volume is read-only anyway
            {"name": "tls", "mountPath": "/etc/tls", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "one", "mountPath": "/etc/one.yaml", "subPath": "one.yaml"},
            {"name": "shm", "mountPath": "/scratch"},
        ]
    }
    volumes = [
        {"name": "config", "configMap": {"name": "app"}},
        {"name": "tls", "secret": {"secretName": "tls", "items": [{"key": "ca", "path": "ca.crt", "mode": 0o400}]}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "one", "configMap": {"name": "app", "defaultMode": 0o600}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    objects = [configmap("app", **{"config.yaml": "a: 1\n", "one.yaml": "b: 2\n"}), secret("tls", ca="PEM", key="K")]
    mounts = {m.name: m for m in plan(container, objects, volumes=volumes).mounts}
    assert mounts["config"].read_only and mounts["config"].files == {
        "config.yaml": (b"a: 1\n", 0o644),
        "one.yaml": (b"b: 2\n", 0o644),
    }
    assert mounts["tls"].files == {"ca.crt": (b"PEM", 0o400)}  # only the item, renamed
    assert mounts["tmp"].writable and not mounts["tmp"].read_only and mounts["tmp"].memory == ""
    assert mounts["shm"].writable and mounts["shm"].memory == "16Mi"
    assert mounts["one"].sub_path == "one.yaml" and mounts["one"].files["one.yaml"][1] == 0o600


def test_probes_find_their_port_by_name():
    container = {
        "ports": [{"name": "metrics", "containerPort": 9464}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 9464}},
    }
    probes = plan(container).probes
    assert (probes["readiness"].port, probes["readiness"].path, probes["readiness"].period_s) == (9464, "/readyz", 5)
    assert (probes["liveness"].port, probes["liveness"].timeout_s, probes["liveness"].failure_threshold) == (9464, 1, 3)
