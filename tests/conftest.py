"""Session-wide test fixtures: the real Kafka broker and the UserFlux stand-in.

The broker is started once per session (or taken from $KAFKA_BOOTSTRAP_SERVERS). If it
cannot start, every test that needs it fails; none is skipped.
"""

from __future__ import annotations

import os

import pytest

from tests.support.kafka_broker import BrokerError, KafkaBroker, ensure_jars
from tests.support.userflux_standin import UserFluxStandIn

API_KEY = "test-write-key-0123456789"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory):
    """Bootstrap servers of a real Kafka broker for the whole session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    try:
        lib_dir = ensure_jars()
        broker = KafkaBroker(tmp_path_factory.mktemp("kafka-broker"), lib_dir).start()
    except BrokerError as exc:
        pytest.fail(f"could not start the Kafka test broker:\n{exc}", pytrace=False)
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def standin():
    """A fresh UserFlux stand-in on loopback, accepting API_KEY."""
    with UserFluxStandIn(api_key=API_KEY) as server:
        yield server
