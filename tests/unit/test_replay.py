"""connector/replay.py: the replay's parts, and the Pipeline running with them, on the
fake source and sender of test_pipeline.py, so each verdict runs in milliseconds."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from connector.dead_letter import HEADER_REPLAYS, OriginalMessage, unwrap
from connector.errors import ConfigError, RegistryUnavailable
from connector.group_offsets import Position
from connector.refetch import Fetched
from connector.replay import BoundedSource, Replay, ReplayPlan, Selection
from tests.support.fakes import FakeMessage
from tests.support.pipeline_fakes import FakeSender, FakeSource, fake_pipeline, settings, stop, until

DLQ = "dlq"
D0, D1 = (DLQ, 0), (DLQ, 1)
TS = 1_767_225_600_000


def letter(offset: int, value: Any = None, *, partition: int = 0, stage: str = "map", ts: int = TS, **ours: str):
    """A dead letter of topic t's message at (0, 100 + offset), as dead_letter.py writes it."""
    if value is None:
        value = {"event": "page_view", "user": f"u{offset}", "props": {"o": offset}}
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    headers = [
        ("trace", f"t{offset}".encode()),
        ("userflux.error.reason", b"it was wrong"),
        ("userflux.error.stage", stage.encode()),
        ("userflux.source.topic", b"t"),
        ("userflux.source.partition", b"0"),
        ("userflux.source.offset", str(100 + offset).encode()),
        *((k, v.encode()) for k, v in ours.items()),
    ]
    return FakeMessage(
        topic=DLQ, partition=partition, offset=offset, value=raw, key=b"k", headers=headers, timestamp=(1, ts)
    )


class FakeDeadLetters:
    """Takes dead letters; acknowledges them at the next poll, unless ``hold``."""

    topic = DLQ
    fatal = None

    def __init__(self, hold: bool = False):
        self.hold = hold
        self.sent: list[tuple[Any, str, str, list]] = []
        self.resent: list[Any] = []
        self._waiting: list = []

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def send(self, message, reason, stage, done, extra=()):
        self.sent.append((message, reason, stage, list(extra)))
        self._waiting.append(done)

    def resend(self, message, done):
        self.resent.append(message)
        self._waiting.append(done)

    def poll(self, timeout_s=0.0):
        if not self.hold:
            waiting, self._waiting = self._waiting, []
            for done in waiting:
                done(None)

    def flush(self, timeout_s):
        return 0


class FakeFetcher:
    def __init__(self, answers: dict[int, Fetched]):
        self.answers = answers  # by source offset
        self.asked: list[tuple[str, int, int]] = []
        self._done: list[Fetched] = []
        self.closed = False

    @property
    def pending(self) -> int:
        return len(self._done)

    def submit(self, token, topic, partition, offset):
        self.asked.append((topic, partition, offset))
        answer = self.answers[offset]
        self._done.append(Fetched(token, answer.message, answer.gone, answer.failure))

    def results(self):
        done, self._done = self._done, []
        return done

    def close(self):
        self.closed = True


def plan(end: dict, start: dict | None = None) -> ReplayPlan:
    return ReplayPlan(DLQ, "g.replay", start or {k: 0 for k in end}, end)


def replaying(
    letters: list,
    end: dict,
    *,
    selection: Selection | None = None,
    max_replays: int = 3,
    dead_letters: Any = None,
    sender: FakeSender | None = None,
    steps: list | None = None,
    fetcher: FakeFetcher | None = None,
    dry_run: bool = False,
    out: Any = None,
    **pipeline_settings: Any,
):
    replay = Replay(
        plan(end), selection or Selection(), max_replays, dry_run=dry_run, fetcher_factory=lambda props: fetcher
    )
    dead_letters = FakeDeadLetters() if dead_letters is None and not dry_run else dead_letters
    pipe, source, sender = fake_pipeline(
        settings(**{"shutdown_grace_s": 0.2, **pipeline_settings}),
        sender,
        dry_run=dry_run,
        out=out,
        dead_letters=dead_letters,
        replay=replay,
    )
    source.add(*letters)
    source.script.extend([source.assign(sorted(end))] + (steps or []))
    return pipe, replay, source, sender, dead_letters


def delivered_events(sender: FakeSender) -> list[dict]:
    return [item.event for batch in sender.sent for item in batch.items]


def test_each_dead_letter_is_delivered_written_again_reported_or_kept_then_the_replay_ends_at_its_bound():
    letters = [
        letter(0),  # delivered
        letter(1, b"{not json", stage="deserialize"),  # still invalid: written again
        letter(2, b"{not json", **{HEADER_REPLAYS: "3"}),  # still invalid, past --max-replays 3: reported
        FakeMessage(topic=DLQ, partition=0, offset=3, value=b"{}", timestamp=(1, TS)),  # not ours: reported
        letter(4, ts=TS - 1),  # left out by --since: kept
        letter(5),  # delivered
        letter(6),  # past the end offsets at the start: never read
    ]
    pipe, replay, source, sender, dlq = replaying(letters, {D0: 6}, selection=Selection(since_ms=TS))

    assert pipe.run() == 0  # it ends by itself, once every dead letter up to the end is settled
    assert replay.finished and replay.exit_code() == 6  # something was left
    assert source.last_commit(D0) == 6
    events = delivered_events(sender)
    assert [e["properties"] for e in events] == [{"o": 0}, {"o": 5}]
    assert [e["userId"] for e in events] == ["u0", "u5"]
    [(original, reason, stage, extra)] = dlq.sent
    assert isinstance(original, OriginalMessage)
    assert (original.topic(), original.partition(), original.offset(), original.key()) == ("t", 0, 101, b"k")
    assert original.headers() == [("trace", b"t1")]  # without the connector's own
    assert original.timestamp() == (1, TS)
    assert stage == "deserialize" and "not JSON" in reason and extra == [(HEADER_REPLAYS, b"1")]
    assert [m.offset() for m in dlq.resent] == [4] and dlq.resent[0].headers() == letters[4].headers()
    summary = replay.summary()
    assert (summary["read"], summary["delivered"], summary["kept"], summary["left"]) == (6, 2, 1, 3)
    assert summary["still_invalid"]["by_reason"][0]["stage"] == "deserialize"
    assert {r["reason"][:20] for r in summary["not_replayable"]["by_reason"]} == {
        "still invalid after ",
        "not a dead letter of",
    }
    listed = {item["dead_letter"]["offset"]: item for item in summary["not_replayable"]["dead_letters"]}
    assert sorted(listed) == [2, 3] and listed[2]["source"] == {"topic": "t", "partition": 0, "offset": 102}
    assert "replayed 3 times" in listed[2]["detail"]


def test_nothing_is_committed_past_a_dead_letter_whose_new_copy_is_not_acknowledged():
    letters = [letter(0), letter(1, b"{bad"), letter(2), letter(3)]
    dlq = FakeDeadLetters(hold=True)
    sender = FakeSender()
    pipe, replay, source, _, _ = replaying(
        letters, {D0: 4}, dead_letters=dlq, sender=sender, steps=[until(lambda: len(sender.sent) >= 1 and dlq.sent)]
    )
    source.script.append(stop(pipe))
    assert pipe.run() == 0
    assert replay.exit_code() == 7  # stopped before the end
    assert (source.last_commit(D0) or 0) <= 1
    assert replay.summary()["finished"] is False


def test_the_bound_holds_across_partitions_and_one_with_nothing_to_read_is_paused_at_once():
    letters = [letter(0, partition=0), letter(1, partition=0), letter(0, partition=1)]
    replay_plan = ReplayPlan(DLQ, "g.replay", {D0: 0, D1: 5}, {D0: 2, D1: 5})
    assert replay_plan.work == [D0] and replay_plan.to_read == 2
    inner = FakeSource({}, None)
    bounded = BoundedSource(inner, replay_plan)
    inner.assigned = {D0, D1}
    bounded.resume([D0, D1])  # as backpressure does on assignment
    assert inner.paused == {D1}
    inner.add(*letters)
    got = bounded.consume(10, 0)
    assert [(m.partition(), m.offset()) for m in got] == [(0, 0), (0, 1)]  # D1's letter is past its bound
    assert bounded.reached == {D0, D1} and inner.paused == {D0, D1}
    bounded.resume([D0, D1])  # the end of a hold in backpressure: what is read to the end stays paused
    assert inner.paused == {D0, D1}


def test_a_dry_run_prints_what_it_would_do_and_writes_and_commits_nothing():
    out = io.StringIO()
    letters = [letter(0), letter(1, b"{bad"), letter(2, stage="deliver")]
    pipe, replay, source, sender, dlq = replaying(
        letters, {D0: 3}, selection=Selection(stages=frozenset({"map"})), dry_run=True, out=out
    )
    assert dlq is None
    assert pipe.run() == 0 and replay.exit_code() == 6
    assert source.commits == []
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {"invalid", "stage", "topic", "partition", "offset", "replays", "dead_letter"} <= set(lines[0])
    assert lines[0]["offset"] == 101 and lines[0]["replays"] == 1 and lines[0]["dead_letter"]["offset"] == 1
    assert lines[1] == {"kept": "left out by the filters", "dead_letter": {"topic": DLQ, "partition": 0, "offset": 2}}
    text = replay.render("text")
    assert "dry run" in text and "would be delivered" in text and "would be written to dlq again" in text


def test_a_value_dropped_for_size_is_read_at_its_source_or_reported_when_gone():
    dropped = {"userflux.error.dropped": "the value (2000000 bytes): the dead letter was too large"}
    letters = [letter(0, b"", **dropped), letter(1, b"", **dropped), letter(2)]
    source_message = FakeMessage(
        topic="t", partition=0, offset=100, key=b"orig-key", headers=[("trace", b"orig")],
        value=json.dumps({"event": "big_one", "user": "u-big", "props": {"blob": "x" * 100}}).encode(),
    )  # fmt: skip
    fetcher = FakeFetcher(
        {100: Fetched(None, message=source_message), 101: Fetched(None, gone="t[0] no longer holds offset 101")}
    )
    pipe, replay, source, sender, dlq = replaying(letters, {D0: 3}, fetcher=fetcher)
    assert pipe.run() == 0
    assert fetcher.asked == [("t", 0, 100), ("t", 0, 101)] and fetcher.closed
    events = delivered_events(sender)
    assert sorted(e["name"] for e in events) == ["big_one", "page_view"]
    assert source.last_commit(D0) == 3 and dlq.sent == []
    summary = replay.summary()
    assert summary["not_replayable"]["dead_letters"][0]["detail"] == "t[0] no longer holds offset 101"
    assert replay.exit_code() == 6


def test_losing_a_partition_to_another_member_stops_the_replay_with_exit_7():
    letters = [letter(o) for o in range(20)]
    sender = FakeSender()
    sender.hold(0)  # never released: the replay is mid-way when the partition goes

    pipe, replay, source, _, _ = replaying(letters, {D0: 20}, sender=sender, rebalance_timeout_s=0.2)
    source.script.extend([until(lambda: len(sender.sent) >= 1), source.revoke([D0])])
    assert pipe.run() == 7
    assert "lost dlq[0] to another member of its group 'g.replay'" in str(pipe.fatal)
    assert replay.exit_code() == 7 and source.commits == []


def test_a_mapping_that_no_longer_takes_the_topic_leaves_the_dead_letter_still_invalid():
    other = FakeMessage(
        topic=DLQ, partition=0, offset=0, value=b"{}", headers=[("userflux.source.topic", b"gone-topic"),
        ("userflux.source.partition", b"0"), ("userflux.source.offset", b"5")],
    )  # fmt: skip
    pipe, replay, source, sender, dlq = replaying([other], {D0: 1})
    assert pipe.run() == 0
    [(original, reason, stage, _)] = dlq.sent
    assert original.topic() == "gone-topic" and stage == "map" and "no mapping takes topic 'gone-topic'" in reason


# -- the parts --------------------------------------------------------------------------------


def test_unwrap_gives_the_original_and_what_the_dead_letter_says():
    original = unwrap(letter(3, stage="deliver", **{HEADER_REPLAYS: "2", "userflux.error.dropped": "the value"}))
    assert original is not None
    assert (original.topic(), original.partition(), original.offset()) == ("t", 0, 103)
    assert (original.stage, original.reason, original.replays, original.dropped) == (
        "deliver",
        "it was wrong",
        2,
        "the value",
    )
    assert original.headers() == [("trace", b"t3")] and original.key() == b"k"
    assert unwrap(FakeMessage(headers=[("userflux.source.topic", b"t")])) is None  # no partition, no offset
    assert unwrap(FakeMessage(headers=None)) is None
    bad_count = unwrap(letter(0, **{HEADER_REPLAYS: "many"}))
    assert bad_count is not None and bad_count.replays == 0


def test_selection_filters_by_stage_source_topic_and_the_dead_letter_s_timestamp():
    message = letter(0, stage="map", ts=TS)
    original = unwrap(message)
    assert Selection().selects(message, original) and Selection().everything
    assert Selection(stages=frozenset({"map"})).selects(message, original)
    assert not Selection(stages=frozenset({"deliver"})).selects(message, original)
    assert not Selection(topics=frozenset({"other"})).selects(message, original)
    assert Selection(since_ms=TS, until_ms=TS + 1).selects(message, original)  # since inclusive
    assert not Selection(until_ms=TS).selects(message, original)  # until exclusive
    assert not Selection(stages=frozenset({"map"})).selects(FakeMessage(), None)  # not ours: no stage to match
    assert not Selection(since_ms=0).selects(FakeMessage(timestamp=(0, None)), None)
    with pytest.raises(ConfigError, match="--stage nope"):
        Selection(stages=frozenset({"nope"}))
    with pytest.raises(ConfigError, match="--since must be before --until"):
        Selection(since_ms=5, until_ms=5)


class FakeAdmin:
    def __init__(self, partitions: dict[str, int], positions: list[Position]):
        self._partitions, self._positions = partitions, positions

    def topics(self):
        return self._partitions

    def positions(self, group, keys):
        return self._positions


def test_the_plan_starts_at_the_committed_offset_or_the_earliest_and_ends_at_the_end():
    positions = [
        Position(DLQ, 0, 4, 0, 10),  # committed: from there
        Position(DLQ, 1, None, 2, 10),  # never committed: the earliest
        Position(DLQ, 2, 1, 3, 10),  # below the earliest (retention): the earliest
        Position(DLQ, 3, 50, 0, 10),  # past the end (the topic was made anew): the earliest
    ]
    made = ReplayPlan.from_cluster(FakeAdmin({DLQ: 4}, positions), DLQ, "g.replay")
    assert made.start == {(DLQ, 0): 4, (DLQ, 1): 2, (DLQ, 2): 3, (DLQ, 3): 0}
    assert made.end == {(DLQ, p): 10 for p in range(4)} and made.to_read == 6 + 8 + 7 + 10
    with pytest.raises(ConfigError, match="does not exist on the cluster"):
        ReplayPlan.from_cluster(FakeAdmin({}, []), DLQ, "g.replay")


def test_the_replay_s_consumer_is_a_group_of_its_own_from_the_earliest_and_never_a_static_member():
    replay = Replay(plan({D0: 1}), Selection(), 3)
    props = replay.consumer_props(
        {"group.id": "g", "group.instance.id": "pod-1", "auto.offset.reset": "latest", "client.id": "c"}
    )
    assert props == {
        "group.id": "g.replay",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": "true",
        "client.id": "c-replay",
    }


def test_an_original_read_again_while_the_schema_registry_is_away_is_tried_again_not_lost():
    dropped = {"userflux.error.dropped": "the value (2000000 bytes): the dead letter was too large"}
    source_message = FakeMessage(
        topic="t", partition=0, offset=100, value=json.dumps({"event": "big", "user": "u", "props": {}}).encode()
    )
    fetcher = FakeFetcher({100: Fetched(None, message=source_message)})
    pipe, replay, source, sender, _ = replaying([letter(0, b"", **dropped), letter(1)], {D0: 2}, fetcher=fetcher)
    real_map, calls = pipe.mapper.map, []

    def registry_away_once(message):
        calls.append(message.offset())
        if message.offset() == 100 and calls.count(100) == 1:
            raise RegistryUnavailable("the schema registry did not answer (injected)")
        return real_map(message)

    pipe.mapper.map = registry_away_once
    replay.LATER_S = (0.01, 0.01)
    assert pipe.run() == 0
    assert calls.count(100) == 2 and replay.summary()["read"] == 2
    assert sorted(e["name"] for e in delivered_events(sender)) == ["big", "page_view"]
    assert source.last_commit(D0) == 2
