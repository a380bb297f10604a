"""connector/mapping/generated.py: the generated build does what the builder's specs say.

The oracle is the builder as it was written by hand before it was generated (``reference``
below, kept verbatim): for every mapping of the property tests and any value, both build
the same event or refuse with the same reason.
"""

from __future__ import annotations

import json
import re
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.errors import InvalidMessage
from connector.mapping import event as event_module
from connector.mapping.event import compile_mapping
from connector.mapping.paths import MISSING
from connector.mapping.timestamps import EARLIEST_MS, EARLIEST_S, MILLIS_BELOW, SECONDS_BELOW, iso_ms
from connector.validation import Problems
from tests.support.fakes import FakeMessage
from tests.unit.mapping.test_mapper_properties import MAPPER, TOPICS, json_values, kafka_timestamps, plausible


def reference(self: Any, value: Any, message: Any) -> dict:
    """EventBuilder.build as written by hand."""
    found = self.name.get(value, message)
    name = found if type(found) is str and found in event_module._VALID_NAMES else self._name(found, value, message)
    event: dict[str, Any] = {"name": name}
    user_id = anonymous_id = None
    if self.user_id is not None:
        found = self.user_id.get(value, message)
        user_id = (
            found
            if type(found) is str and found and found not in event_module._ABSENT_IDS and not found.isspace()
            else self._id("userId", self.user_id, found)
        )
    if self.anonymous_id is not None:
        found = self.anonymous_id.get(value, message)
        anonymous_id = (
            found
            if type(found) is str and found and found not in event_module._ABSENT_IDS and not found.isspace()
            else self._id("anonymousId", self.anonymous_id, found)
        )
    if user_id is None and anonymous_id is None:
        tried = " and ".join(
            f"{field} ({spec.describe if spec else 'not mapped'})"
            for field, spec in (("userId", self.user_id), ("anonymousId", self.anonymous_id))
        )
        raise InvalidMessage(f"no userId or anonymousId: nothing found for {tried}")
    if user_id is not None:
        event["userId"] = user_id
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    ts = self.timestamp.get(value, message) if self.timestamp is not None else MISSING
    if type(ts) is int and EARLIEST_MS <= ts < MILLIS_BELOW:
        event["timestamp"] = ts
    elif type(ts) is float and EARLIEST_S <= ts < SECONDS_BELOW:
        event["timestamp"] = round(ts * 1000)
    elif type(ts) is str and (ms := iso_ms(ts)) is not None:
        event["timestamp"] = ms
    else:
        event["timestamp"] = self._timestamp(ts, message)
    event["properties"] = self.properties.build(value, message)
    return event


def outcome(build, value: Any, message: Any) -> Any:
    try:
        return "event", build(value, message)
    except InvalidMessage as exc:
        return "invalid", exc.reason, exc.stage


def builder(spec: dict):
    problems = Problems()
    mapping = compile_mapping(spec, 0, problems, False)
    assert problems.lines == [], problems.lines
    return mapping.builder


# The values each check turns on: blank and placeholder ids, names with white space, every
# timestamp form and its bounds, objects and not.
EDGES = [
    "",
    " ",
    "\t",
    "null",
    "undefined",
    "page view",
    "u1",
    0,
    1,
    -1,
    1.5,
    2.0,
    True,
    False,
    None,
    [],
    {},
    [1],
    ["e", {"id": "u"}],
    {"id": "u2"},
    {"id": " "},
    {"id": 7},
    {"id": {}},
    {"k": {"b": 1}},
    EARLIEST_MS - 1,
    EARLIEST_MS,
    MILLIS_BELOW - 1,
    MILLIS_BELOW,
    EARLIEST_S - 0.5,
    EARLIEST_S + 0.25,
    SECONDS_BELOW - 0.5,
    SECONDS_BELOW + 0.5,
    1_700_000_000.1237,
    float(EARLIEST_MS),
    "2023-11-14T22:13:20Z",
    "2023-11-14 22:13:20",
    "2023-11-14T22:13:20.123456+05:30",
    "1700000000",
    "x" * 300,
]
edges = st.one_of(st.sampled_from(EDGES), json_values)
# Each field a good value half the time, so that the checks after it are reached too.
GOOD = {
    "event": "e",
    "name": "n",
    "type": "t",
    "action": "a",
    "id": "u1",
    "user": {"id": "u2"},
    "anonymous_id": "a1",
    "sent_at": 1_700_000_000_000,
    "ts": "2023-11-14T22:13:20Z",
    "properties": {"k": 1},
    "a": "x",
    "n": 1,
    "list": [1],
    "keep": True,
    "x": None,
}
values = st.one_of(
    plausible,
    json_values,
    st.fixed_dictionaries({}, optional={field: st.one_of(st.just(good), edges) for field, good in GOOD.items()}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TOPICS), values, kafka_timestamps, st.one_of(st.none(), st.binary(max_size=8)))
def test_the_generated_build_does_what_the_hand_written_one_did(topic, value, timestamp, key):
    message = FakeMessage(topic=topic, value=b"", key=key, timestamp=timestamp, headers=[("device-id", b"d1")])
    built = MAPPER.mapping_for(topic).builder
    with mock.patch.object(event_module, "time") as clock:  # "now", for a message without any time
        clock.time.return_value = 1_700_000_000.5
        assert outcome(built.build, value, message) == outcome(lambda v, m: reference(built, v, m), value, message)


def test_every_field_at_every_edge_builds_as_the_hand_written_one_did():
    message = FakeMessage(
        topic="t", value=b"", key=b"k", timestamp=(1, 1_700_000_000_000), headers=[("device-id", b"d1")]
    )
    compared = 0
    for topic in TOPICS:
        built = MAPPER.mapping_for(topic).builder
        for field in GOOD:
            for edge in EDGES + [MISSING]:
                value = dict(GOOD)
                if edge is MISSING:
                    del value[field]
                else:
                    value[field] = edge
                assert outcome(built.build, value, message) == outcome(
                    lambda v, m, built=built: reference(built, v, m), value, message
                ), (topic, field, edge)
                compared += 1
    assert compared == len(TOPICS) * len(GOOD) * (len(EDGES) + 1)


def test_plain_paths_of_one_or_two_segments_are_read_inline_and_the_rest_called():
    built = builder(
        {
            "topics": ["t"],
            "event": {
                "name": "event",
                "userId": "user.id",
                "anonymousId": "a.b.c",
                "timestamp": "@timestamp",
                "properties": "properties",
            },
        }
    )
    assert built.source.count("value.get(") == 3  # event, user (then .id), properties
    assert "node.get(" in built.source  # user.id's second step
    called = re.findall(r"\b(c\d+)\(value, message\)", built.source)
    assert [built.build.__globals__[name] for name in called] == [built.anonymous_id.get, built.timestamp.get]
    assert "dict(found) if type(found" in built.source  # a whole object copied inline


def test_keys_never_enter_the_source_as_text():
    odd = "we\"ird{k}\\\n'key"
    built = builder(
        {
            "topics": ["t"],
            "event": {"name": {"path": "n"}, "userId": "x." + odd.replace(".", "\\."), "properties": {"from": odd}},
        }
    )
    assert odd not in built.source and "weird" not in built.source.replace('"', "")
    value = {"n": "e", "x": {odd: "u1"}, odd: {"p": 1}}
    event = built.build(value, FakeMessage(topic="t", value=json.dumps(value).encode()))
    assert event["userId"] == "u1" and event["properties"] == {"p": 1}


def test_a_value_that_is_not_an_object_is_read_as_before():
    # Numeric segments index lists, at the top and one level down.
    built = builder({"topics": ["t"], "event": {"name": "0", "userId": "1.x", "anonymousId": "3.0", "properties": "2"}})
    message = FakeMessage(topic="t", value=b"[]", timestamp=(1, 1_700_000_000_000))
    event = built.build(["e", {"x": "u"}, {"k": True}, ["a1"]], message)
    assert event == {
        "name": "e",
        "userId": "u",
        "anonymousId": "a1",
        "timestamp": 1_700_000_000_000,
        "properties": {"k": True},
    }
    for value in ("text", ["e"], ["e", [], {}, []], ["e", "u", None, "a"]):
        assert outcome(built.build, value, message) == outcome(lambda v, m: reference(built, v, m), value, message)
