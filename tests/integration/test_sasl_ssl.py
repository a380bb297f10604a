"""Kafka over SASL_SSL (SCRAM-SHA-512), end to end.

A second broker, for this module only, listens on SASL_SSL with a certificate made for
the test by a CA only the test knows, and a SCRAM user created when its storage is
formatted. The connector runs on config/sasl-ssl.yaml's shape, its credentials from the
environment, and reaches Kafka through that listener alone (consuming and producing
dead letters); the PLAINTEXT listener only sets the test up and checks the result.
"""

from __future__ import annotations

import pathlib
import uuid

import pytest
import yaml

from tests.conftest import API_KEY, SASL_PASSWORD
from tests.support.certs import Certs
from tests.support.connector_process import REPO, ConnectorProcess, free_port, http_get, leaks, write_config
from tests.support.kafka_broker import KafkaBroker
from tests.support.kafka_tools import all_committed, new_topic, produce, read_all, unique, wait_until

pytestmark = pytest.mark.kafka

PASSWORD = SASL_PASSWORD  # the session's SASL_SSL broker (tests/conftest.py) knows it


def sasl_config(
    path: pathlib.Path, broker: KafkaBroker, base_url: str, topic: str, dlq: str, group: str, port: int
) -> pathlib.Path:
    """config/sasl-ssl.yaml, pointed at this test's topics, group and stand-in."""
    config = yaml.safe_load((REPO / "config" / "sasl-ssl.yaml").read_text())
    assert config["kafka"]["sasl.password"] == "${KAFKA_PASSWORD}"  # credentials stay in the environment
    config["kafka"].update({"group.id": group, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    config["userflux"].update({"base_url": base_url, "linger_ms": 50})
    config["dead_letter"]["topic"] = dlq
    config["metrics"] = {"enabled": True, "port": port}
    config["pipeline"] = {"commit_interval_ms": 200, "shutdown_grace_s": 10}
    config["mappings"][0]["topics"] = [topic]
    return write_config(path, config)


def environment(broker: KafkaBroker, certs: Certs, password: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": broker.sasl_bootstrap_servers,
        "KAFKA_USERNAME": "connector",
        "KAFKA_PASSWORD": password,
        "KAFKA_CA_FILE": str(certs.ca),
        "USERFLUX_API_KEY": API_KEY,
    }


def test_the_connector_delivers_through_sasl_ssl(sasl_broker, certs, standin, tmp_path):
    plain = sasl_broker.bootstrap_servers
    topic, dlq = new_topic(plain, "events"), new_topic(plain, "dlq")
    group, port = unique("group"), free_port()
    values = [{"event": "signup", "user_id": f"u{i}", "properties": {"i": i}} for i in range(20)]
    produce(plain, topic, [*values[:10], b"not json", *values[10:]])
    config = sasl_config(tmp_path / "sasl.yaml", sasl_broker, standin.base_url, topic, dlq, group, port)

    with ConnectorProcess(config, env=environment(sasl_broker, certs, PASSWORD)) as connector:
        events = standin.wait_for_events(20, timeout_s=90)
        [letter] = read_all(plain, dlq, 1, timeout_s=30)
        wait_until(lambda: all_committed(plain, group, topic), 30, "offsets committed")
        status, scrape = http_get(f"http://127.0.0.1:{port}/metrics")
        assert connector.stop() == 0

    assert sorted(e["properties"]["i"] for e in events) == list(range(20))
    assert letter.value() == b"not json"
    assert dict(letter.headers())["userflux.error.stage"] == b"deserialize"
    output = connector.stdout + connector.stderr
    assert f"delivering to {standin.base_url}" in output
    assert status == 200 and leaks([PASSWORD, API_KEY], output=output, metrics=scrape) == []


def test_a_wrong_password_is_reported_without_being_shown(sasl_broker, certs, standin, tmp_path):
    plain = sasl_broker.bootstrap_servers
    topic, dlq = new_topic(plain, "events"), new_topic(plain, "dlq")
    wrong = f"wrong-pw-{uuid.uuid4().hex}"
    produce(plain, topic, [{"event": "signup", "user_id": "u1"}])
    config = sasl_config(
        tmp_path / "wrong.yaml", sasl_broker, standin.base_url, topic, dlq, unique("group"), free_port()
    )
    with ConnectorProcess(config, env=environment(sasl_broker, certs, wrong)) as connector:
        connector.wait_for_log("Authentication failed", timeout_s=60)
        assert connector.stop() == 0
    assert standin.requests() == []
    assert leaks([wrong], output=connector.stdout + connector.stderr) == []
    failures = [line for line in connector.stderr.splitlines() if "Authentication failed" in line]
    assert "ERROR" in failures[0]
    assert len(failures) <= 25, "librdkafka's retries flooded the log"  # about 50 without the limit
