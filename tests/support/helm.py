"""Render the Helm chart with the real ``helm`` binary, for the chart and image tests.

``make test`` builds helm into ``~/.cache/userflux-connector/tools`` when it is missing
(``go install helm.sh/helm/v3/cmd/helm@v3.22.0``); ``$HELM`` names another binary. A
test that needs helm fails when it is missing: it never skips.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from collections.abc import Iterable
from typing import Any

import yaml

from tests.support.connector_process import REPO

CHART = REPO / "helm" / "userflux-connector"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# The ci/ scenarios by name: default, sasl, keda, ...
SCENARIOS = {path.name.removesuffix("-values.yaml"): path for path in CI_VALUES}
DEFAULT_HELM = pathlib.Path.home() / ".cache" / "userflux-connector" / "tools" / "helm"
RELEASE = "uf"
NAMESPACE = "streaming"
TLS_MOUNT = "/etc/kafka/tls"  # kafkaTls.mountPath's default
# What the Secret-backed variables hold in a pod; tests give them to the connector.
POD_ENV = {
    "USERFLUX_API_KEY": "uf-write-key-7f3a9c0e5b21",
    "USERFLUX_API_KEY_MOBILE": "uf-mobile-key-2b8e41d07c",  # ci/destinations-values.yaml
    "KAFKA_SASL_USERNAME": "connector",
    "KAFKA_SASL_PASSWORD": "kafka-pass-91d0c4aa",
    "KAFKA_SSL_KEY_PASSWORD": "key-pass",
    "SCHEMA_REGISTRY_USERNAME": "connector",
    "SCHEMA_REGISTRY_PASSWORD": "registry-pass-5e02b7",
    "POD_NAME": "uf-userflux-connector-6d9f8-x2x7q",
}


def helm_binary() -> str:
    path = pathlib.Path(os.environ.get("HELM") or DEFAULT_HELM)
    if not path.is_file():
        raise AssertionError(f"helm not found at {path}: run `make test` (it builds helm there), or set $HELM")
    return str(path)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed (exit {result.returncode}):\n{result.stderr}")
    return result


def template_args(
    values: Iterable[pathlib.Path | str] = (),
    sets: dict[str, Any] | None = None,
    api_versions: Iterable[str] = (),
    kube_version: str | None = None,
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if kube_version is not None:
        args += ["--kube-version", kube_version]
    for path in values:
        args += ["--values", str(path)]
    for key, value in (sets or {}).items():
        # --set-json keeps the type of every value (a number stays a number).
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    for api in api_versions:
        args += ["--api-versions", api]
    return args


def render_text(
    values: Iterable[pathlib.Path | str] = (),
    sets: dict[str, Any] | None = None,
    api_versions: Iterable[str] = (),
    kube_version: str | None = None,
) -> str:
    return helm(*template_args(values, sets, api_versions, kube_version)).stdout


def render(
    values: Iterable[pathlib.Path | str] = (),
    sets: dict[str, Any] | None = None,
    api_versions: Iterable[str] = (),
    kube_version: str | None = None,
) -> list[dict]:
    """Every manifest ``helm template`` renders (for Kubernetes ``kube_version``: helm's
    default is 1.20), parsed."""
    text = render_text(values, sets, api_versions, kube_version)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_error(values: Iterable[pathlib.Path | str] = (), sets: dict[str, Any] | None = None) -> str:
    """helm's error message for values the chart must refuse (fails if it renders)."""
    result = helm(*template_args(values, sets), check=False)
    assert result.returncode != 0, "helm rendered values the chart should refuse"
    return result.stderr


def find(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [m for m in find(manifests, kind) if m["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind}{' *' + name_suffix if name_suffix else ''}, found {len(found)}"
    return found[0]


def connector_config(manifests: list[dict]) -> str:
    """The connector's config.yaml, as the chart's ConfigMap carries it."""
    configmaps = [m for m in find(manifests, "ConfigMap") if "config.yaml" in m.get("data", {})]
    assert len(configmaps) == 1
    return configmaps[0]["data"]["config.yaml"]
