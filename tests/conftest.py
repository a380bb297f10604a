"""Session-wide test fixtures: the real Kafka broker, the UserFlux stand-in, the schema
registry, promtool and the Prometheus server binary.

The broker is started once per session (or taken from $KAFKA_BOOTSTRAP_SERVERS). If it
cannot start, every test that needs it fails; none is skipped. The same holds for the
schema registry (Apicurio, in memory), started once per session when a test asks for it.
The stand-in is started once per session too, and reset around every test that uses it.
promtool and prometheus are the ones `make` installs; a test that needs them fails when
they are missing.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.support.certs import Certs, make_certs
from tests.support.kafka_broker import BrokerError, KafkaBroker, SaslSsl, ensure_jars
from tests.support.monitoring import PromtoolMissing, promtool_path
from tests.support.prometheus import PrometheusMissing, prometheus_path
from tests.support.schema_registry import RegistryError, SchemaRegistry, ensure_app
from tests.support.userflux_standin import UserFluxStandIn

API_KEY = "test-write-key-0123456789"
# The SCRAM user "connector" of the SASL_SSL broker (``sasl_broker``).
SASL_PASSWORD = f"scram-pw-{uuid.uuid4().hex}"


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


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory):
    """A real schema registry (Confluent-compatible API at ``.url``) for the whole session.

    Its storage is in memory and shared by the session's tests: use subjects of your own.
    A test that restarts the registry starts a SchemaRegistry of its own instead.
    """
    try:
        registry = SchemaRegistry(tmp_path_factory.mktemp("schema-registry"), ensure_app()).start()
    except RegistryError as exc:
        pytest.fail(f"could not start the test schema registry:\n{exc}", pytrace=False)
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def standin_server():
    """One UserFlux stand-in on loopback, accepting API_KEY, for the whole session.

    Tests take it through ``standin``, which resets it; a test that stops it or needs
    another key starts a UserFluxStandIn of its own instead.
    """
    with UserFluxStandIn(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def standin(standin_server: UserFluxStandIn):
    """The session's UserFlux stand-in, as good as fresh: reset() before and after the
    test forgets recorded data, faults (fail_next, fail_always, set_delay, drop_next) and
    reject rules, and a request still in flight from an earlier test is not recorded."""
    standin_server.reset()
    yield standin_server
    standin_server.reset()


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of Prometheus' promtool ($PROMTOOL, else where `make promtool` puts it)."""
    try:
        return str(promtool_path())
    except PromtoolMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Path of the Prometheus server ($PROMETHEUS, else where `make prometheus` puts it)."""
    try:
        return str(prometheus_path())
    except PrometheusMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate for the loopback names and a client certificate,
    made with openssl for this session only."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory, certs: Certs):
    """A second broker for the session, started when a test asks for it: besides PLAINTEXT
    (for the tests' own set-up) it listens on SASL_SSL with SCRAM-SHA-512, user
    ``connector`` and SASL_PASSWORD, with the session's server certificate (``certs.ca``
    signs it)."""
    sasl = SaslSsl(
        username="connector", password=SASL_PASSWORD, keystore=certs.server_p12, keystore_password=certs.p12_password
    )
    broker = KafkaBroker(tmp_path_factory.mktemp("sasl-broker"), ensure_jars(), heap_mb=384, sasl_ssl=sasl)
    try:
        broker.start(timeout_s=120)
    except BrokerError as exc:
        pytest.fail(f"could not start the SASL_SSL test broker:\n{exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def https_standin(certs: Certs):
    """A second stand-in, serving HTTPS with the session's server certificate (and no
    client certificate required); reset before each test that takes it."""
    with UserFluxStandIn(api_key=API_KEY, tls=(str(certs.server_cert), str(certs.server_key))) as server:
        yield server


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The fault suite's figures, one line per scenario (`make soak` also writes them to
    .cache/soak/report.json)."""
    from tests.support.faults import results

    if results():
        terminalreporter.section("fault suite")
        for row in results():
            terminalreporter.write_line(", ".join(f"{k}={v}" for k, v in row.items()))
