"""A real, single-node Apache Kafka broker (KRaft mode) for tests and demos.

The test suite and ``make demo`` need a genuine Kafka broker, but the machines
they run on have no Docker and no internet access beyond package registries.
Maven Central is one of those registries and publishes the broker itself
(``org.apache.kafka:kafka_2.13``), so this module:

1. ``ensure_jars()``: runs Maven on ``tests/support/kafka/pom.xml`` to copy the
   broker and its runtime dependencies (~45 jars, ~43 MB) into a cache
   directory, by default ``<repo>/.cache/kafka-<version>/lib``.  The copy goes
   to a temporary directory that is renamed into place only once it is
   complete, so an interrupted download never looks like a finished one; a
   file lock serialises concurrent callers (e.g. pytest-xdist workers).
   (That, and the process handling below, is ``tests/support/service_process.py``.)

2. ``KafkaBroker``: picks free ports on 127.0.0.1, writes a combined
   broker+controller ``server.properties``, formats the storage directory and
   runs ``kafka.Kafka`` in its own process group with a small, CI-friendly
   JVM (capped heap, SerialGC, C1 only: see ``jvm_options()``).  ``start()``
   returns once an AdminClient can fetch metadata from the broker.  Its output
   (log4j at INFO) goes to ``<work_dir>/broker.log``; on failure the last lines
   of that log are put in the ``BrokerError``.

   A broker started by ``start()`` never outlives the Python process that
   started it: ``stop()`` is registered with ``atexit`` and, on Linux when
   started from the main thread, the JVM also gets ``PR_SET_PDEATHSIG``
   (SIGKILL) so that it dies with its parent even if that parent is killed
   with SIGKILL or dies on a signal that skips ``atexit``.

3. ``create_topic()``: creates a topic (idempotently) and waits until every
   partition has a leader.

4. ``SaslSsl``: given to ``KafkaBroker(sasl_ssl=...)``, the broker also listens
   on a SASL_SSL port (``sasl_bootstrap_servers``) with a SCRAM user created
   when the storage is formatted, and a PKCS#12 keystore the test made (see
   ``tests/support/certs.py``). The PLAINTEXT listener stays, for test set-up.

Used from pytest::

    lib = ensure_jars()
    with KafkaBroker(tmp_path, lib) as broker:       # start() + stop()
        create_topic(broker.bootstrap_servers, "events", partitions=3)

And from scripts (the broker then keeps running after the command exits)::

    python -m tests.support.kafka_broker fetch             # prints the lib dir
    python -m tests.support.kafka_broker start --dir DIR   # prints host:port
    python -m tests.support.kafka_broker stop --dir DIR

``start --dir`` writes ``DIR/broker.pid`` and ``DIR/bootstrap``; ``stop``
reads the former.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

from tests.support.service_process import (
    PidFiles,
    ServiceProcess,
    cached_dir,
    cli_start,
    cli_stop,
    free_ports,
    jvm_options,
    maven_copy_dependencies,
    tail,
)

KAFKA_VERSION = "4.4.0"
SCALA_BINARY_VERSION = "2.13"

_HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent.parent
POM_PATH = _HERE / "kafka" / "pom.xml"

MVN_TIMEOUT_S = 600
_BROKER_JAR = f"kafka_{SCALA_BINARY_VERSION}-{KAFKA_VERSION}.jar"

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The Kafka jars could not be fetched, or the broker could not be started."""


# --------------------------------------------------------------------------
# Jars
# --------------------------------------------------------------------------


def default_lib_dir() -> pathlib.Path:
    return REPO_ROOT / ".cache" / f"kafka-{KAFKA_VERSION}" / "lib"


def ensure_jars(cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Return a directory holding the Kafka broker jars, fetching them if needed.

    ``cache_dir`` is that directory (default: ``<repo>/.cache/kafka-<version>/lib``).
    Idempotent and cheap once the jars are there.
    """

    def fetch(scratch: pathlib.Path) -> pathlib.Path:
        started = time.monotonic()
        out = maven_copy_dependencies(
            POM_PATH,
            scratch,
            f"the Kafka {KAFKA_VERSION} jars",
            MVN_TIMEOUT_S,
            BrokerError,
            ["-DincludeScope=runtime", f"-Dkafka.version={KAFKA_VERSION}"],
        )
        jars = sorted(p.name for p in scratch.glob("*.jar"))
        if _BROKER_JAR not in jars:
            raise BrokerError(
                f"mvn succeeded but {_BROKER_JAR} is not among the {len(jars)} jars it copied:\n{tail(out)}"
            )
        log.info("fetched %d Kafka %s jars in %.1f s", len(jars), KAFKA_VERSION, time.monotonic() - started)
        return scratch

    return cached_dir(pathlib.Path(cache_dir) if cache_dir is not None else default_lib_dir(), fetch)


def _check_lib_dir(lib: pathlib.Path) -> None:
    if not lib.is_dir():
        raise BrokerError(f"Kafka lib dir {lib} does not exist (see ensure_jars())")
    if not any(lib.glob(f"kafka_{SCALA_BINARY_VERSION}-*.jar")):
        raise BrokerError(f"Kafka lib dir {lib} has no kafka_{SCALA_BINARY_VERSION}-*.jar (see ensure_jars())")


# --------------------------------------------------------------------------
# Broker process
# --------------------------------------------------------------------------


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = pathlib.Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    java = shutil.which("java")
    if java is None:
        raise BrokerError("no 'java' on PATH (and no usable $JAVA_HOME); Java 17+ is needed")
    return java


_LOG4J2_PROPERTIES = """\
# Written by tests/support/kafka_broker.py
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
# The full configuration dumps (several hundred lines each) bury the useful part.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
logger.kafkaconfig.name = kafka.server.KafkaConfig
logger.kafkaconfig.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def _random_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints, without paying for a JVM start."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass(frozen=True)
class SaslSsl:
    """An extra SASL_SSL listener: one SCRAM user, and the server's PKCS#12 keystore."""

    username: str
    password: str
    keystore: pathlib.Path
    keystore_password: str
    mechanism: str = "SCRAM-SHA-512"

    def broker_properties(self, port: int) -> dict[str, str]:
        module = "org.apache.kafka.common.security.scram.ScramLoginModule"
        return {
            "sasl.enabled.mechanisms": self.mechanism,
            f"listener.name.sasl_ssl.{self.mechanism.lower()}.sasl.jaas.config": f"{module} required;",
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
        }

    def client_properties(self, ca_file: pathlib.Path) -> dict[str, str]:
        """What a librdkafka client needs to connect to the SASL_SSL listener."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.ca.location": str(ca_file),
        }


class KafkaBroker:
    """One combined broker+controller KRaft node listening on 127.0.0.1.

    ``work_dir`` receives server.properties, log4j2.properties, the data
    directory (``kraft-data``, wiped on each start) and ``broker.log``.

    ``detached=True`` is for the CLI: the JVM is then meant to outlive this
    Python process, so no atexit hook and no parent-death signal are set up.
    """

    def __init__(
        self,
        work_dir: pathlib.Path,
        lib_dir: pathlib.Path | None = None,
        heap_mb: int = 512,
        *,
        detached: bool = False,
        sasl_ssl: SaslSsl | None = None,
        overrides: dict[str, str] | None = None,
    ) -> None:
        self.work_dir = pathlib.Path(work_dir).absolute()
        self.overrides = dict(overrides or {})  # broker properties over the defaults below
        self.sasl_ssl = sasl_ssl
        self.sasl_port: int | None = None
        self.lib_dir = pathlib.Path(lib_dir).absolute() if lib_dir is not None else default_lib_dir()
        self.heap_mb = heap_mb
        self.detached = detached
        self.port: int | None = None
        self.controller_port: int | None = None
        self._process = ServiceProcess("Kafka broker", self.log_path, detached=detached)
        self._lock = threading.Lock()

    # -- properties ---------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("the broker has not been started")
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str:
        if self.sasl_port is None:
            raise BrokerError("the broker has no SASL_SSL listener, or has not been started")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def log_path(self) -> pathlib.Path:
        return self.work_dir / "broker.log"

    @property
    def data_dir(self) -> pathlib.Path:
        return self.work_dir / "kraft-data"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_running(self) -> bool:
        return self._process.running()

    def __repr__(self) -> str:
        state = f"pid {self.pid}, {self.bootstrap_servers}" if self.is_running() else "stopped"
        return f"<KafkaBroker {self.work_dir} ({state})>"

    def __enter__(self) -> KafkaBroker:
        return self.start() if not self.is_running() else self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- start --------------------------------------------------------------

    def _classpath(self) -> str:
        return str(self.lib_dir / "*")

    def _write_config(self) -> pathlib.Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # Single node: every internal topic has one replica, and few partitions.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            # Fewer threads than the defaults: this runs on a 2-core CI machine.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        if self.sasl_ssl is not None:
            sasl = f"SASL_SSL://127.0.0.1:{self.sasl_port}"
            props["listeners"] += f",{sasl}"
            props["advertised.listeners"] += f",{sasl}"
            props["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL"
            props.update(self.sasl_ssl.broker_properties(self.sasl_port))
        props.update(self.overrides)
        path = self.work_dir / "server.properties"
        path.write_text(
            "# Written by tests/support/kafka_broker.py\n" + "".join(f"{k}={v}\n" for k, v in props.items())
        )
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)
        return path

    def _java_cmd(self, main_class: str, *args: str, heap_mb: int) -> list[str]:
        return [
            java_executable(),
            *jvm_options(heap_mb),
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
            main_class,
            *args,
        ]

    def _fail(self, what: str) -> BrokerError:
        """Kill the JVM (if any) and build the error to raise."""
        return BrokerError(f"Kafka broker in {self.work_dir}: {self._process.failure(what)}")

    def start(self, timeout_s: float = 90) -> KafkaBroker:
        """Start the broker and wait until it serves metadata; returns self."""
        with self._lock:
            if self.is_running():
                return self
            _check_lib_dir(self.lib_dir)
            deadline = time.monotonic() + timeout_s
            # Ports are picked before the JVM binds them: a lost race is tried again.
            self._process.start(lambda: self._start_once(deadline), BrokerError, deadline=deadline)
            return self

    def restart(self, timeout_s: float = 90) -> KafkaBroker:
        """Stop the broker cleanly and start it again on the same ports, with the same
        data: what a broker restart looks like to its clients."""
        with self._lock:
            if self.port is None:
                raise BrokerError("restart() needs a broker that was started before")
        self.stop()
        with self._lock:
            deadline = time.monotonic() + timeout_s
            self._process.start(lambda: self._start_once(deadline, keep_data=True), BrokerError, attempts=1)
        return self

    def _start_once(self, deadline: float, keep_data: bool = False) -> None:
        started = time.monotonic()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not keep_data:
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)
            self.port, self.controller_port, sasl_port = free_ports(3)
            self.sasl_port = sasl_port if self.sasl_ssl is not None else None
        config = self._write_config()
        if not keep_data:  # a short-lived JVM formats the storage directory, into a new broker.log
            with open(self.log_path, "w") as logf:
                self._format(config, logf, deadline)
        self._process.launch(
            self._java_cmd("kafka.Kafka", str(config), heap_mb=self.heap_mb),
            f"kafka.Kafka on 127.0.0.1:{self.port} (controller :{self.controller_port})",
            cwd=self.work_dir,
        )
        self._wait_ready(deadline)
        log.info(
            "Kafka %s broker ready at %s (pid %d) in %.1f s",
            KAFKA_VERSION,
            self.bootstrap_servers,
            self.pid,
            time.monotonic() - started,
        )

    def _format(self, config: pathlib.Path, logf, deadline: float) -> None:
        logf.write(f"### kafka-storage format ({KAFKA_VERSION})\n")
        logf.flush()
        scram = []
        if self.sasl_ssl is not None:  # SCRAM users live in the cluster metadata: made at format time
            user = self.sasl_ssl
            scram = ["--add-scram", f"{user.mechanism}=[name={user.username},password={user.password}]"]
        fmt = self._java_cmd(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _random_cluster_id(),
            "-c",
            str(config),
            *scram,
            heap_mb=128,
        )
        try:
            rc = subprocess.run(
                fmt,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                timeout=max(1.0, deadline - time.monotonic()),
            ).returncode
        except subprocess.TimeoutExpired:
            raise self._fail("formatting the storage directory timed out") from None
        if rc != 0:
            raise self._fail(f"formatting the storage directory failed (exit {rc})")

    def _wait_ready(self, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient

        # Wait for the listener sockets first, so librdkafka does not log a
        # "Connection refused" per retry while the JVM boots.
        for port in (self.port, self.sasl_port):
            while port is not None:
                if not self._process.running():
                    raise self._fail("java exited during start-up")
                if time.monotonic() >= deadline:
                    raise self._fail(f"timed out waiting for the listener port {port} to open")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    time.sleep(0.1)

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        last_error: Exception | None = None
        while True:
            if not self._process.running():
                raise self._fail("java exited during start-up")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(f"timed out waiting for metadata (last error: {last_error})")
            try:
                md = admin.list_topics(timeout=min(2.0, max(0.5, remaining)))
                if md.brokers:
                    return
                last_error = RuntimeError("metadata lists no brokers yet")
            except Exception as e:  # KafkaException: not ready yet
                last_error = e
            time.sleep(0.1)

    # -- stop ---------------------------------------------------------------

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM the broker (a clean shutdown), SIGKILL it after ``timeout_s``.

        Idempotent; safe on a broker that was never started.
        """
        self._process.stop(timeout_s)


# --------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    timeout_s: float = 30,
    config: dict[str, str] | None = None,
    admin_config: dict[str, str] | None = None,
) -> None:
    """Create ``name`` (ok if it exists) and wait until all its partitions have a leader.

    ``config`` holds topic settings (e.g. ``max.message.bytes``), ``admin_config`` extra
    client properties (e.g. SASL/SSL). If the topic already exists, it is left as it is.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    deadline = time.monotonic() + timeout_s
    admin = AdminClient({"bootstrap.servers": bootstrap, **(admin_config or {})})
    future = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))],
        request_timeout=timeout_s,
        operation_timeout=timeout_s,
    )[name]
    created = True
    try:
        future.result(timeout=timeout_s)
    except KafkaException as e:
        err = e.args[0] if e.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            created = False
        else:
            raise BrokerError(f"creating topic {name!r} on {bootstrap} failed: {e}") from e
    except Exception as e:  # e.g. concurrent.futures.TimeoutError
        raise BrokerError(f"creating topic {name!r} on {bootstrap} failed: {e!r}") from e

    last = "no metadata yet"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(f"topic {name!r} on {bootstrap} not ready after {timeout_s} s: {last}")
        try:
            md = admin.list_topics(topic=name, timeout=min(5.0, max(0.5, remaining)))
            topic = md.topics.get(name)
            if topic is None:
                last = "topic missing from metadata"
            elif topic.error is not None:
                last = f"topic error {topic.error}"
            else:
                want = partitions if created else max(1, len(topic.partitions))
                leaderless = [p.id for p in topic.partitions.values() if p.leader < 0 or p.error is not None]
                if len(topic.partitions) >= want and not leaderless:
                    return
                last = f"{len(topic.partitions)}/{want} partitions, without leader: {leaderless}"
        except KafkaException as e:
            last = str(e)
        time.sleep(0.1)


# --------------------------------------------------------------------------
# CLI (for make demo and other scripts)
# --------------------------------------------------------------------------


def _cmd_fetch(args: argparse.Namespace) -> int:
    print(ensure_jars(args.cache_dir))
    return 0


def _pid_files(directory: str) -> PidFiles:
    return PidFiles(pathlib.Path(directory).absolute(), "broker.pid", "bootstrap", b"kafka.Kafka", "broker")


def _cmd_start(args: argparse.Namespace) -> int:
    files = _pid_files(args.dir)

    def start() -> tuple[int, str]:
        lib = pathlib.Path(args.lib_dir) if args.lib_dir else ensure_jars()
        broker = KafkaBroker(files.directory, lib, heap_mb=args.heap_mb, detached=True).start(timeout_s=args.timeout)
        assert broker.pid is not None
        return broker.pid, broker.bootstrap_servers

    return cli_start(files, start)


def _cmd_stop(args: argparse.Namespace) -> int:
    return cli_stop(_pid_files(args.dir), args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.kafka_broker",
        description=f"Fetch, start and stop a local single-node Kafka {KAFKA_VERSION} broker (KRaft).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download the broker jars (if needed) and print their directory")
    p.add_argument("--cache-dir", type=pathlib.Path, default=None, help="lib dir (default: %(default)s)")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("start", help="start a broker that keeps running after this command exits")
    p.add_argument("--dir", required=True, help="work dir: config, data, broker.log, broker.pid, bootstrap")
    p.add_argument("--lib-dir", default=None, help="jar dir (default: fetch into the cache)")
    p.add_argument("--heap-mb", type=int, default=512)
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p.set_defaults(func=_cmd_start)

    p = sub.add_parser("stop", help="stop the broker started with 'start --dir DIR'")
    p.add_argument("--dir", required=True)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds between SIGTERM and SIGKILL")
    p.set_defaults(func=_cmd_stop)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
