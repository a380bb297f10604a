"""TLS to UserFlux, end to end: the real CLI against an HTTPS stand-in whose certificate
was made for the test by a CA that only the test knows."""

from __future__ import annotations

import pytest

from tests.conftest import API_KEY
from tests.support.connector_process import ConnectorProcess, base_config, leaks, write_config
from tests.support.kafka_tools import all_committed, committed, new_topic, produce, unique, wait_until

pytestmark = pytest.mark.kafka

MAPPING = {"event": {"name": "event", "userId": "user", "properties": "properties"}}


@pytest.fixture
def https(https_standin):
    https_standin.reset()
    yield https_standin
    https_standin.reset()


def config_for(tmp_path, kafka_bootstrap, https, topic, group, **userflux):
    return write_config(
        tmp_path / f"{group}.yaml",
        base_config(
            kafka_bootstrap,
            https.base_url,
            API_KEY,
            group,
            [{"topics": [topic], **MAPPING}],
            userflux={"base_url": https.base_url, "api_key": API_KEY, **userflux},
        ),
    )


def test_an_unverifiable_certificate_stops_the_run_and_the_ca_file_fixes_it(kafka_bootstrap, https, certs, tmp_path):
    topic = new_topic(kafka_bootstrap, "tls")
    group = unique("group")
    produce(kafka_bootstrap, topic, [{"event": "signup", "user": f"u{i}", "properties": {"i": i}} for i in range(5)])

    untrusting = config_for(tmp_path, kafka_bootstrap, https, topic, group)
    with ConnectorProcess(untrusting) as connector:
        assert connector.wait(timeout_s=60) == 3
    assert "CERTIFICATE_VERIFY_FAILED" in connector.stderr and "userflux.tls.ca_file" in connector.stderr
    assert https.requests() == [] and https.events() == []
    assert committed(kafka_bootstrap, group, topic) == {0: -1001}
    assert leaks([API_KEY], output=connector.stderr + connector.stdout) == []

    trusting = config_for(tmp_path, kafka_bootstrap, https, topic, group + "-ca", tls={"ca_file": str(certs.ca)})
    with ConnectorProcess(trusting) as connector:
        events = https.wait_for_events(5, timeout_s=60)
        wait_until(lambda: all_committed(kafka_bootstrap, group + "-ca", topic), 30, "offsets committed")
        assert connector.stop() == 0
    assert sorted(e["properties"]["i"] for e in events) == list(range(5))
