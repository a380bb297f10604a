"""The connector configuration the chart renders: valid for the connector, free of
secrets, and rolled out to the pods whenever it (or a credential) changes."""

from __future__ import annotations

import base64
import pathlib
import shutil

import certifi
import pytest
import yaml

from tests.support.connector_process import cli
from tests.support.helm import (
    POD_ENV,
    SCENARIOS,
    TLS_MOUNT,
    connector_config,
    find,
    one,
    render,
    render_error,
    render_text,
)

API_KEY = POD_ENV["USERFLUX_API_KEY"]
KAFKA_PASSWORD = POD_ENV["KAFKA_SASL_PASSWORD"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_rendered_config_passes_check(scenario, tmp_path: pathlib.Path):
    # librdkafka opens the TLS files check is given: the Secret's mount is played by a
    # directory holding a real CA bundle.
    tls = tmp_path / "kafka-tls"
    tls.mkdir()
    shutil.copy(certifi.where(), tls / "ca.crt")
    config = tmp_path / "config.yaml"
    config.write_text(connector_config(render([SCENARIOS[scenario]])).replace(f"{TLS_MOUNT}/", f"{tls}/"))
    result = cli("check", "--config", str(config), env=POD_ENV)
    assert result.returncode == 0, result.stderr
    assert f"{config}: OK" in result.stdout


def test_the_config_is_written_as_in_values_with_the_chart_s_references_added():
    values = yaml.safe_load(SCENARIOS["sasl"].read_text())["config"]
    config = yaml.safe_load(connector_config(render([SCENARIOS["sasl"]])))
    assert config["mappings"] == values["mappings"]
    assert config["kafka"]["max.poll.interval.ms"] == 3_000_000  # a large number stays a number
    assert config["userflux"]["api_key"] == "${USERFLUX_API_KEY}"
    assert config["kafka"]["sasl.username"] == "${KAFKA_SASL_USERNAME}"
    assert config["kafka"]["sasl.password"] == "${KAFKA_SASL_PASSWORD}"
    assert "group.instance.id" not in config["kafka"]


def test_static_membership_names_each_member_after_its_pod():
    manifests = render([SCENARIOS["existing-secret"]])
    assert yaml.safe_load(connector_config(manifests))["kafka"]["group.instance.id"] == "${POD_NAME}"
    env = _container(manifests)["env"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env


@pytest.mark.parametrize("scenario", ["default", "keda"])
def test_secrets_never_reach_a_configmap(scenario):
    sets = {"apiKey.value": API_KEY}
    if scenario == "keda":
        sets["kafkaSasl.password"] = KAFKA_PASSWORD
    manifests = render([SCENARIOS[scenario]], sets)
    for configmap in find(manifests, "ConfigMap"):
        text = yaml.safe_dump(configmap)
        assert API_KEY not in text and KAFKA_PASSWORD not in text
    secret = one(manifests, "Secret")
    stored = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert stored["api-key"] == API_KEY
    env = {e["name"]: e["valueFrom"] for e in _container(manifests)["env"] if "valueFrom" in e}
    assert env["USERFLUX_API_KEY"] == {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "api-key"}}
    if scenario == "keda":
        assert stored["kafka-sasl-password"] == KAFKA_PASSWORD
        assert env["KAFKA_SASL_PASSWORD"]["secretKeyRef"]["key"] == "kafka-sasl-password"
    # Only the Secret holds them, nowhere else in the rendered text.
    assert API_KEY not in render_text([SCENARIOS[scenario]], sets).replace(secret["data"]["api-key"], "")


def test_an_existing_secret_is_referenced_and_none_is_created():
    manifests = render([SCENARIOS["existing-secret"]])
    assert not find(manifests, "Secret")
    env = {e["name"]: e.get("valueFrom") for e in _container(manifests)["env"]}
    assert env["USERFLUX_API_KEY"] == {"secretKeyRef": {"name": "userflux-credentials", "key": "write-key"}}


def test_kafka_credentials_and_tls_files_come_from_the_operator_s_secrets():
    manifests = render([SCENARIOS["sasl"]])
    container, pod = _container(manifests), one(manifests, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["KAFKA_SASL_USERNAME"] == {"secretKeyRef": {"name": "kafka-credentials", "key": "username"}}
    assert env["KAFKA_SASL_PASSWORD"] == {"secretKeyRef": {"name": "kafka-credentials", "key": "password"}}
    assert env["KAFKA_SSL_KEY_PASSWORD"]["secretKeyRef"]["key"] == "ssl-key-password"  # extraEnv
    assert {"name": "kafka-tls", "secret": {"secretName": "kafka-ca"}} in pod["volumes"]
    assert {"name": "kafka-tls", "mountPath": "/etc/kafka/tls", "readOnly": True} in container["volumeMounts"]
    secret = one(manifests, "Secret")  # the chart's: only the API key
    assert set(secret["data"]) == {"api-key"}


def test_each_destination_s_key_comes_from_its_own_secret_and_never_reaches_the_configmap():
    manifests = render([SCENARIOS["destinations"]])
    config = yaml.safe_load(connector_config(manifests))
    assert config["userflux"]["api_key"] == "${USERFLUX_API_KEY}"
    assert config["userflux"]["destinations"] == {
        "mobile": {"api_key": "${USERFLUX_API_KEY_MOBILE}", "max_events_per_second": 200}
    }
    env = {e["name"]: e.get("valueFrom") for e in _container(manifests)["env"]}
    assert env["USERFLUX_API_KEY_MOBILE"] == {"secretKeyRef": {"name": "userflux-mobile", "key": "write-key"}}
    assert set(one(manifests, "Secret")["data"]) == {"api-key"}  # the web key; mobile's is the operator's
    rotated = render([SCENARIOS["destinations"]], {"apiKey.destinations.mobile.existingSecret": "rotated-mobile"})
    before, after = _checksums(manifests), _checksums(rotated)
    assert before["secret"] != after["secret"] and before["config"] == after["config"]


def test_a_destination_key_given_as_a_value_is_kept_in_the_chart_s_secret():
    mobile_key = "uf-mobile-value-key-0123"
    sets = {"apiKey.destinations": {"mobile": {"value": mobile_key}}}
    manifests = render([SCENARIOS["destinations"]], sets)
    secret = one(manifests, "Secret")
    assert base64.b64decode(secret["data"]["api-key-mobile"]).decode() == mobile_key
    env = {e["name"]: e.get("valueFrom") for e in _container(manifests)["env"]}
    assert env["USERFLUX_API_KEY_MOBILE"] == {
        "secretKeyRef": {"name": secret["metadata"]["name"], "key": "api-key-mobile"}
    }
    for configmap in find(manifests, "ConfigMap"):
        assert mobile_key not in yaml.safe_dump(configmap)


def test_without_a_mapping_for_the_top_level_key_it_may_be_left_out():
    mappings = yaml.safe_load(SCENARIOS["destinations"].read_text())["config"]["mappings"]
    sets = {"apiKey.value": "", "config.mappings": [{**m, "destination": "mobile"} for m in mappings]}
    manifests = render([SCENARIOS["destinations"]], sets)
    assert "api_key" not in yaml.safe_load(connector_config(manifests))["userflux"]
    assert "USERFLUX_API_KEY" not in {e["name"] for e in _container(manifests)["env"]}
    assert not find(manifests, "Secret")


@pytest.mark.parametrize(
    "change, rolls",
    [
        ({"config.mappings": [{"topics": ["other"], "event": {"name": "event", "userId": "u"}}]}, {"config"}),
        ({"config.pipeline.shutdown_grace_s": 20}, {"config"}),
        ({"apiKey.value": "another-key"}, {"secret"}),
        ({"kafkaSasl": {"enabled": True, "username": "u", "password": "p"}}, {"config", "secret"}),
        ({"replicaCount": 3}, set()),
    ],
)
def test_checksums_change_exactly_when_config_or_credentials_change(change, rolls):
    before = _checksums(render([SCENARIOS["default"]]))
    after = _checksums(render([SCENARIOS["default"]], change))
    assert {name for name in before if before[name] != after[name]} == rolls


def test_the_secret_checksum_follows_a_switch_to_another_existing_secret():
    before = _checksums(render([SCENARIOS["existing-secret"]]))
    after = _checksums(render([SCENARIOS["existing-secret"]], {"apiKey.existingSecret": "rotated-credentials"}))
    assert before["secret"] != after["secret"] and before["config"] == after["config"]


def test_termination_grace_outlasts_the_connector_s_shutdown_grace():
    def pod(sets):
        return one(render([SCENARIOS["default"]], sets), "Deployment")["spec"]["template"]["spec"]

    assert pod({})["terminationGracePeriodSeconds"] == 45
    assert pod({"config.pipeline.shutdown_grace_s": 100.5})["terminationGracePeriodSeconds"] == 116
    assert pod({"terminationGracePeriodSeconds": 31})["terminationGracePeriodSeconds"] == 31


def _container(manifests: list[dict]) -> dict:
    return one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _checksums(manifests: list[dict]) -> dict[str, str]:
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    return {"config": annotations["checksum/config"], "secret": annotations["checksum/secret"]}


def test_the_schema_registry_url_and_credentials_come_from_schema_registry_values():
    manifests = render([SCENARIOS["schema-registry"]])
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])
    assert config["schema_registry"] == {
        "url": "https://schema-registry.data:8081",
        "basic_auth": {"username": "${SCHEMA_REGISTRY_USERNAME}", "password": "${SCHEMA_REGISTRY_PASSWORD}"},
        "request_timeout_s": 3,
        "cache_size": 500,
    }
    container, pod = _container(manifests), one(manifests, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["SCHEMA_REGISTRY_PASSWORD"] == {
        "secretKeyRef": {"name": "schema-registry-credentials", "key": "password"}
    }
    assert {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}} in pod["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # where protoc compiles


def test_a_bearer_token_is_stored_in_the_chart_s_secret_and_tls_files_are_mounted():
    sets = {
        "schemaRegistry.url": "https://r:8081",
        "schemaRegistry.auth": "bearer",
        "schemaRegistry.token": "sr-token-8c1d",
        "schemaRegistry.tlsSecret": "registry-ca",
    }
    manifests = render([SCENARIOS["default"]], sets)
    secret = one(manifests, "Secret")
    assert base64.b64decode(secret["data"]["schema-registry-token"]).decode() == "sr-token-8c1d"
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])
    assert config["schema_registry"] == {"url": "https://r:8081", "bearer": {"token": "${SCHEMA_REGISTRY_TOKEN}"}}
    container, pod = _container(manifests), one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "schema-registry-tls", "secret": {"secretName": "registry-ca"}} in pod["volumes"]
    assert "sr-token-8c1d" not in render_text([SCENARIOS["default"]], sets).replace(
        secret["data"]["schema-registry-token"], ""
    )
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["SCHEMA_REGISTRY_TOKEN"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "schema-registry-token",
    }


@pytest.mark.parametrize(
    "sets, message",
    [
        ({"config.value_format": "avro"}, "schemaRegistry.url: the configuration reads avro"),
        ({"schemaRegistry.auth": "basic", "schemaRegistry.url": "https://r"}, "auth basic needs"),
        ({"schemaRegistry.auth": "bearer"}, "auth bearer needs"),
    ],
)
def test_registry_values_that_cannot_work_fail_the_render(sets, message):
    assert message in render_error([SCENARIOS["default"]], sets)
