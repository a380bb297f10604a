"""connector/group_offsets.py: parsing what the operator asks for, the reset's plan, the
refusal while a group has members, the reports, and asking Kafka again when it says so."""

from __future__ import annotations

import json
from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from connector.errors import ConfigError, GroupBusy, KafkaFatalError
from connector.group_offsets import (
    GroupAdmin,
    GroupState,
    Member,
    Position,
    Target,
    format_instant,
    parse_instant,
    plan_reset,
    render_plan,
    render_report,
    report,
    select,
)

T = "web"
KEYS = [(T, 0), (T, 1), ("app", 0)]


def test_instants_are_iso_8601_and_a_time_without_an_offset_is_utc():
    assert parse_instant("2026-03-01T09:30:00Z", "--since") == 1_772_357_400_000
    assert parse_instant("2026-03-01T10:30:00+01:00", "--since") == 1_772_357_400_000
    assert parse_instant("2026-03-01T09:30:00", "--since") == 1_772_357_400_000
    assert parse_instant("2026-03-01", "--since") == 1_772_323_200_000
    assert format_instant(1_772_357_400_500) == "2026-03-01T09:30:00.500Z"
    with pytest.raises(ConfigError, match=r"--until: expected an ISO-8601 date and time .* found 'yesterday'"):
        parse_instant("yesterday", "--until")


@pytest.mark.parametrize(
    "words, kind, value",
    [
        (["earliest"], "earliest", None),
        (["LATEST"], "latest", None),
        (["offset", "42"], "offset", 42),
        (["datetime", "2026-03-01T09:30:00Z"], "datetime", 1_772_357_400_000),
    ],
)
def test_reset_targets(words, kind, value):
    target = Target.parse(words)
    assert (target.kind, target.value) == (kind, value)


@pytest.mark.parametrize(
    "words, says",
    [
        ([], "expected earliest, latest"),
        (["earliest", "now"], "found 'earliest now'"),
        (["offset"], "found 'offset'"),
        (["offset", "-1"], "expected 0 or more"),
        (["offset", "x"], "expected a whole number"),
        (["datetime", "noon"], "ISO-8601"),
    ],
)
def test_reset_targets_that_are_wrong_say_so(words, says):
    with pytest.raises(ConfigError, match=says):
        Target.parse(words)


def test_topic_selection_narrows_to_the_mapped_partitions():
    assert select(KEYS, []) == KEYS
    assert select(KEYS, [T]) == [(T, 0), (T, 1)]
    assert select(KEYS, [f"{T}:1", "app"]) == [("app", 0), (T, 1)]
    assert select(KEYS, [f"{T}:0,1"]) == [(T, 0), (T, 1)]
    with pytest.raises(ConfigError, match="'nope' is not a topic the mappings read"):
        select(KEYS, ["nope"])
    with pytest.raises(ConfigError, match="web has partitions 0 to 1, not 5"):
        select(KEYS, [f"{T}:5"])
    with pytest.raises(ConfigError, match="expected TOPIC:PARTITION"):
        select(KEYS, [f"{T}:a"])


MEMBER = Member("m-1", "userflux-connector-pod-a", "/10.0.0.7", None, ((T, 0), (T, 1)))


def test_a_group_with_members_is_refused_naming_each():
    GroupState("g", "Empty").refuse_if_active("reset its offsets")  # no members: nothing raised
    with pytest.raises(GroupBusy) as refused:
        GroupState("g", "Stable", (MEMBER,)).refuse_if_active("reset its offsets")
    text = str(refused.value)
    assert "1 active member (Stable)" in text and "userflux-connector-pod-a on 10.0.0.7 (member m-1)" in text
    assert refused.value.exit_code == 7


class PlanAdmin:
    """What plan_reset asks: the state, the positions, the offsets for a time."""

    def __init__(self, at: dict | None = None):
        self.at = at or {}

    def state(self, group):
        return GroupState(group, "Empty")

    def positions(self, group, keys):
        table = {(T, 0): Position(T, 0, 10, 2, 50), (T, 1): Position(T, 1, None, 0, 30)}
        return [table[k] for k in keys]

    def offsets_at(self, keys, ms):
        return {k: self.at.get(k) for k in keys}


@pytest.mark.parametrize(
    "words, new",
    [
        (["earliest"], [2, 0]),
        (["latest"], [50, 30]),
        (["offset", "20"], [20, 20]),
        (["offset", "40"], [40, 30]),  # past partition 1's end: its end
        (["offset", "1"], [2, 1]),  # before partition 0's earliest: its earliest
        (["datetime", "2026-03-01T00:00:00Z"], [17, 30]),  # partition 1 has nothing that new: its end
    ],
)
def test_the_plan_moves_each_partition_as_asked_within_its_log(words, new):
    plan = plan_reset(PlanAdmin({(T, 0): 17}), "g", [(T, 0), (T, 1)], Target.parse(words))
    assert [m.target for m in plan.moves] == new
    assert [m.changes for m in plan.moves] == [new[0] != 10, True]


def test_the_plan_and_the_report_read_well_as_text_and_as_json():
    plan = plan_reset(PlanAdmin(), "g", [(T, 0), (T, 1)], Target.parse(["offset", "40"]))
    text = render_plan(plan, "text", executed=False)
    assert text.splitlines()[0] == "reset of group g (Empty) to offset 40:"
    assert "offset 40 is outside 0..30: the end" in text and "run again with --execute" in text
    data = json.loads(render_plan(plan, "json", executed=True, moved=2))
    assert data["executed"] and data["partitions"][1] == {
        "topic": T,
        "partition": 1,
        "committed": None,
        "new": 30,
        "note": "offset 40 is outside 0..30: the end",
    }
    positions = [Position(T, 0, 10, 2, 50), Position(T, 1, None, 5, 30)]
    shown = report(GroupState("g", "Stable", (MEMBER,)), positions, ["later"], {"auto.offset.reset": "earliest"})
    assert [r["lag"] for r in shown["partitions"]] == [40, 25] and shown["lag"] == 65
    latest = report(GroupState("g", "Stable"), positions, [], {"auto.offset.reset": "latest"})
    assert [r["lag"] for r in latest["partitions"]] == [40, 0]  # never committed, from the end: no lag
    text = render_report(shown, "text")
    assert "group g: Stable, 1 member" in text and "web[0], web[1]" in text
    assert "topic later does not exist (yet)" in text and "never committed" in text
    assert json.loads(render_report(shown, "json"))["members"][0]["host"] == "10.0.0.7"


class FlakyAdmin:
    """Answers a coordinator still loading twice, then the answer."""

    def __init__(self, code=KafkaError.COORDINATOR_LOAD_IN_PROGRESS, failures=2):
        self.code, self.failures, self.calls = code, failures, 0

    def describe_consumer_groups(self, groups, request_timeout):
        self.calls += 1
        future: Future = Future()
        if self.calls <= self.failures:
            future.set_exception(KafkaException(KafkaError(self.code)))
        else:
            future.set_result(type("Described", (), {"state": None, "members": []})())
        return {groups[0]: future}


def test_what_kafka_calls_retriable_is_asked_again_and_the_rest_fails_at_once():
    flaky = FlakyAdmin()
    admin = GroupAdmin({"bootstrap.servers": "x"}, factory=lambda conf: flaky, timeout_s=5)
    assert admin.state("g") == GroupState("g", "Unknown", ())
    assert flaky.calls == 3
    refused = FlakyAdmin(KafkaError.GROUP_AUTHORIZATION_FAILED, failures=1)
    admin = GroupAdmin({"bootstrap.servers": "x"}, factory=lambda conf: refused, timeout_s=5)
    with pytest.raises(KafkaFatalError, match="did not answer the description of group 'g'"):
        admin.state("g")
    assert refused.calls == 1


def test_the_admin_client_gets_no_consumer_property():
    seen = {}
    GroupAdmin({"bootstrap.servers": "x", "group.id": "g", "session.timeout.ms": "6000"}, factory=seen.update)
    assert "group.id" not in seen and "session.timeout.ms" not in seen and seen["client.id"].endswith("-admin")
