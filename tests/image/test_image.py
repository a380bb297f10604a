"""The built image, run for real (make image-test builds it first): as its non-root
user, on the configs the chart renders. The chart's pod itself, PID 1 on a read-only
root filesystem, is tests/image/test_pod.py."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

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
