"""connector/pipeline.py: the loop's delivery, rebalance and shutdown logic, with a fake
Kafka source and a fake sender, so every path runs in milliseconds and in a known order."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from confluent_kafka import TopicPartition

from connector import backpressure
from connector.batcher import Batch
from connector.errors import AuthError, KafkaFatalError
from connector.pipeline import Pipeline
from connector.sink.sender import BatchResult
from connector.startup import parse_config
from tests.support.fakes import FakeMessage

Key = tuple[str, int]
MAX_CONSUMES = 20_000  # a script that never finishes fails the test instead of hanging it


def settings(**pipeline: Any):
    config = {
        "kafka": {"bootstrap.servers": "fake:9092", "group.id": "g"},
        "userflux": {
            "base_url": "http://127.0.0.1:9",
            "api_key": "fake-key-0123456789",
            "batch_size": 10,
            "linger_ms": 5,
            "max_in_flight": 2,
        },
        "on_invalid": "skip",
        "metrics": {"enabled": False},
        "pipeline": {
            "commit_interval_ms": 10,
            "rebalance_timeout_s": 2,
            "shutdown_grace_s": 2,
            "refused_exit_delay_s": 0,
            **pipeline,
        },
        "mappings": [{"topics": ["t"], "event": {"name": "event", "userId": "user", "properties": "props"}}],
    }
    return parse_config(yaml.safe_dump(config))


def message(partition: int, offset: int, value: Any = None) -> FakeMessage:
    if value is None:
        value = {"event": "page_view", "user": f"u{offset}", "props": {"p": partition, "o": offset}}
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return FakeMessage(topic="t", partition=partition, offset=offset, value=raw)


class FakeSource:
    """A consumer group member played from a script.

    Each consume() first runs the current script step (a callable returning True once it
    is done, e.g. an assignment or a wait for a condition), then returns messages of
    assigned, unpaused partitions. Every commit is checked against the assignment at that
    moment: committing a partition the member does not own fails the test.
    """

    def __init__(self, props, listener, on_commit=None):
        self.listener = listener
        self.on_commit = on_commit
        self.script: deque[Callable[[], bool]] = deque()
        self.messages: dict[Key, deque[FakeMessage]] = {}
        self.assigned: set[Key] = set()
        self.paused: set[Key] = set()
        self.commits: list[dict[Key, int]] = []
        self.answers: list[list[TopicPartition]] = []  # async commits, answered at the next consume
        self.closed = False
        self.consumes = 0

    def add(self, *messages: FakeMessage) -> None:
        for m in messages:
            self.messages.setdefault((m.topic(), m.partition()), deque()).append(m)

    # -- the KafkaSource interface -------------------------------------------------------

    def subscribe(self, topics):
        self.topics = topics

    def consume(self, max_messages: int, timeout_s: float):
        self.consumes += 1
        assert self.consumes < MAX_CONSUMES, "the script did not finish"
        for answer in self.answers:
            self.on_commit(None, answer)
        self.answers.clear()
        if self.script and self.script[0]():
            self.script.popleft()
        out = []
        for key in sorted(self.assigned - self.paused):
            queue = self.messages.get(key, deque())
            while queue and len(out) < max_messages:
                out.append(queue.popleft())
        return out

    def commit(self, positions, asynchronous):
        committed = {(t, p): o for t, p, o in positions}
        assert set(committed) <= self.assigned, f"committed {sorted(committed)} while owning {sorted(self.assigned)}"
        self.commits.append(committed)
        if asynchronous:
            self.answers.append([TopicPartition(t, p, o) for t, p, o in positions])
        return True

    def assignment(self):
        return set(self.assigned)

    def pause(self, keys):
        self.paused |= set(keys)

    def resume(self, keys):
        self.paused -= set(keys)

    def close(self):
        self.closed = True
        self.revoke(sorted(self.assigned))()

    def topic_exists(self, topic):
        return True

    # -- script steps --------------------------------------------------------------------

    def assign(self, keys: list[Key]) -> Callable[[], bool]:
        def step() -> bool:
            self.assigned |= set(keys)
            self.listener.on_assign(keys)
            return True

        return step

    def revoke(self, keys: list[Key]) -> Callable[[], bool]:
        def step() -> bool:
            self.listener.on_revoke(keys)  # while still assigned, as librdkafka does
            self.assigned -= set(keys)
            self.paused -= set(keys)
            return True

        return step

    def lose(self, keys: list[Key]) -> Callable[[], bool]:
        def step() -> bool:
            # As librdkafka does, a lost partition keeps its pause: it comes back paused.
            self.assigned -= set(keys)
            self.listener.on_lost(keys)
            return True

        return step

    def last_commit(self, key: Key) -> int | None:
        return next((c[key] for c in reversed(self.commits) if key in c), None)


class FakeSender:
    """Delivers every batch at once, unless told to hold a partition's batches."""

    def __init__(self):
        self.sent: list[Batch] = []
        self.hold: dict[int, threading.Event] = {}  # partition -> released when set
        self.fail_with: Exception | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()  # the pipeline's stop_sending: held batches give up

    def send(self, batch: Batch) -> BatchResult:
        with self.lock:
            self.sent.append(batch)
        for item in batch.items:
            gate = self.hold.get(item.message.partition())
            for _ in range(1000):
                if gate is None or gate.is_set() or self.stop.is_set():
                    break
                gate.wait(0.01)
            if self.stop.is_set() and gate is not None and not gate.is_set():
                return BatchResult(batch, abandoned=list(batch.items))
        if self.fail_with is not None:
            return BatchResult(batch, abandoned=list(batch.items), failure=self.fail_with)
        return BatchResult(batch, delivered=list(batch.items), delivered_at=1.0)

    def delivered(self, partition: int) -> set[int]:
        with self.lock:
            return {i.message.offset() for b in self.sent for i in b.items if i.message.partition() == partition}


def pipeline_with(
    source_steps: Callable[[FakeSource, Pipeline], list],
    sender: FakeSender | None = None,
    dead_letters: Any = None,
    **pipeline_settings: Any,
) -> tuple[Pipeline, FakeSource, FakeSender]:
    sender = sender or FakeSender()
    made: list[FakeSource] = []

    def factory(props, listener, on_commit=None):
        made.append(FakeSource(props, listener, on_commit))
        return made[0]

    pipe = Pipeline(settings(**pipeline_settings), source_factory=factory, sender=sender, dead_letters=dead_letters)
    sender.stop = pipe.stop_sending
    source = made[0]
    source.script.extend(source_steps(source, pipe))
    return pipe, source, sender


def until(predicate: Callable[[], bool]) -> Callable[[], bool]:
    return predicate


def stop(pipe: Pipeline) -> Callable[[], bool]:
    def step() -> bool:
        pipe.request_stop()
        return True

    return step


T0, T1 = ("t", 0), ("t", 1)


def test_everything_read_is_delivered_and_committed_then_a_clean_stop():
    def steps(source, pipe):
        source.add(*[message(p, o) for p in (0, 1) for o in range(25)])
        return [
            source.assign([T0, T1]),
            until(lambda: source.last_commit(T0) == 25 and source.last_commit(T1) == 25),
            stop(pipe),
        ]

    pipe, source, sender = pipeline_with(steps)
    assert pipe.run() == 0
    assert source.closed
    assert sender.delivered(0) == sender.delivered(1) == set(range(25))
    assert all(len(b) <= 10 for b in sender.sent)


def test_a_revocation_waits_for_the_revoked_partition_s_batches_and_commits_them_while_owned():
    sender = FakeSender()
    sender.hold[1] = threading.Event()

    def steps(source, pipe):
        source.add(*[message(p, o) for p in (0, 1) for o in range(10)])
        threading.Timer(0.3, sender.hold[1].set).start()  # finishes during the revocation's wait
        return [
            source.assign([T0, T1]),
            until(lambda: len(sender.sent) >= 2),
            source.revoke([T1]),
            until(lambda: source.last_commit(T0) == 10),
            stop(pipe),
        ]

    pipe, source, _ = pipeline_with(steps, sender)
    assert pipe.run() == 0
    revoke_commit = next(c for c in source.commits if T1 in c)
    assert revoke_commit == {T1: 10}  # committed by on_revoke, while still owned
    later = source.commits[source.commits.index(revoke_commit) + 1 :]
    assert all(T1 not in c for c in later)


def test_what_does_not_finish_within_the_rebalance_timeout_is_left_to_the_next_owner(caplog):
    sender = FakeSender()
    sender.hold[1] = threading.Event()  # never released while the partition is ours

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(10)], *[message(1, o) for o in range(5)])
        return [
            source.assign([T0, T1]),
            until(lambda: len(sender.sent) >= 2),
            source.revoke([T1]),
            until(lambda: source.last_commit(T0) == 10),
            stop(pipe),
        ]

    pipe, source, _ = pipeline_with(steps, sender, rebalance_timeout_s=0.2)
    try:
        assert pipe.run() == 0
    finally:
        sender.hold[1].set()
    assert all(T1 not in c for c in source.commits)  # nothing of it was done: nothing committed
    assert "5 messages of the revoked partitions did not finish in time" in caplog.text


def test_lost_partitions_are_never_committed_again():
    sender = FakeSender()
    sender.hold[1] = threading.Event()

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(10)], *[message(1, o) for o in range(10)])
        return [
            source.assign([T0, T1]),
            until(lambda: len(sender.sent) >= 2),
            source.lose([T1]),
            lambda: sender.hold[1].set() or True,  # its batch completes after it was lost
            until(lambda: source.last_commit(T0) == 10),
            stop(pipe),
        ]

    pipe, source, _ = pipeline_with(steps, sender)
    assert pipe.run() == 0
    assert all(T1 not in c for c in source.commits)


def test_reading_holds_at_max_pending_messages_and_a_long_hold_pauses_in_kafka(monkeypatch):
    monkeypatch.setattr(backpressure, "PAUSE_AFTER_S", 0.1)
    sender = FakeSender()
    sender.hold[0] = threading.Event()
    seen: dict[str, Any] = {}

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(100)])

        def paused() -> bool:
            if source.paused == {T0}:
                seen["pending"] = pipe.tracker.pending
                sender.hold[0].set()
                return True
            return False

        return [source.assign([T0]), until(paused), until(lambda: source.last_commit(T0) == 100), stop(pipe)]

    pipe, source, _ = pipeline_with(steps, sender, max_pending_messages=30)
    assert pipe.run() == 0
    assert seen["pending"] == 30  # read no further than the limit
    assert source.paused == set()


def test_a_short_hold_reads_on_without_pausing_in_kafka():
    # Pausing drops what librdkafka has fetched; the ordinary rhythm of a backlog (the
    # senders a little slower than reading) must not pay for that.
    sender = FakeSender()
    sender.hold[0] = threading.Event()
    pauses: list = []

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(100)])
        original = source.pause
        source.pause = lambda keys: pauses.append(set(keys)) or original(keys)
        threading.Timer(0.2, sender.hold[0].set).start()  # well within PAUSE_AFTER_S
        return [source.assign([T0]), until(lambda: source.last_commit(T0) == 100), stop(pipe)]

    pipe, source, _ = pipeline_with(steps, sender, max_pending_messages=30)
    assert pipe.run() == 0
    assert pauses == []


def test_shutdown_waits_the_grace_for_in_flight_batches_then_commits_only_what_was_delivered(caplog):
    sender = FakeSender()
    sender.hold[1] = threading.Event()  # UserFlux never answers partition 1's batch

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(10)], *[message(1, o) for o in range(10)])
        return [source.assign([T0, T1]), until(lambda: len(sender.sent) >= 2), stop(pipe)]

    pipe, source, _ = pipeline_with(steps, sender, shutdown_grace_s=0.3)
    try:
        assert pipe.run() == 0
    finally:
        sender.hold[1].set()
    assert source.last_commit(T0) == 10 and source.last_commit(T1) is None
    assert "1 batches (10 events) were not delivered within the 0.3s grace" in caplog.text


def test_a_second_signal_skips_the_rest_of_the_grace():
    sender = FakeSender()
    sender.hold[0] = threading.Event()

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(10)])

        def twice() -> bool:
            pipe.request_stop()
            pipe.request_stop()
            return True

        return [source.assign([T0]), until(lambda: len(sender.sent) >= 1), twice]

    pipe, source, _ = pipeline_with(steps, sender, shutdown_grace_s=30)
    try:
        assert pipe.run() == 0  # returns at once instead of after 30 s (the test would time out)
    finally:
        sender.hold[0].set()
    assert source.last_commit(T0) is None


def test_a_refused_key_stops_the_run_with_exit_3_and_commits_only_what_was_delivered():
    sender = FakeSender()

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(10)])

        def refuse_from_now_on() -> bool:
            if source.last_commit(T0) == 10:
                sender.fail_with = AuthError("UserFlux refused the write key: HTTP 401")
                source.add(*[message(0, o) for o in range(10, 20)])
                return True
            return False

        return [source.assign([T0]), until(refuse_from_now_on)]

    pipe, source, _ = pipeline_with(steps, sender)
    assert pipe.run() == 3
    assert source.last_commit(T0) == 10
    assert pipe.status.ready() == (
        False,
        {"status": "key_refused", "detail": "UserFlux refused the write key: HTTP 401"},
    )


class FailingDeadLetters:
    topic = "dlq"
    fatal = None
    in_flight = 0

    def send(self, message, reason, stage, done, extra=()):
        done(KafkaFatalError("could not write to the dead-letter topic 'dlq'"))

    def poll(self, timeout_s=0.0):
        pass

    def flush(self, timeout_s):
        return 0


def test_a_dead_letter_the_broker_refuses_stops_the_run_without_committing_past_it():
    def steps(source, pipe):
        source.add(message(0, 0), message(0, 1), message(0, 2, value=b"not json"), message(0, 3))
        return [source.assign([T0])]

    pipe, source, sender = pipeline_with(steps, dead_letters=FailingDeadLetters())
    pipe.invalid.action = "dead_letter"
    assert pipe.run() == 5
    assert (source.last_commit(T0) or 0) <= 2  # never past the message whose dead letter failed


@pytest.mark.parametrize("action, code, most", [("skip", 0, 4), ("stop", 4, 2)])
def test_on_invalid_decides_whether_the_run_goes_past_an_invalid_message(action, code, most):
    def steps(source, pipe):
        source.add(message(0, 0), message(0, 1), message(0, 2, value=b"not json"), message(0, 3))
        return [source.assign([T0]), until(lambda: source.last_commit(T0) == 4), stop(pipe)]

    pipe, source, _ = pipeline_with(steps)
    pipe.invalid.action = action
    assert pipe.run() == code
    assert (source.last_commit(T0) or 0) == most if action == "skip" else (source.last_commit(T0) or 0) <= most


def test_a_partition_lost_while_paused_is_read_again_when_it_comes_back(monkeypatch):
    # Seen in the soak: the broker away longer than the session, the partitions lost while
    # paused, assigned again... and never read again, since librdkafka kept them paused.
    monkeypatch.setattr(backpressure, "PAUSE_AFTER_S", 0.05)
    sender = FakeSender()
    sender.hold[0] = threading.Event()

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(100)])

        def lost_while_paused() -> bool:
            if source.paused != {T0}:
                return False
            source.lose([T0])()
            sender.hold[0].set()  # the in-flight batches finish, for a partition no longer ours
            return True

        def reassigned() -> bool:
            if pipe.tracker.pending:
                return False
            return source.assign([T0])()

        return [
            source.assign([T0]),
            until(lost_while_paused),
            until(reassigned),
            until(lambda: source.last_commit(T0) == 100),
            stop(pipe),
        ]

    pipe, source, _ = pipeline_with(steps, sender, max_pending_messages=30)
    assert pipe.run() == 0


def test_a_signal_while_the_loop_waits_for_completions_does_not_hold_it_past_the_wait():
    # A handler slower than the wait (logging, under load) once left the loop waiting for
    # the next completion, which never came during an outage: SIGTERM then hung the stop.
    pipe, _source, _sender = pipeline_with(lambda source, pipe: [])
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: time.sleep(0.05))
    # Should the wait hang, a completion after 3 s ends it (and the test fails, not hangs).
    watchdog = threading.Timer(3.0, lambda: pipe.completions.put(BatchResult(Batch(False, 0.0))))
    watchdog.start()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.001)
        started = time.monotonic()
        pipe._drain(wait_s=0.01)
        took = time.monotonic() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        watchdog.cancel()
        pipe.pool.close()
    assert took < 1.0
