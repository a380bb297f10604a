"""The sender models of tests/benchmark/senders.py each post every request to the benchmark's sink."""

from __future__ import annotations

import pytest

from tests.benchmark import senders
from tests.benchmark.run import API_KEY
from tests.benchmark.sink import SinkProcess


@pytest.fixture(scope="module")
def body() -> bytes:
    return senders.sample_body_and_mapper()[0]


@pytest.mark.parametrize("model", senders.MODELS)
def test_each_model_delivers_every_request_and_reports_its_cpu(model, body, tmp_path):
    with SinkProcess(API_KEY, log_path=str(tmp_path / "sink.log")) as sink:
        us = senders.measure(model, sink.base_url, body, 16)
        stats = sink.stats()
    assert us > 0
    assert stats["requests"] == 16 and stats["events"] == 16 * 50 and not stats["refused"]


def test_the_busy_thread_runs_until_the_block_ends():
    steps = []
    with senders.Busy(lambda: steps.append(1)):
        while len(steps) < 3:
            pass
    done = len(steps)
    assert done >= 3 and len(steps) == done  # stopped: no step after the block
