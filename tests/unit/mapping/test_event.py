"""A compiled mapping: topic matching, where: filters, and building the UserFlux event."""

from __future__ import annotations

import copy
import time

import pytest

from connector.errors import InvalidMessage
from connector.mapping.event import compile_mapping
from connector.validation import Problems
from tests.support.fakes import FakeMessage, apply_mapping

KAFKA_MS = 1_650_000_000_000


def kafka_message(**fields) -> FakeMessage:
    """A message whose Kafka timestamp is KAFKA_MS, unlike any timestamp in the tests' values."""
    return FakeMessage(**{"timestamp": (1, KAFKA_MS), **fields})


MSG = kafka_message()


def mapping(event=None, location_enrichment=False, **extra):
    raw = {"topics": ["events"], "event": event or {"name": "name", "userId": "uid"}, **extra}
    problems = Problems()
    compiled = compile_mapping(raw, 0, problems, location_enrichment)
    assert problems.lines == []
    assert compiled is not None
    return compiled


def build(event_spec, value, message=MSG):
    return apply_mapping(mapping(event_spec), value, message)


def invalid(event_spec, value, message=MSG) -> str:
    with pytest.raises(InvalidMessage) as info:
        apply_mapping(mapping(event_spec), value, message)
    assert info.value.stage == "map"
    return info.value.reason


SPEC = {"name": "name", "userId": "uid", "anonymousId": "aid", "timestamp": "ts", "properties": "props"}


# -- topics ---------------------------------------------------------------------------------


def test_topics_mapping_matches_listed_names_only():
    m = mapping()
    assert m.matches("events") and not m.matches("events2") and not m.matches("xevents")
    assert m.subscription() == ["events"]
    assert m.label == "mappings[0] (topics events)"


def test_single_topic_string_is_accepted():
    problems = Problems()
    m = compile_mapping({"topics": "solo", "event": {"name": "n", "userId": "u"}}, 0, problems, False)
    assert problems.lines == [] and m.subscription() == ["solo"]


def test_pattern_mapping_matches_by_regex():
    problems = Problems()
    m = compile_mapping({"pattern": "^app\\..+", "event": {"name": "n", "userId": "u"}}, 3, problems, True)
    assert m.matches("app.ios") and m.matches("app.android.v2")
    assert not m.matches("app") and not m.matches("web.app.x")
    assert m.subscription() == ["^app\\..+"]
    assert m.label == "mappings[3] (pattern ^app\\..+)"
    assert m.location_enrichment is True


# -- the event ------------------------------------------------------------------------------


def test_full_event():
    event = build(
        SPEC,
        {"name": "signup", "uid": "u-1", "aid": "a-1", "ts": 1_700_000_000, "props": {"plan": "pro", "seats": [1, 2]}},
    )
    assert event == {
        "name": "signup",
        "userId": "u-1",
        "anonymousId": "a-1",
        "timestamp": 1_700_000_000_000,
        "properties": {"plan": "pro", "seats": [1, 2]},
    }


def test_only_anonymous_id():
    event = build(SPEC, {"name": "n", "aid": "a-1"})
    assert "userId" not in event and event["anonymousId"] == "a-1"


def test_only_user_id_when_anonymous_id_is_a_placeholder():
    event = build(SPEC, {"name": "n", "uid": "u", "aid": "undefined"})
    assert event["userId"] == "u" and "anonymousId" not in event


@pytest.mark.parametrize(
    "raw,text", [(42, "42"), (42.0, "42"), (0, "0"), (4.5, "4.5"), (12345678901234567890, "12345678901234567890")]
)
def test_numeric_ids_become_strings(raw, text):
    event = build(SPEC, {"name": "n", "uid": raw, "aid": raw})
    assert event["userId"] == text and event["anonymousId"] == text


@pytest.mark.parametrize(
    "raw,found", [(True, "boolean true"), (False, "boolean false"), ({"id": 1}, "an object"), ([1], "an array")]
)
def test_boolean_and_object_ids_are_invalid(raw, found):
    reason = invalid(SPEC, {"name": "n", "uid": raw})
    assert reason == f"userId: expected a string or a number from 'uid', found {found}"


def test_bad_anonymous_id_is_invalid_even_with_user_id():
    reason = invalid(SPEC, {"name": "n", "uid": "u", "aid": {"x": 1}})
    assert reason.startswith("anonymousId: expected a string or a number from 'aid'")


@pytest.mark.parametrize(
    "value",
    [
        {"name": "n"},
        {"name": "n", "uid": None, "aid": ""},
        {"name": "n", "uid": "null", "aid": "undefined"},
        {"name": "n", "uid": "  "},
    ],
)
def test_neither_id_is_invalid(value):
    assert invalid(SPEC, value) == "no userId or anonymousId: nothing found for userId ('uid') and anonymousId ('aid')"


def test_neither_id_reason_says_not_mapped():
    reason = invalid({"name": "name", "userId": "uid"}, {"name": "n"})
    assert reason == "no userId or anonymousId: nothing found for userId ('uid') and anonymousId (not mapped)"


@pytest.mark.parametrize(
    "value",
    [
        {"uid": "u"},
        {"name": "", "uid": "u"},
        {"name": None, "uid": "u"},
        {"name": "null", "uid": "u"},
        {"name": "undefined", "uid": "u"},
    ],
)
def test_missing_name_is_invalid(value):
    assert invalid(SPEC, value) == "name: no value found for 'name'"


@pytest.mark.parametrize("name", ["page view", "page\tview", " lead", "end\n"])
def test_name_with_white_space_is_invalid(name):
    reason = invalid(SPEC, {"name": name, "uid": "u"})
    assert reason == f"name: {name!r} contains white space, which UserFlux event names do not support"


@pytest.mark.parametrize("name,found", [({"a": 1}, "an object"), (True, "boolean true"), ([1], "an array")])
def test_name_of_wrong_type_is_invalid(name, found):
    assert invalid(SPEC, {"name": name, "uid": "u"}) == f"name: expected a string from 'name', found {found}"


def test_numeric_name_becomes_text():
    assert build(SPEC, {"name": 7.0, "uid": "u"})["name"] == "7"


def test_template_name_and_default():
    spec = {"name": {"template": "{type}_{action}", "default": "unknown"}, "userId": "uid"}
    assert build(spec, {"type": "track", "action": "tap", "uid": 1})["name"] == "track_tap"
    assert build(spec, {"type": "track", "uid": 1})["name"] == "unknown"


def test_template_name_with_a_hole_and_no_default_is_invalid():
    reason = invalid({"name": {"template": "{type}_{action}"}, "userId": "uid"}, {"type": "track", "uid": 1})
    assert reason == "name: no value found for the template '{type}_{action}' (nothing at action)"


def test_the_reason_names_every_hole_of_a_template():
    reason = invalid({"name": {"template": "{type}_{action}"}, "userId": "uid"}, {"uid": 1, "action": ""})
    assert reason.endswith("(nothing at type, action)")


def test_constant_name_and_default_id():
    spec = {"name": {"value": "heartbeat"}, "userId": {"path": "uid", "default": "system"}}
    assert build(spec, {}) == {"name": "heartbeat", "userId": "system", "timestamp": KAFKA_MS, "properties": {}}


def test_ids_from_key_and_header_fallback():
    spec = {"name": "name", "userId": ["user.id", "@key"], "anonymousId": "@headers.device-id"}
    msg = kafka_message(key=b"k-7", headers=[("device-id", b"d-1"), ("device-id", b"d-2")])
    event = build(spec, {"name": "n", "user": {"id": None}}, msg)
    assert event["userId"] == "k-7" and event["anonymousId"] == "d-2"
    event = build(spec, {"name": "n", "user": {"id": 5}}, msg)
    assert event["userId"] == "5"


def test_binary_key_is_absent_so_the_message_is_invalid():
    spec = {"name": "name", "userId": "@key"}
    reason = invalid(spec, {"name": "n"}, kafka_message(key=b"\xff\xfe"))
    assert reason == "no userId or anonymousId: nothing found for userId ('@key') and anonymousId (not mapped)"


# -- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts,ms",
    [
        (1_700_000_000, 1_700_000_000_000),
        (1_700_000_000_123, 1_700_000_000_123),
        (1_700_000_000_123_456, 1_700_000_000_123),
        (1_700_000_000_123_456_789, 1_700_000_000_123),
        ("1700000000123", 1_700_000_000_123),
        ("2023-11-14T22:13:20.123Z", 1_700_000_000_123),
        ("2023-11-14T23:13:20.123+01:00", 1_700_000_000_123),
        ("2023-11-14T22:13:20.123", 1_700_000_000_123),
    ],
)
def test_timestamp_units(ts, ms):
    assert build(SPEC, {"name": "n", "uid": "u", "ts": ts})["timestamp"] == ms


@pytest.mark.parametrize(
    "value", [{"name": "n", "uid": "u"}, {"name": "n", "uid": "u", "ts": None}, {"name": "n", "uid": "u", "ts": ""}]
)
def test_no_timestamp_uses_kafka_timestamp(value):
    assert build(SPEC, value)["timestamp"] == KAFKA_MS


def test_unmapped_timestamp_uses_kafka_timestamp():
    assert build({"name": "name", "userId": "uid"}, {"name": "n", "uid": "u"})["timestamp"] == KAFKA_MS


def test_timestamp_from_metadata():
    spec = {"name": "name", "userId": "uid", "timestamp": "@timestamp"}
    log_append_time = kafka_message(timestamp=(2, 1_234_567_890_123))
    assert build(spec, {"name": "n", "uid": "u"}, log_append_time)["timestamp"] == 1_234_567_890_123


def test_no_timestamp_anywhere_uses_now():
    before = int(time.time() * 1000)
    ts = build(SPEC, {"name": "n", "uid": "u"}, kafka_message(timestamp=(0, -1)))["timestamp"]
    assert before <= ts <= int(time.time() * 1000) + 1


@pytest.mark.parametrize(
    "ts,why",
    [
        ("garbage", "'garbage' is neither epoch seconds/milliseconds nor an ISO-8601 time"),
        (True, "expected a number or an ISO-8601 string, found boolean true"),
        (-5, "-5 is before 1970"),
    ],
)
def test_garbage_timestamp_is_invalid(ts, why):
    assert invalid(SPEC, {"name": "n", "uid": "u", "ts": ts}) == f"timestamp: from 'ts': {why}"


@pytest.mark.parametrize("kafka_ms", [0, 5, 10**15])
def test_an_implausible_kafka_timestamp_is_invalid_not_sent(kafka_ms):
    reason = invalid(SPEC, {"name": "n", "uid": "u"}, kafka_message(timestamp=(1, kafka_ms)))
    assert reason.startswith(f"timestamp: the Kafka message's own timestamp: {kafka_ms} is ")


def test_a_reason_quoting_a_huge_value_stays_short():
    reason = invalid(SPEC, {"name": "a b" * 500_000, "uid": "u"})
    assert reason.startswith("name: 'a ba ba b") and "contains white space" in reason
    assert len(reason) < 200


def test_huge_timestamp_is_invalid_not_a_crash():
    reason = invalid(SPEC, {"name": "n", "uid": "u", "ts": 10**40})
    assert reason.startswith("timestamp: from 'ts': ") and "too large" in reason


# -- properties -----------------------------------------------------------------------------


def test_properties_from_a_path_are_a_copy():
    value = {"name": "n", "uid": "u", "props": {"a": 1}}
    event = build(SPEC, value)
    assert event["properties"] == {"a": 1}
    event["properties"]["b"] = 2
    assert value["props"] == {"a": 1}


@pytest.mark.parametrize("props", [None, "__missing__"])
def test_absent_properties_are_empty(props):
    value = {"name": "n", "uid": "u"}
    if props != "__missing__":
        value["props"] = props
    assert build(SPEC, value)["properties"] == {}


@pytest.mark.parametrize(
    "props,found", [([1, 2], "an array"), ("text", "string 'text'"), (5, "number 5"), (True, "boolean true")]
)
def test_non_object_properties_are_invalid(props, found):
    reason = invalid(SPEC, {"name": "n", "uid": "u", "props": props})
    assert reason == f"properties: expected an object from 'props', found {found}"


def test_properties_not_mapped_are_empty():
    assert build({"name": "name", "userId": "uid"}, {"name": "n", "uid": "u", "x": 1})["properties"] == {}


def test_properties_from_whole_value_with_exclude_and_set():
    spec = {
        "name": "name",
        "userId": "uid",
        "properties": {
            "from": ".",
            "exclude": ["name", "uid", "ctx.secret", "ctx.deep.z", "nope.x", "arr.0", "a\\.b"],
            "set": {"source": {"value": "mobile"}, "topic": "@topic", "gone": "missing.path", "nul": "n"},
        },
    }
    value = {
        "name": "n",
        "uid": "u",
        "ctx": {"secret": 1, "keep": 2, "deep": {"z": 1, "w": 2}},
        "arr": [{"x": 1}],
        "a.b": 3,
        "a": {"b": 4},
        "n": None,
    }
    original = copy.deepcopy(value)
    event = build(spec, value)
    assert event["properties"] == {
        "ctx": {"keep": 2, "deep": {"w": 2}},
        "arr": [{"x": 1}],
        "a": {"b": 4},
        "n": None,
        "source": "mobile",
        "topic": "events",
        "nul": None,
    }
    assert value == original  # dotted exclude must not change the message value


def test_include_picks_top_level_keys_and_exclude_still_applies():
    spec = {
        "name": "name",
        "userId": "uid",
        "properties": {"from": "props", "include": ["a", "b", "absent"], "exclude": ["b.secret"]},
    }
    value = {"name": "n", "uid": "u", "props": {"a": 1, "b": {"secret": 1, "ok": 2}, "c": 3}}
    original = copy.deepcopy(value)
    assert build(spec, value)["properties"] == {"a": 1, "b": {"ok": 2}}
    assert value == original


def test_set_overrides_copied_keys_and_takes_templates():
    spec = {
        "name": "name",
        "userId": "uid",
        "properties": {"from": "props", "set": {"a": {"template": "{name}-{uid}"}, "k": "@key"}},
    }
    event = build(spec, {"name": "n", "uid": 9, "props": {"a": "old"}}, kafka_message(key=b"kk"))
    assert event["properties"] == {"a": "n-9", "k": "kk"}


def test_set_without_from():
    spec = {"name": "name", "userId": "uid", "properties": {"set": {"plan": "user.plan"}}}
    assert build(spec, {"name": "n", "uid": 1, "user": {"plan": "pro"}})["properties"] == {"plan": "pro"}


def test_properties_from_first_present_list():
    spec = {"name": "name", "userId": "uid", "properties": {"from": ["p1", "p2"]}}
    assert build(spec, {"name": "n", "uid": 1, "p2": {"z": 1}})["properties"] == {"z": 1}


def test_properties_from_non_object_is_invalid():
    spec = {"name": "name", "userId": "uid", "properties": {"from": "."}}
    with pytest.raises(InvalidMessage) as info:
        mapping(spec).builder.properties.build([1, 2], MSG)
    assert info.value.reason == "properties: expected an object from '.', found an array"


# -- where ----------------------------------------------------------------------------------


def keeps(where, value, message=MSG) -> bool:
    m = mapping(where=where)
    return apply_mapping(m, {"name": "n", "uid": "u", **value}, message) is not None


def test_where_in():
    where = {"path": "type", "in": ["track", "screen"]}
    assert keeps(where, {"type": "track"}) and keeps(where, {"type": "screen"})
    assert not keeps(where, {"type": "page"})
    assert not keeps(where, {})
    assert not keeps(where, {"type": None})


def test_where_not_in():
    where = {"path": "type", "not_in": ["debug"]}
    assert not keeps(where, {"type": "debug"})
    assert keeps(where, {"type": "track"}) and keeps(where, {})


def test_where_exists():
    assert keeps({"path": "x", "exists": True}, {"x": 0})
    assert keeps({"path": "x", "exists": True}, {"x": False})
    assert not keeps({"path": "x", "exists": True}, {})
    assert not keeps({"path": "x", "exists": True}, {"x": None})
    assert keeps({"path": "x", "exists": False}, {})
    assert not keeps({"path": "x", "exists": False}, {"x": "here"})


def test_where_compares_json_values_exactly():
    assert keeps({"path": "v", "in": [1]}, {"v": 1}) and keeps({"path": "v", "in": [1]}, {"v": 1.0})
    assert not keeps({"path": "v", "in": [1]}, {"v": True})
    assert not keeps({"path": "v", "in": [True]}, {"v": 1})
    assert not keeps({"path": "v", "in": [0]}, {"v": False})
    assert not keeps({"path": "v", "in": ["1"]}, {"v": 1})
    assert keeps({"path": "v", "in": [[1, 2], {"a": 1}]}, {"v": {"a": 1}})
    assert keeps({"path": "v", "not_in": [0]}, {"v": False})


@pytest.mark.parametrize(
    "where",
    [
        {"path": "v", "in": ["track", "page"]},
        {"path": "v", "not_in": ["track", "page"]},
        {"path": "v", "in": [1, "1", None]},
        {"path": "v", "not_in": [True, [1], {"a": 1}]},
        {"path": "v", "exists": True},
        {"path": "v", "exists": False},
    ],
)
def test_the_compiled_where_keeps_exactly_what_skip_reason_lets_through(where):
    m = mapping(where=where)
    for found in ("track", "page", "Track", "", " ", "1", 1, 1.0, 0, True, False, None, [1], ["track"], {"a": 1}, {}):
        value = {"name": "n", "uid": "u", "v": found}
        assert m.where.keeps(value, MSG) == (m.where.skip_reason(value, MSG) is None), (where, found)
    value = {"name": "n", "uid": "u"}  # nothing at the path
    assert m.where.keeps(value, MSG) == (m.where.skip_reason(value, MSG) is None), where


def test_where_list_of_conditions_all_must_hold():
    where = [{"path": "type", "in": ["track"]}, {"path": "@headers.env", "not_in": ["test"]}]
    assert keeps(where, {"type": "track"}, kafka_message(headers=[("env", b"prod")]))
    assert keeps(where, {"type": "track"}, kafka_message(headers=None))
    assert not keeps(where, {"type": "track"}, kafka_message(headers=[("env", b"test")]))
    assert not keeps(where, {"type": "page"}, kafka_message(headers=[("env", b"prod")]))


def test_where_skip_reasons_and_description():
    m = mapping(
        where=[{"path": "type", "in": ["track"]}, {"path": "x", "exists": True}, {"path": "e", "not_in": ["t"]}]
    )
    assert m.where.describe() == "type in [track] and x exists and e not in [t]"
    assert m.where.skip_reason({"type": "page"}, MSG) == "where: type is string 'page', not one of [track]"
    assert m.where.skip_reason({}, MSG) == "where: type is missing, not one of [track]"
    assert m.where.skip_reason({"type": "track"}, MSG) == "where: x is missing"
    assert (
        m.where.skip_reason({"type": "track", "x": 1, "e": "t"}, MSG)
        == "where: e is string 't', one of the excluded [t]"
    )
    assert m.where.skip_reason({"type": "track", "x": 1}, MSG) is None


def test_where_filters_before_the_event_is_built():
    m = mapping(where={"path": "type", "in": ["track"]})
    assert apply_mapping(m, {"type": "page"}, MSG) is None  # no name, no id, but skipped, not invalid


def test_summary_describes_every_field():
    m = mapping(
        {
            "name": {"template": "{a}_{b}"},
            "userId": ["u", "@key"],
            "timestamp": "ts",
            "properties": {"from": ".", "exclude": ["u"], "set": {"s": {"value": 1}}},
        }
    )
    assert dict(m.builder.summary()) == {
        "name": "the template '{a}_{b}'",
        "userId": "any of 'u', '@key'",
        "anonymousId": "not mapped",
        "timestamp": "'ts', else the Kafka message's timestamp",
        "properties": "copied from '.'; without u; set s = the constant 1",
    }
