"""connector/pipeline.py with mappings to two destinations: batches never mix them, and one
destination that cannot send holds back neither the other's delivery nor its reading
(backpressure.py's DestinationBackpressure), on the fake source of tests/support/pipeline_fakes.py."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import yaml

from connector import metrics
from connector.backpressure import DestinationBackpressure
from connector.batcher import Batch
from connector.pipeline import Pipeline
from connector.sink.sender import BatchResult
from connector.startup import parse_config
from tests.support.fakes import FakeMessage
from tests.support.pipeline_fakes import FakeSource, stop, until

WEB, IOS = ("web", 0), ("ios", 0)


def two_projects(max_pending: int = 10_000):
    config = {
        "kafka": {"bootstrap.servers": "fake:9092", "group.id": "g"},
        "userflux": {
            "base_url": "http://127.0.0.1:9",
            "api_key": "web-key-0123456789",
            "batch_size": 10,
            "linger_ms": 5,
            "max_in_flight": 2,
            "destinations": {"mobile": {"api_key": "mobile-key-0123456789"}},
        },
        "on_invalid": "skip",
        "metrics": {"enabled": False},
        "pipeline": {
            "commit_interval_ms": 10,
            "shutdown_grace_s": 2,
            "refused_exit_delay_s": 0,
            "max_pending_messages": max_pending,
        },
        "mappings": [
            {"topics": ["web"], "event": {"name": "event", "userId": "user"}},
            {"topics": ["ios"], "destination": "mobile", "event": {"name": "event", "userId": "user"}},
        ],
    }
    return parse_config(yaml.safe_dump(config))


def message(topic: str, offset: int) -> FakeMessage:
    value = json.dumps({"event": f"{topic}_view", "user": f"u{offset}"}).encode()
    return FakeMessage(topic=topic, partition=0, offset=offset, value=value)


class DestinationSender:
    """Delivers at once, except the batches of ``held`` destinations, until released."""

    def __init__(self, held: str | None = None):
        self.held = held
        self.release = threading.Event()
        self.stop = threading.Event()
        self.sent: list[Batch] = []
        self.lock = threading.Lock()

    def send(self, batch: Batch, tried: Any = None) -> BatchResult:
        if batch.destination == self.held:
            while not self.release.wait(0.01):
                if self.stop.is_set():
                    return BatchResult(batch, abandoned=list(batch.items))
        with self.lock:
            self.sent.append(batch)
        return BatchResult(batch, delivered=list(batch.items), delivered_at=1.0)

    def delivered(self, topic: str) -> int:
        with self.lock:
            return sum(1 for b in self.sent for i in b.items if i.message.topic() == topic)


class WaitingSource(FakeSource):
    """The fake source, but an empty consume() waits a little, as librdkafka's does: the
    sender threads then get their turn, and the script's step budget lasts."""

    def consume(self, max_messages: int, timeout_s: float):
        found = super().consume(max_messages, timeout_s)
        if not found:
            time.sleep(min(timeout_s, 0.002))
        return found


def pipeline_with(steps, sender: DestinationSender, max_pending: int = 10_000) -> tuple[Pipeline, FakeSource]:
    made: list[FakeSource] = []

    def factory(props, listener, on_commit=None):
        made.append(WaitingSource(props, listener, on_commit))
        return made[0]

    pipe = Pipeline(two_projects(max_pending), source_factory=factory, sender=sender)
    sender.stop = pipe.stop_sending
    source = made[0]
    source.script.extend(steps(source, pipe))
    return pipe, source


def test_every_batch_goes_to_the_destination_its_mapping_names_and_never_mixes_them():
    sender = DestinationSender()
    before = metrics.events_delivered.labels("ios", "mobile")._value.get()

    def steps(source, pipe):
        for offset in range(35):
            source.add(message("web", offset), message("ios", offset))
        return [
            source.assign([WEB, IOS]),
            until(lambda: source.last_commit(WEB) == 35 and source.last_commit(IOS) == 35),
            stop(pipe),
        ]

    pipe, _source = pipeline_with(steps, sender)
    assert pipe.run() == 0
    assert sorted({(b.destination, i.message.topic()) for b in sender.sent for i in b.items}) == [
        ("default", "web"),
        ("mobile", "ios"),
    ]
    assert sender.delivered("web") == sender.delivered("ios") == 35
    assert metrics.events_delivered.labels("ios", "mobile")._value.get() - before == 35
    assert set(pipe.pool.pools) == {"default", "mobile"}  # a sender pool each


def test_a_destination_that_cannot_send_holds_back_neither_the_others_delivery_nor_its_reading():
    sender = DestinationSender(held="mobile")
    seen: dict[str, Any] = {}

    def steps(source, pipe):
        for offset in range(200):
            source.add(message("web", offset), message("ios", offset))

        def mobile_paused_web_done() -> bool:
            if source.last_commit(WEB) != 200:
                return False
            seen["paused"] = set(source.paused)
            seen["ios_pending"] = pipe.tracker.partitions[IOS].pending
            sender.release.set()
            return True

        return [
            source.assign([WEB, IOS]),
            until(mobile_paused_web_done),
            until(lambda: source.last_commit(IOS) == 200),
            stop(pipe),
        ]

    pipe, _source = pipeline_with(steps, sender, max_pending=30)
    assert isinstance(pipe.backpressure, DestinationBackpressure)
    assert pipe.run() == 0
    # All 200 web messages went through while mobile sent nothing: its partition was paused,
    # with at most its limit (and one consume() call of overshoot) held.
    assert seen["paused"] == {IOS}
    assert 30 <= seen["ios_pending"] <= 30 + 500
    assert sender.delivered("web") == sender.delivered("ios") == 200


class PausingSource:
    def __init__(self, keys):
        self.keys = set(keys)
        self.paused: set = set()

    def assignment(self):
        return set(self.keys)

    def pause(self, keys):
        self.paused |= set(keys)

    def resume(self, keys):
        self.paused -= set(keys)


class Pending:
    def __init__(self, n: int = 0):
        self.pending = n


def test_destination_backpressure_pauses_at_the_limit_resumes_at_half_and_keeps_new_partitions_paused():
    keys = [("web", 0), ("ios", 0), ("ios", 1)]
    source = PausingSource(keys)
    partitions = {key: Pending() for key in keys}
    bp = DestinationBackpressure(source, 100, partitions, lambda key: "mobile" if key[0] == "ios" else "default")
    partitions[("ios", 0)].pending, partitions[("ios", 1)].pending = 60, 40
    partitions[("web", 0)].pending = 30
    bp.apply(130)
    assert source.paused == {("ios", 0), ("ios", 1)} and bp.consuming
    assert bp.room(130) == 70  # what the destination still reading has room for
    partitions[("ios", 0)].pending = 11  # 51 left: above half
    bp.apply(81)
    assert source.paused == {("ios", 0), ("ios", 1)}
    source.keys.add(("ios", 2))
    partitions[("ios", 2)] = Pending()
    bp.assigned([("ios", 2), ("web", 1)])
    assert ("ios", 2) in source.paused and ("web", 1) not in source.paused
    partitions[("ios", 0)].pending = 10  # 50: half
    bp.apply(80)
    assert source.paused == set() and bp.paused == set() and bp.held == {}
    assert metrics.paused_partitions._value.get() == 0
