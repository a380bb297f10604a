"""The built image, run for real (make image-test builds it first): as its non-root
user, on the configs the chart renders, as PID 1 on a read-only root filesystem."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml

from tests.support import image
from tests.support.helm import POD_ENV, SCENARIOS, TLS_MOUNT, connector_config, render

pytestmark = pytest.mark.image

CONFIG_DIR = "/etc/userflux-connector"


@pytest.fixture(scope="module")
def built() -> dict:
    """The image's configuration (what `buildah inspect` reports)."""
    assert image.has_image(image.IMAGE_REF), f"{image.IMAGE_REF} is not built: run `make image-test`"
    return json.loads(image.buildah("inspect", "--type", "image", image.IMAGE_REF, capture=True))


@pytest.fixture(scope="module")
def container(built):
    name = image.buildah("from", "--quiet", "--pull-never", image.IMAGE_REF, capture=True)
    yield name
    image.buildah("rm", name, capture=True)


def run(
    container: str,
    *command: str,
    volumes: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = 60,
) -> subprocess.CompletedProcess:
    """`buildah run`: the command in the image's filesystem, as the image's user."""
    args = ["run", "--isolation", "chroot"]
    for volume in volumes:
        args += ["--volume", volume]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    return subprocess.run(
        [*image.buildah_command(), *args, container, "--", *command], capture_output=True, text=True, timeout=timeout_s
    )


def test_the_image_is_configured_as_the_dockerfile_says(built):
    config = built["OCIv1"]["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["userflux-connector"]
    assert config["Cmd"] == ["run", "--config", f"{CONFIG_DIR}/config.yaml"]
    assert "9464/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] == "SIGTERM"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == image.project_version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert len(labels["org.opencontainers.image.revision"]) == 40


def test_version_runs_as_the_non_root_user(container):
    result = run(container, "userflux-connector", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"userflux-connector {image.project_version()}"
    assert run(container, "id", "-u").stdout.strip() == "10001"


def test_no_compiler_cache_source_or_installer_is_left(container):
    result = run(
        container,
        "sh",
        "-c",
        "for p in /src /dist /opt/build /root/.cache /opt/userflux-connector/bin/pip "
        "/usr/bin/gcc /usr/bin/cc /usr/bin/make; do test -e $p && echo $p; done; "
        "find / -xdev -name tests -path '*site-packages/tests' 2>/dev/null; true",
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_check_accepts_the_config_the_chart_renders(container, scenario, tmp_path: pathlib.Path):
    config_dir, tls = tmp_path / "config", tmp_path / "kafka-tls"
    config_dir.mkdir()
    tls.mkdir()
    (config_dir / "config.yaml").write_text(connector_config(render([SCENARIOS[scenario]])))
    shutil.copy(image.HOST_CA_BUNDLE, tls / "ca.crt")
    for path in (config_dir, config_dir / "config.yaml", tls, tls / "ca.crt"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's user, as a mounted ConfigMap is
    result = run(
        container,
        "userflux-connector",
        "check",
        "--config",
        f"{CONFIG_DIR}/config.yaml",
        volumes=(f"{config_dir}:{CONFIG_DIR}:ro", f"{tls}:{TLS_MOUNT}:ro"),
        env=POD_ENV,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{CONFIG_DIR}/config.yaml: OK")


def test_pid_1_on_a_read_only_root_stops_cleanly_on_sigterm(built, container, tmp_path: pathlib.Path):
    """The container's process as a runtime starts it: PID 1 of its own PID namespace,
    the image's user and environment, the root filesystem read-only. It serves its
    probes, then SIGTERM makes it stop cleanly (exit 0)."""
    port = _free_port()
    config_dir = tmp_path / "config"
    config_dir.mkdir(mode=0o755)
    config = yaml.safe_load(connector_config(render([SCENARIOS["default"]])))
    config["kafka"]["bootstrap.servers"] = f"127.0.0.1:{_free_port()}"  # nothing listens: the loop still turns
    config["metrics"] = {"host": "127.0.0.1", "port": port}
    config["pipeline"]["shutdown_grace_s"] = 5
    (config_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (config_dir / "config.yaml").chmod(0o644)
    rootfs = image.buildah("mount", container, capture=True)
    root = tmp_path / "root"
    root.mkdir()
    env = dict(item.split("=", 1) for item in built["OCIv1"]["config"]["Env"])
    env["USERFLUX_API_KEY"] = POD_ENV["USERFLUX_API_KEY"]
    user = built["OCIv1"]["config"]["User"]
    # A new mount and PID namespace: the image read-only, /proc and /dev as a runtime
    # gives them, the config mounted; then exec, so the connector itself is PID 1.
    script = (
        f"mount --bind {rootfs} {root} && mount -o remount,bind,ro {root} && "
        f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && "
        f"mount --bind {config_dir} {root}{CONFIG_DIR} && "
        f"exec chroot --userspec={user} {root} env -i "
        + " ".join(f"{k}={v}" for k, v in env.items())
        + f" userflux-connector run --config {CONFIG_DIR}/config.yaml"
    )
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        connector = _wait_for_child(process.pid)
        status = _wait_for_status(connector)
        assert status["NSpid"].split()[-1] == "1", status["NSpid"]  # PID 1 in its namespace
        assert status["Uid"].split()[0] == "10001"
        assert _wait_for_http(f"http://127.0.0.1:{port}/healthz") == 200
        os.kill(connector, signal.SIGTERM)
        code = process.wait(timeout=30)
        err = process.stderr.read()
        assert code == 0, err
        assert "SIGTERM: stopping" in err
        assert "Read-only file system" not in err and "Permission denied" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        image.buildah("umount", container, capture=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_child(pid: int, timeout_s: float = 10) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError("the container process did not start")


def _wait_for_status(pid: int, timeout_s: float = 10) -> dict[str, str]:
    """/proc/PID/status once the process is the connector: the forked unshare execs sh,
    which execs chroot, which execs env, which execs the connector."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = dict(line.split(":", 1) for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines())
        if status["Name"].strip() not in ("unshare", "sh", "chroot", "env"):
            return {k: v.strip() for k, v in status.items()}
        time.sleep(0.05)
    raise AssertionError("the connector did not start")


def _wait_for_http(url: str, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.status
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s}s")


def test_the_registry_formats_decode_in_the_image(container):
    """fastavro, protobuf and grpcio-tools' protoc are in the image and work there: a .proto
    text compiled (protoc in process, through /tmp) and a message converted; an Avro schema
    compiled and a record read. No registry is needed for this: the schemas are given."""
    script = """
import io, json, fastavro
from connector.formats.protobuf import ProtobufSchema
from connector.formats.avro import compile_reader
schema = ProtobufSchema(1, 'syntax = "proto3"; import "google/protobuf/timestamp.proto"; '
                        'message M { int64 n = 1; google.protobuf.Timestamp at = 2; }', ())
cls, convert = schema.reader((0,))
m = cls(n=2**62); m.at.seconds = 1764000000
avro = {"type": "record", "name": "R", "fields": [{"name": "b", "type": "bytes"}]}
parsed, conv, _ = compile_reader(json.dumps(avro), ())
out = io.BytesIO(); fastavro.schemaless_writer(out, fastavro.parse_schema(avro), {"b": b"x"})
print(json.dumps([convert(m), conv(fastavro.schemaless_reader(io.BytesIO(out.getvalue()), parsed, None))]))
"""
    result = run(container, "/opt/userflux-connector/bin/python", "-c", script)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 2**62, "at": "2025-11-24T16:00:00Z"}, {"b": "eA=="}]
