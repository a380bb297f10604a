"""Every example in config/ is accepted by `check`, and no example leaks a secret."""

from __future__ import annotations

import logging
import pathlib

import pytest

from connector.cli import main
from connector.startup import load_config

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[3] / "config"
EXAMPLES = sorted(CONFIG_DIR.glob("*.yaml"))
ENV = {
    "USERFLUX_API_KEY": "uf-example-key-0123456789",
    "USERFLUX_MOBILE_API_KEY": "uf-example-mobile-key-0123456789",  # config/destinations.yaml
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing listens there: check never connects
    "KAFKA_USERNAME": "example-user",
    "KAFKA_PASSWORD": "example-password-0123",
    "SCHEMA_REGISTRY_USERNAME": "example-registry-user",
    "SCHEMA_REGISTRY_PASSWORD": "example-registry-password-0123",
}


@pytest.fixture(autouse=True)
def example_env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_there_are_examples_for_the_main_features():
    names = {p.name for p in EXAMPLES}
    assert {
        "connector.yaml",
        "demo.yaml",
        "minimal.yaml",
        "sasl-ssl.yaml",
        "mapping-cookbook.yaml",
        "avro.yaml",
        "protobuf.yaml",
        "destinations.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_check_accepts_the_example(path, capsys):
    assert main(["check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: OK")
    assert ENV["USERFLUX_API_KEY"] not in out + err
    assert ENV["USERFLUX_MOBILE_API_KEY"] not in out + err
    assert ENV["KAFKA_PASSWORD"] not in out + err
    assert ENV["SCHEMA_REGISTRY_PASSWORD"] not in out + err


def test_the_settings_repr_shows_no_secret():
    settings = load_config(str(CONFIG_DIR / "sasl-ssl.yaml")).settings
    assert ENV["KAFKA_PASSWORD"] in settings.kafka.values()
    text = repr(settings)
    assert ENV["KAFKA_PASSWORD"] not in text
    assert ENV["USERFLUX_API_KEY"] not in text
