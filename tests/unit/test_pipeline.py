"""connector/pipeline.py: the loop's delivery, rebalance and shutdown logic, with a fake
Kafka source, a fake sender and a fake clock, so every path runs in milliseconds, in a
known order, and time (linger, commit interval, rebalance timeout, grace, backpressure's
pause) passes only when the loop would wait."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from connector import backpressure
from connector.batcher import Batch
from connector.errors import AuthError, KafkaFatalError
from connector.pipeline import Pipeline
from connector.sink.sender import BatchResult
from connector.startup import parse_config
from tests.support.pipeline_fakes import (
    T0,
    T1,
    FakeDeadLetters,
    FakeSender,
    FakeSource,
    after,
    do,
    fake_pipeline,
    message,
    pipeline_with,
    settings,
    stop,
    until,
)


def test_everything_read_is_delivered_and_committed_then_a_clean_stop():
    def steps(source, pipe):
        source.add(*[message(p, o) for p in (0, 1) for o in range(25)])
        return [
            source.assign([T0, T1]),
            until(lambda: source.last_commit(T0) == 25 and source.last_commit(T1) == 25),
            do(lambda: seen.setdefault("stopped_at", pipe.clock())),
            stop(pipe),
        ]

    seen: dict[str, float] = {}
    pipe, source, sender = pipeline_with(steps)
    assert pipe.run() == 0
    assert pipe.clock() - seen["stopped_at"] < 0.1  # nothing in flight: the grace is not waited
    assert not pipe.in_flight
    assert source.closed
    assert sender.delivered(0) == sender.delivered(1) == set(range(25))
    assert all(len(b) <= 10 for b in sender.sent)


def test_a_revocation_waits_for_the_revoked_partition_s_batches_and_commits_them_while_owned():
    sender = FakeSender()
    sender.hold(1)

    def steps(source, pipe):
        source.add(*[message(p, o) for p in (0, 1) for o in range(10)])
        pipe.clock.call_later(0.3, lambda: sender.release(1))  # finishes during the revocation's wait
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


def test_messages_a_where_filter_leaves_out_are_done_and_committed_past():
    def steps(source, pipe):
        source.add(
            *[
                message(0, o, {"event": "debug" if o % 3 == 0 else "page_view", "user": f"u{o}", "props": {}})
                for o in range(12)
            ]
        )
        return [source.assign([T0]), until(lambda: source.last_commit(T0) == 12), stop(pipe)]

    pipe, source, sender = pipeline_with(steps, where={"path": "event", "not_in": ["debug"]})
    assert pipe.run() == 0
    assert sender.delivered(0) == {o for o in range(12) if o % 3}


def test_a_revocation_sends_what_is_buffered_for_the_revoked_partition_and_commits_it():
    def steps(source, pipe):
        # Five messages of t[1]: a partial batch, not due (its linger has not passed) when
        # the revocation comes at the next consume.
        return [
            source.assign([T0, T1]),
            do(lambda: source.add(*[message(1, o) for o in range(5)])),
            source.revoke([T1]),
            stop(pipe),
        ]

    pipe, source, sender = pipeline_with(steps)
    assert pipe.run() == 0
    assert sender.delivered(1) == set(range(5))
    assert source.commits[0] == {T1: 5}  # on_revoke's commit, while still owned


def test_a_dead_letter_producer_that_failed_for_good_stops_the_run():
    dead_letters = FakeDeadLetters()

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(10)])
        fatal = KafkaFatalError("dead-letter producer failed for good")
        return [
            source.assign([T0]),
            until(lambda: source.last_commit(T0) == 10),
            do(lambda: setattr(dead_letters, "fatal", fatal)),
        ]

    pipe, source, _ = pipeline_with(steps, dead_letters=dead_letters, on_invalid="dead_letter")
    assert pipe.run() == 5
    assert str(pipe.fatal) == "dead-letter producer failed for good"


def test_what_does_not_finish_within_the_rebalance_timeout_is_left_to_the_next_owner(caplog):
    sender = FakeSender()
    sender.hold(1)  # never released while the partition is ours

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
    assert pipe.run() == 0
    assert all(T1 not in c for c in source.commits)  # nothing of it was done: nothing committed
    assert "5 messages of the revoked partitions did not finish in time" in caplog.text


def test_lost_partitions_are_never_committed_again():
    sender = FakeSender()
    sender.hold(1)

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(10)], *[message(1, o) for o in range(10)])
        return [
            source.assign([T0, T1]),
            until(lambda: len(sender.sent) >= 2),
            source.lose([T1]),
            do(lambda: sender.release(1)),  # its batch completes after it was lost
            until(lambda: source.last_commit(T0) == 10),
            stop(pipe),
        ]

    pipe, source, _ = pipeline_with(steps, sender)
    assert pipe.run() == 0
    assert all(T1 not in c for c in source.commits)


def test_a_lost_partition_is_not_committed_for_even_when_its_messages_were_done():
    # Lost, not revoked: another member may own it already and have committed further;
    # a commit of ours would move its position back. Offsets 0..9 of t[1] are done but
    # not committed yet (the interval is long) when it is lost.
    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(10)], *[message(1, o) for o in range(10)])
        return [
            source.assign([T0, T1]),
            until(lambda: pipe.tracker.partitions[T1].position == 10),
            source.lose([T1]),
            after(1.0, pipe.clock),
            stop(pipe),
        ]

    pipe, source, _ = pipeline_with(steps, commit_interval_ms=60_000)
    assert pipe.run() == 0
    assert all(T1 not in c for c in source.commits)
    assert source.commits == [{T0: 10}]  # the final commit, for what is still ours


def test_reading_holds_at_max_pending_messages_and_a_long_hold_pauses_in_kafka():
    sender = FakeSender()
    sender.hold(0)
    seen: dict[str, Any] = {}

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(100)])

        def paused() -> bool:
            if source.paused == {T0}:
                seen["pending"] = pipe.tracker.pending
                seen["held_for"] = pipe.clock() - pipe.backpressure.holding_since
                sender.release(0)
                return True
            return False

        return [source.assign([T0]), until(paused), until(lambda: source.last_commit(T0) == 100), stop(pipe)]

    pipe, source, _ = pipeline_with(steps, sender, max_pending_messages=30)
    assert pipe.run() == 0
    assert seen["pending"] == 30  # read no further than the limit
    # Paused in Kafka once the hold had lasted PAUSE_AFTER_S (within one loop step).
    assert backpressure.PAUSE_AFTER_S <= seen["held_for"] < backpressure.PAUSE_AFTER_S + 0.1
    assert source.paused == set()


def test_a_short_hold_reads_on_without_pausing_in_kafka():
    # Pausing drops what librdkafka has fetched; the ordinary rhythm of a backlog (the
    # senders a little slower than reading) must not pay for that.
    sender = FakeSender()
    sender.hold(0)
    pauses: list = []

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(100)])
        original = source.pause
        source.pause = lambda keys: pauses.append(set(keys)) or original(keys)
        pipe.clock.call_later(0.2, lambda: sender.release(0))  # well within PAUSE_AFTER_S
        return [source.assign([T0]), until(lambda: source.last_commit(T0) == 100), stop(pipe)]

    pipe, source, _ = pipeline_with(steps, sender, max_pending_messages=30)
    assert pipe.run() == 0
    assert pauses == []


def test_shutdown_waits_the_grace_for_in_flight_batches_then_commits_only_what_was_delivered(caplog):
    sender = FakeSender()
    sender.hold(1)  # UserFlux never answers partition 1's batch
    seen: dict[str, float] = {}

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(10)], *[message(1, o) for o in range(10)])
        return [
            source.assign([T0, T1]),
            until(lambda: len(sender.sent) >= 2),
            do(lambda: seen.setdefault("stopped_at", pipe.clock())),
            stop(pipe),
        ]

    pipe, source, _ = pipeline_with(steps, sender, shutdown_grace_s=0.3)
    assert pipe.run() == 0
    assert source.last_commit(T0) == 10 and source.last_commit(T1) is None
    assert "1 batches (10 events) were not delivered within the 0.3s grace" in caplog.text
    assert 0.3 <= pipe.clock() - seen["stopped_at"] < 0.5  # the grace, waited out


def test_a_second_signal_skips_the_rest_of_the_grace():
    sender = FakeSender()
    sender.hold(0)
    seen: dict[str, float] = {}

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(10)])

        def twice() -> bool:
            seen["stopped_at"] = pipe.clock()
            pipe.request_stop()
            pipe.request_stop()
            return True

        return [source.assign([T0]), until(lambda: len(sender.sent) >= 1), twice]

    pipe, source, _ = pipeline_with(steps, sender, shutdown_grace_s=30)
    assert pipe.run() == 0
    assert pipe.clock() - seen["stopped_at"] < 1.0  # at once, not after the 30 s grace
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


def delivered_then_invalid(source: FakeSource, sender: FakeSender) -> list[Callable[[], bool]]:
    """Script steps: offsets 0 and 1 delivered and committed, then 2 (not JSON) and 3 (valid)
    read, and 3 delivered. What is committed after that tells whether 2 counted as done."""
    source.add(message(0, 0), message(0, 1))
    return [
        source.assign([T0]),
        until(lambda: source.last_commit(T0) == 2),
        do(lambda: source.add(message(0, 2, value=b"not json"), message(0, 3))),
        until(lambda: 3 in sender.delivered(0)),
    ]


def test_a_dead_lettered_message_is_done_only_once_the_broker_acknowledged_its_dead_letter():
    dead_letters = FakeDeadLetters()
    seen: dict[str, Any] = {}

    def steps(source, pipe):
        def acknowledge() -> None:
            seen["commits_before_the_ack"] = list(source.commits)
            dead_letters.answer()  # the broker acknowledges it

        return [
            *delivered_then_invalid(source, sender),
            after(1.0, pipe.clock),  # 100 commit intervals, the dead letter unanswered
            do(acknowledge),
            until(lambda: source.last_commit(T0) == 4),
            stop(pipe),
        ]

    sender = FakeSender()
    pipe, source, _ = pipeline_with(steps, sender, dead_letters=dead_letters, on_invalid="dead_letter")
    assert pipe.run() == 0
    assert [m.offset() for m in dead_letters.sent] == [2]
    assert max(c[T0] for c in seen["commits_before_the_ack"]) == 2  # never past it before the ack
    assert source.last_commit(T0) == 4


def test_a_dead_letter_the_broker_refuses_stops_the_run_without_committing_past_it():
    dead_letters = FakeDeadLetters()

    def steps(source, pipe):
        return [
            *delivered_then_invalid(source, sender),
            do(lambda: dead_letters.answer(KafkaFatalError("could not write to the dead-letter topic 'dlq'"))),
        ]

    sender = FakeSender()
    pipe, source, _ = pipeline_with(steps, sender, dead_letters=dead_letters, on_invalid="dead_letter")
    assert pipe.run() == 5
    assert source.highest_commit(T0) == 2  # offsets 0, 1: never past the message whose dead letter failed
    assert 2 not in {i.offset for b in sender.sent for i in b.items}


@pytest.mark.parametrize("action, code, committed", [("skip", 0, 4), ("stop", 4, 2)])
def test_on_invalid_decides_whether_the_run_goes_past_an_invalid_message(action, code, committed):
    def steps(source, pipe):
        script = delivered_then_invalid(source, sender)
        if action == "skip":
            script += [until(lambda: source.last_commit(T0) == 4), stop(pipe)]
        return script

    sender = FakeSender()
    pipe, source, _ = pipeline_with(steps, sender, on_invalid=action)
    assert pipe.run() == code
    assert source.highest_commit(T0) == source.last_commit(T0) == committed


def test_an_event_refused_after_its_partition_was_revoked_is_left_to_the_next_owner():
    # UserFlux refuses t[0]'s and t[1]'s offset 3; t[1]'s answer comes after t[1] was
    # revoked (the rebalance timeout ran out). Its next owner sends it again and decides.
    sender = FakeSender()
    sender.refuse = {(0, 3), (1, 3)}
    sender.hold(1)
    dead_letters = FakeDeadLetters(acks=True)

    def steps(source, pipe):
        source.add(*[message(p, o) for p in (0, 1) for o in range(10)])
        return [
            source.assign([T0, T1]),
            until(lambda: len(sender.sent) >= 2),
            source.revoke([T1]),
            do(lambda: sender.release(1)),
            until(lambda: source.last_commit(T0) == 10),
            stop(pipe),
        ]

    pipe, source, _ = pipeline_with(
        steps, sender, dead_letters=dead_letters, on_invalid="dead_letter", rebalance_timeout_s=0.2
    )
    assert pipe.run() == 0
    assert not pipe.in_flight  # t[1]'s answer was taken in
    assert [(m.partition(), m.offset()) for m in dead_letters.sent] == [(0, 3)]
    assert all(T1 not in c for c in source.commits)


def test_a_partition_lost_while_paused_is_read_again_when_it_comes_back():
    # Seen in the soak: the broker away longer than the session, the partitions lost while
    # paused, assigned again... and never read again, since librdkafka kept them paused.
    sender = FakeSender()
    sender.hold(0)

    def steps(source, pipe):
        source.add(*[message(0, o) for o in range(100)])

        def lost_while_paused() -> bool:
            if source.paused != {T0}:
                return False
            source.lose([T0])()
            sender.release(0)  # the in-flight batches finish, for a partition no longer ours
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


# pytest-timeout's default method uses SIGALRM too: this test's own timeout is a thread.
@pytest.mark.timeout(method="thread")
def test_a_signal_while_the_loop_waits_for_completions_does_not_hold_it_past_the_wait():
    # A handler slower than the wait (logging, under load) once left the loop waiting for
    # the next completion, which never came during an outage: SIGTERM then hung the stop.
    # Real time and the real queue and pool here: the wait itself is what is tested.
    pipe = Pipeline(
        settings(),
        source_factory=lambda props, listener, on_commit=None: FakeSource(props, listener),
        sender=FakeSender(),
    )
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


def test_the_counters_of_named_and_assigned_topics_exist_at_0_from_the_start():
    config = {
        "kafka": {"bootstrap.servers": "fake:9092", "group.id": "g"},
        "userflux": {"base_url": "http://127.0.0.1:9", "api_key": "fake-key-0123456789"},
        "metrics": {"enabled": False},
        "on_invalid": "dead_letter",
        "dead_letter": {"topic": "dlq"},
        "mappings": [
            {"topics": ["named-topic"], "event": {"name": "event", "userId": "user"}},
            {"pattern": "^matched-.+", "event": {"name": "event", "userId": "user"}},
        ],
    }

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(f"userflux_connector_{name}_total", labels)

    pipe, _, _ = fake_pipeline(parse_config(yaml.safe_dump(config)), dead_letters=FakeDeadLetters())
    # Before anything is read: a panel shows 0, and increase() sees the first increment.
    assert value("messages_filtered", topic="named-topic") == 0
    assert value("dead_letter_failures", topic="named-topic", stage="deserialize") == 0
    assert value("events_delivered", topic="named-topic", destination="default") == 0
    assert value("retry_wait_seconds", cause="backoff", destination="default") is not None
    assert value("messages_filtered", topic="matched-1") is None  # a pattern's topics: not known yet
    pipe.on_assign([("matched-1", 0)])
    assert value("messages_filtered", topic="matched-1") == 0
    assert value("dead_letters", topic="matched-1", stage="deliver") == 0
    assert value("messages_invalid", topic="matched-1", stage="map", action="dead_letter") == 0
