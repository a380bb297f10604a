"""Run the real ``userflux-connector`` CLI as a subprocess, the way users run it."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]


def write_config(path: pathlib.Path, config: dict[str, Any]) -> pathlib.Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def base_config(
    bootstrap: str, base_url: str, api_key: str, group: str, mappings: list[dict], **overrides: Any
) -> dict[str, Any]:
    """A complete configuration; sections in ``overrides`` are merged over the defaults."""
    config: dict[str, Any] = {
        "kafka": {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            # Faster rebalances in tests; production keeps librdkafka's defaults.
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "topic.metadata.refresh.interval.ms": 1000,
        },
        "userflux": {
            "base_url": base_url,
            "api_key": api_key,
            "linger_ms": 50,
            "request_timeout_s": 5,
            "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 500},
        },
        "on_invalid": "skip",
        "metrics": {"enabled": False},
        "pipeline": {
            "commit_interval_ms": 200,
            "shutdown_grace_s": 10,
            "rebalance_timeout_s": 5,
            "refused_exit_delay_s": 0,
        },
        "mappings": mappings,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess:
    """Run a short CLI command (check, map) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=timeout_s,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, e.g. of the connector's /metrics."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def leaks(secrets: list[str], **places: str) -> list[str]:
    """The places (e.g. stderr=..., metrics=...) where a secret shows, whole or any
    12-character piece of it (a secret cut short still leaks); [] when none does."""
    pieces = {secret[i : i + 12] for secret in secrets for i in range(max(1, len(secret) - 11))}
    return [f"{name}: {piece!r}" for name, text in places.items() for piece in sorted(pieces) if piece in text]


class ProcessOutput:
    """A background process whose output goes to files (``stdout_path``, ``stderr_path``)."""

    process: subprocess.Popen
    stdout_path: pathlib.Path
    stderr_path: pathlib.Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None


class ConnectorProcess(ProcessOutput):
    """``userflux-connector run`` (or ``command``) in the background, its output in files."""

    def __init__(
        self,
        config_path: pathlib.Path,
        *extra: str,
        env: dict[str, str] | None = None,
        log_level: str = "DEBUG",
        command: str = "run",
    ):
        self.dir = config_path.parent
        name = config_path.stem if command == "run" else f"{config_path.stem}.{command}"
        self.stdout_path = self.dir / f"{name}.stdout"
        self.stderr_path = self.dir / f"{name}.stderr"
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "connector",
                command,
                "--config",
                str(config_path),
                "--log-level",
                log_level,
                *extra,
            ],
            stdout=self._out,
            stderr=self._err,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )

    def __enter__(self) -> ConnectorProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    def wait_for_log(self, text: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.stderr:
                return
            if not self.running():
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{text!r} not logged within {timeout_s}s (exit {self.process.poll()}):\n{self.stderr[-4000:]}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.running():
            self.process.send_signal(sig)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 30) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"connector did not exit within {timeout_s}s:\n{self.stderr[-4000:]}") from None

    def kill(self) -> None:
        if self.running():
            self.process.kill()
            self.process.wait(10)
        self._out.close()
        self._err.close()
