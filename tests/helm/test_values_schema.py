"""Values the chart must refuse, with a message that names what is wrong: the schema
catches typos and wrong types, the templates catch what a schema cannot express."""

from __future__ import annotations

import pytest

from tests.support.helm import SCENARIOS, render, render_error

REFUSED_BY_SCHEMA = {
    "a typo at the top": ({"replicaCont": 2}, "replicaCont"),
    "a typo in a section": ({"serviceAccount.craete": True}, "craete"),
    "a typo in a config section": ({"config.mapings": []}, "mapings"),
    "a wrong type": ({"replicaCount": "two"}, "/replicaCount"),
    "a wrong type deep down": ({"autoscaling.keda.lagThreshold": "high"}, "/autoscaling/keda/lagThreshold"),
    "an unknown choice": ({"logFormat": "xml"}, "/logFormat"),
    "an unknown autoscaler": ({"autoscaling.mode": "vpa"}, "/autoscaling/mode"),
    "a monitor switch that is no switch": ({"prometheus.monitor.enabled": "yes"}, "/prometheus/monitor/enabled"),
    # A plain boolean: "auto" would render by what the API server serves (not under helm template).
    "the monitor switch of old, auto": ({"prometheus.monitor.enabled": "auto"}, "/prometheus/monitor/enabled"),
    "the rules switch of old, auto": ({"prometheus.rules.enabled": "auto"}, "/prometheus/rules/enabled"),
    "a Kafka password in the ConfigMap": ({"config.kafka.ssl\\.key\\.password": "hunter2"}, "ssl.key.password"),
    "a dead-letter password in the ConfigMap": (
        {"config.dead_letter.producer": {"sasl.password": "x"}},
        "sasl.password",
    ),
    "the API key in the ConfigMap": ({"config.userflux.api_key": "${MY_KEY}"}, "/config/userflux/api_key"),
    "a destination's key in the ConfigMap": (
        {"config.userflux.destinations": {"mobile": {"api_key": "${MY_KEY}"}}},
        "/config/userflux/destinations/mobile/api_key",
    ),
    "a destination name the connector refuses": (
        {"apiKey.destinations": {"Mobile-App": {"value": "k"}}},
        "'Mobile-App' does not match pattern",
    ),
    "SASL credentials written by hand": ({"config.kafka.sasl\\.username": "me"}, "sasl.username"),
    "metrics turned off": ({"config.metrics.enabled": False}, "/config/metrics/enabled"),
    "a metrics port out of range": ({"config.metrics.port": 70000}, "/config/metrics/port"),
    "no mappings": ({"config.mappings": []}, "/config/mappings"),
    "no bootstrap servers": ({"config.kafka": {"bootstrap.servers": None}}, "bootstrap.servers"),
    "a malformed digest": ({"image.digest": "latest"}, "/image/digest"),
    "a negative replica count": ({"replicaCount": -1}, "/replicaCount"),
}

REFUSED_BY_TEMPLATES = {
    "no API key at all": ({"apiKey.value": ""}, "the UserFlux Write Only API Key is required"),
    "two API key sources": ({"apiKey.existingSecret": "s"}, "either value or existingSecret, not both"),
    "SASL without credentials": ({"kafkaSasl.enabled": True}, "kafkaSasl: enabled needs"),
    "a destination without its key": (
        {"config.userflux.destinations": {"mobile": {}}},
        "apiKey.destinations.mobile: config.userflux.destinations declares mobile: its write key is required",
    ),
    "a key for a destination config does not declare": (
        {"apiKey.destinations": {"tv": {"value": "k"}}},
        "apiKey.destinations.tv: config.userflux.destinations declares no destination tv",
    ),
    "two sources for a destination's key": (
        {
            "config.userflux.destinations": {"mobile": {}},
            "apiKey.destinations": {"mobile": {"value": "k", "existingSecret": "s"}},
        },
        "apiKey.destinations.mobile: set either value or existingSecret, not both",
    ),
    "a grace shorter than the connector's": (
        {"terminationGracePeriodSeconds": 30},
        "must be longer than config.pipeline.shutdown_grace_s",
    ),
    "KEDA reading ${VAR} servers": (
        {
            "autoscaling": {"enabled": True, "mode": "keda"},
            "config.kafka.bootstrap\\.servers": "${KAFKA_BOOTSTRAP_SERVERS}",
        },
        "cannot expand ${VAR}",
    ),
    "an HPA scaling to zero": (
        {"autoscaling": {"enabled": True, "mode": "hpa", "minReplicas": 0}},
        "an HPA needs at least 1",
    ),
    "a ServiceMonitor without its Service": (
        {"service.enabled": False, "prometheus.monitor.enabled": True},
        "enable service.enabled, or use kind: PodMonitor",
    ),
}


@pytest.mark.parametrize("case", REFUSED_BY_SCHEMA)
def test_the_schema_refuses(case):
    sets, named = REFUSED_BY_SCHEMA[case]
    message = render_error([SCENARIOS["default"]], sets)
    assert "don't meet the specifications of the schema" in message
    assert named in message


@pytest.mark.parametrize("case", REFUSED_BY_TEMPLATES)
def test_the_templates_refuse(case):
    sets, named = REFUSED_BY_TEMPLATES[case]
    assert named in render_error([SCENARIOS["default"]], sets)


def test_what_the_schema_allows_still_renders():
    # Secrets by reference, any librdkafka property and type, a longer grace.
    render(
        [SCENARIOS["default"]],
        {
            "config.kafka.ssl\\.key\\.password": "${KAFKA_SSL_KEY_PASSWORD}",
            "config.kafka.fetch\\.max\\.bytes": 1048576,
            "config.kafka.enable\\.partition\\.eof": False,
            "config.pipeline.stall_timeout_s": 300,
            "terminationGracePeriodSeconds": 31,
        },
    )
