"""The baseline application (baseline.py) as a process the harness measures like the connector."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess

from tests.benchmark.errors import BenchError
from tests.benchmark.scenarios import API_KEY_VARIABLE

REPO = pathlib.Path(__file__).resolve().parents[2]
# quixstreams pins an older confluent-kafka than the connector's, so it has a virtualenv of its own.
BASELINE_VENV = REPO / ".venv-baseline"
APP = pathlib.Path(__file__).with_name("baseline.py")


def baseline_python() -> pathlib.Path:
    python = BASELINE_VENV / "bin" / "python"
    if not python.exists():
        raise BenchError(f"{BASELINE_VENV} is missing: `make bench` creates it (quixstreams, httpx)")
    return python


class BaselineProcess:
    def __init__(
        self,
        *,
        bootstrap: str,
        group: str,
        topics: list[str],
        base_url: str,
        api_key: str,
        threads: int,
        log_path: pathlib.Path,
    ):
        python = baseline_python()
        self.stderr_path = log_path
        self._err = open(log_path, "ab")
        self.process = subprocess.Popen(
            [
                str(python),
                str(APP),
                "--bootstrap",
                bootstrap,
                "--group",
                group,
                "--url",
                base_url,
                "--threads",
                str(threads),
                *topics,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._err,
            stderr=self._err,
            cwd=REPO,
            env={**os.environ, API_KEY_VARIABLE: api_key},
        )

    def __enter__(self) -> BaselineProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._err.close()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise BenchError(f"the baseline did not exit within {timeout_s:.0f} s:\n{self.stderr[-3000:]}") from None
