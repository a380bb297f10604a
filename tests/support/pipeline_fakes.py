"""The pipeline's fakes, shared by its tests (tests/unit/test_pipeline.py) and those of what
runs as a pipeline (the replay, the wait for the schema registry): a consumer group
member played from a script, a sender that is the sender pool too, the completion queue
and the dead-letter producer, all on the fake clock, so every path runs in milliseconds,
in a known order, and time passes only when the loop would wait."""

from __future__ import annotations

import json
import queue
from collections import deque
from collections.abc import Callable
from typing import Any
from unittest import mock

import yaml
from confluent_kafka import TopicPartition

from connector import pipeline as pipeline_module
from connector.batcher import Batch
from connector.pipeline import Pipeline
from connector.sink.sender import BatchResult
from connector.startup import Startup, parse_config
from tests.support.fakes import FakeClock, FakeMessage

Key = tuple[str, int]
MAX_CONSUMES = 20_000  # a script that never finishes fails the test instead of hanging it
START = 1000.0  # the fake clock's start


def settings(on_invalid: str = "skip", where: Any = None, **pipeline: Any):
    config = {
        "kafka": {"bootstrap.servers": "fake:9092", "group.id": "g"},
        "userflux": {
            "base_url": "http://127.0.0.1:9",
            "api_key": "fake-key-0123456789",
            "batch_size": 10,
            "linger_ms": 5,
            "max_in_flight": 2,
        },
        "on_invalid": on_invalid,
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
    if on_invalid == "dead_letter":
        config["dead_letter"] = {"topic": "dlq"}
    if where is not None:
        config["mappings"][0]["where"] = where
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
    assigned, unpaused partitions; with none to return it lets the fake clock run for its
    timeout, as a real consume() waits. Every commit is recorded and checked against the
    assignment at that moment: committing a partition the member does not own fails the
    test (the commit is still in ``commits``).
    """

    def __init__(self, props, listener, on_commit=None, clock: FakeClock | None = None):
        self.listener = listener
        self.on_commit = on_commit
        self.clock = clock or FakeClock(START)
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
        if not self._readable():
            self.clock.advance_until(self._readable, timeout_s)
        out = []
        for key in sorted(self.assigned - self.paused):
            queue = self.messages.get(key, deque())
            while queue and len(out) < max_messages:
                out.append(queue.popleft())
        return out

    def _readable(self) -> bool:
        return any(self.messages.get(key) for key in self.assigned - self.paused)

    def commit(self, positions, asynchronous):
        committed = {(t, p): o for t, p, o in positions}
        self.commits.append(committed)
        assert set(committed) <= self.assigned, f"committed {sorted(committed)} while owning {sorted(self.assigned)}"
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

    def highest_commit(self, key: Key) -> int | None:
        return max((c[key] for c in self.commits if key in c), default=None)


REFUSED = "UserFlux refused the event: HTTP 400"


class FakeSender:
    """UserFlux and the sender pool in one, on the pipeline's thread.

    Every batch is answered at once: delivered, but for the events in ``refuse``
    ((partition, offset) pairs), refused; with ``fail_with`` set, it fails with that
    error. A held partition's batches wait (in flight) until the test releases it; after
    the pipeline closed the pool, nothing is answered any more.
    """

    def __init__(self):
        self.sent: list[Batch] = []
        self.held: set[int] = set()
        self.waiting: list[Batch] = []
        self.refuse: set[tuple[int, int]] = set()
        self.fail_with: Exception | None = None
        self.completions: queue.Queue | None = None  # the pipeline's, set by pipeline_with
        self.closed = False

    def hold(self, partition: int) -> None:
        self.held.add(partition)

    def release(self, partition: int) -> None:
        self.held.discard(partition)
        waiting, self.waiting = self.waiting, []
        for batch in waiting:
            self.submit(batch, resent=True)

    # -- the SenderPool interface ----------------------------------------------------------

    def submit(self, batch: Batch, tried: Any = None, resent: bool = False) -> None:
        if not resent:
            self.sent.append(batch)
        if self.closed:
            return
        if any(item.message.partition() in self.held for item in batch.items):
            self.waiting.append(batch)
            return
        assert self.completions is not None
        if self.fail_with is not None:
            result = BatchResult(batch, abandoned=list(batch.items), failure=self.fail_with)
        else:
            refused = [i for i in batch.items if (i.message.partition(), i.message.offset()) in self.refuse]
            result = BatchResult(
                batch,
                delivered=[i for i in batch.items if i not in refused],
                refused=[(i, REFUSED) for i in refused],
                delivered_at=1.0,
            )
        self.completions.put(result)

    @property
    def busy(self) -> int:
        return len(self.waiting)

    def close(self, timeout_s: float = 0.0) -> None:
        self.closed = True

    def delivered(self, partition: int) -> set[int]:
        """Offsets of ``partition`` sent (answered or still held)."""
        return {i.message.offset() for b in self.sent for i in b.items if i.message.partition() == partition}


class FakeCompletions(queue.Queue):
    """The pipeline's completion queue on the fake clock: a wait for a result lets fake
    time pass (running what the test scheduled, which may release held batches) instead
    of real time."""

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock = clock

    def get(self, block: bool = True, timeout: float | None = None):
        if block and timeout and self.empty():
            self.clock.advance_until(lambda: not self.empty(), timeout)
        return super().get(block=False)


class FakeDeadLetters:
    """The dead-letter producer. A dead letter waits for the broker's answer, which the
    test gives with ``answer`` (or at once, with ``acks=True``); as librdkafka's delivery
    reports, answers reach the pipeline in its next ``poll``."""

    topic = "dlq"
    fatal = None

    def __init__(self, acks: bool = False):
        self.acks = acks
        self.sent: list[FakeMessage] = []
        self.waiting: list[Callable] = []  # done callbacks without an answer yet
        self.answered: list[tuple[Callable, Exception | None]] = []

    def send(self, message, reason, stage, done, extra=()):
        self.sent.append(message)
        self.waiting.append(done)
        if self.acks:
            self.answer()

    def answer(self, error: Exception | None = None) -> None:
        """The broker answers every waiting dead letter: acknowledged, or ``error``."""
        self.answered += [(done, error) for done in self.waiting]
        self.waiting = []

    @property
    def in_flight(self) -> int:
        return len(self.waiting) + len(self.answered)

    def poll(self, timeout_s=0.0):
        answered, self.answered = self.answered, []
        for done, error in answered:
            done(error)

    def flush(self, timeout_s):
        return self.in_flight


def fake_pipeline(
    startup: Startup, sender: FakeSender | None = None, **pipeline_args: Any
) -> tuple[Pipeline, FakeSource, FakeSender]:
    """A Pipeline of ``startup`` on a FakeSource, a FakeSender (the sender pool too: batches
    are answered on the pipeline's thread) and the fake clock (``pipe.clock``). Further
    arguments go to Pipeline (dead_letters, dry_run, replay, ...)."""
    sender = sender or FakeSender()
    clock = FakeClock(START)
    made: list[FakeSource] = []

    def factory(props, listener, on_commit=None):
        made.append(FakeSource(props, listener, on_commit, clock))
        return made[0]

    with mock.patch.object(pipeline_module, "SenderPool", lambda *args: sender):
        pipe = Pipeline(startup, source_factory=factory, sender=sender, clock=clock, **pipeline_args)
    pipe.completions = sender.completions = FakeCompletions(clock)
    return pipe, made[0], sender


def pipeline_with(
    source_steps: Callable[[FakeSource, Pipeline], list],
    sender: FakeSender | None = None,
    dead_letters: Any = None,
    on_invalid: str = "skip",
    where: Any = None,
    **pipeline_settings: Any,
) -> tuple[Pipeline, FakeSource, FakeSender]:
    """``fake_pipeline`` of ``settings(...)``; ``source_steps`` makes the source's script."""
    pipe, source, sender = fake_pipeline(
        settings(on_invalid, where, **pipeline_settings), sender, dead_letters=dead_letters
    )
    source.script.extend(source_steps(source, pipe))
    return pipe, source, sender


def until(predicate: Callable[[], bool]) -> Callable[[], bool]:
    return predicate


def after(seconds: float, clock: FakeClock) -> Callable[[], bool]:
    """A step done once ``seconds`` of (fake) time have passed since it was first tried."""
    started: list[float] = []

    def step() -> bool:
        if not started:
            started.append(clock())
        return clock() - started[0] >= seconds

    return step


def do(action: Callable[[], Any]) -> Callable[[], bool]:
    """A step that does ``action`` once."""

    def step() -> bool:
        action()
        return True

    return step


def stop(pipe: Pipeline) -> Callable[[], bool]:
    def step() -> bool:
        pipe.request_stop()
        return True

    return step


T0, T1 = ("t", 0), ("t", 1)
