"""The map stage: pick the mapping, decode the JSON value, build the event."""

from __future__ import annotations

import json

import pytest

from connector.config.model import LimitsSettings
from connector.errors import InvalidMessage
from connector.mapping.event import compile_mapping
from connector.mapping.mapper import MessageMapper, decode_value
from connector.validation import Problems
from tests.support.fakes import FakeMessage


def compile_all(raws):
    problems = Problems()
    mappings = [compile_mapping(raw, i, problems, False) for i, raw in enumerate(raws)]
    assert problems.lines == []
    return mappings


MAPPINGS = compile_all(
    [
        {"topics": ["app.special"], "event": {"name": {"value": "special"}, "userId": "u"}},
        {
            "pattern": "^app\\..+",
            "where": {"path": "type", "in": ["track"]},
            "event": {"name": {"value": "app"}, "userId": "u"},
        },
        {"pattern": "^app\\.ios$", "event": {"name": {"value": "never"}, "userId": "u"}},
        {"topics": ["web", "app.special"], "event": {"name": "e", "userId": "u"}},
    ]
)


def msg(topic, value):
    raw = value if isinstance(value, (bytes, type(None))) else json.dumps(value).encode()
    return FakeMessage(topic=topic, value=raw)


def test_first_match_wins():
    mapper = MessageMapper(MAPPINGS)
    used, event = mapper.map(msg("app.special", {"u": 1, "type": "track"}))
    assert used is MAPPINGS[0] and event["name"] == "special"
    used, event = mapper.map(msg("app.ios", {"u": 1, "type": "track"}))
    assert used is MAPPINGS[1] and event["name"] == "app"
    used, event = mapper.map(msg("web", {"u": 1, "e": "click"}))
    assert used is MAPPINGS[3] and event["name"] == "click"


def test_mapping_for_is_cached_and_none_for_unknown_topics():
    mapper = MessageMapper(MAPPINGS)
    assert mapper.mapping_for("app.x") is MAPPINGS[1]
    assert mapper.mapping_for("app.x") is MAPPINGS[1]
    assert mapper.mapping_for("other") is None
    assert "other" in mapper._by_topic


def test_where_skip_returns_mapping_and_none():
    used, event = MessageMapper(MAPPINGS).map(msg("app.ios", {"u": 1, "type": "page"}))
    assert used is MAPPINGS[1] and event is None


def test_unmatched_topic_is_invalid():
    with pytest.raises(InvalidMessage) as info:
        MessageMapper(MAPPINGS).map(msg("nomatch", {"u": 1}))
    assert info.value.stage == "map"
    assert info.value.reason == "no mapping matches topic 'nomatch'"


@pytest.mark.parametrize("raw", [b"not json", b'{"a": 1', b"\xff\xfe\x00garbage", b"", b"{'a': 1}"])
def test_not_json_is_a_deserialize_error(raw):
    with pytest.raises(InvalidMessage) as info:
        MessageMapper(MAPPINGS).map(msg("web", raw))
    assert info.value.stage == "deserialize"
    assert info.value.reason.startswith("the value is not JSON: ")


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b"[-Infinity]"])
def test_non_finite_numbers_are_not_json(raw):
    with pytest.raises(InvalidMessage) as info:
        decode_value(raw)
    assert info.value.stage == "deserialize"
    assert info.value.reason.startswith("the value is not JSON: ") and "is not a JSON value" in info.value.reason


def test_tombstone_is_a_deserialize_error():
    with pytest.raises(InvalidMessage) as info:
        MessageMapper(MAPPINGS).map(msg("web", None))
    assert info.value.stage == "deserialize"
    assert info.value.reason == "the message has no value (a tombstone)"


def test_mapping_failure_is_a_map_error():
    with pytest.raises(InvalidMessage) as info:
        MessageMapper(MAPPINGS).map(msg("web", {"e": "click"}))
    assert info.value.stage == "map"
    assert info.value.reason.startswith("no userId or anonymousId")


@pytest.mark.parametrize(
    "raw,value",
    [
        (b'{"a": [1, 2.5, "\\u00fc"]}', {"a": [1, 2.5, "ü"]}),
        ('{"a": 1}', {"a": 1}),
        ('{"a": "ü"}'.encode(), {"a": "ü"}),
        (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),  # a UTF-8 byte order mark
        (b"[1]", [1]),
        (b"1e-400", 0.0),
    ],
)
def test_decode_value(raw, value):
    assert decode_value(raw) == value


def test_non_object_value_makes_an_invalid_event_not_a_crash():
    with pytest.raises(InvalidMessage) as info:
        MessageMapper(MAPPINGS).map(msg("web", [1, 2]))
    assert info.value.reason == "name: no value found for 'e'"


def test_subscription_lists_topics_and_patterns_once_in_order():
    assert MessageMapper(MAPPINGS).subscription() == ["app.special", "^app\\..+", "^app\\.ios$", "web"]
    assert MessageMapper([]).subscription() == []


def test_a_value_nested_too_deeply_is_invalid_not_a_crash():
    with pytest.raises(InvalidMessage) as caught:
        decode_value(b"[" * 100_000)
    assert caught.value.stage == "deserialize"
    assert "more than limits.max_nesting_depth (64) deep" in caught.value.reason


def nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[]" + b"}" * (depth - 1)


@pytest.mark.parametrize("depth,ok", [(64, True), (65, False), (900, False)])
def test_nesting_is_limited_by_max_nesting_depth(depth, ok):
    raw = nested(depth)
    if ok:
        assert decode_value(raw) is not None
    else:
        with pytest.raises(InvalidMessage) as info:
            decode_value(raw)
        assert info.value.stage == "deserialize"
        assert info.value.reason == ("the value nests objects and arrays more than limits.max_nesting_depth (64) deep")


def test_many_flat_containers_are_not_deep():
    raw = json.dumps({"items": [{"sku": i} for i in range(1000)]}).encode()
    assert len(decode_value(raw, LimitsSettings(max_nesting_depth=3))["items"]) == 1000
    with pytest.raises(InvalidMessage):
        decode_value(raw, LimitsSettings(max_nesting_depth=2))


def test_a_value_over_max_message_bytes_is_invalid_before_decoding():
    limits = LimitsSettings(max_message_bytes=1024)
    assert decode_value(b'"' + b"x" * 1022 + b'"', limits) == "x" * 1022
    with pytest.raises(InvalidMessage) as info:
        decode_value(b"x" * 1025, limits)  # not JSON either: the size is checked first
    assert info.value.stage == "deserialize"
    assert info.value.reason == "the value is 1025 bytes, over limits.max_message_bytes (1024)"


def test_the_mapper_applies_its_limits():
    mapper = MessageMapper(MAPPINGS, LimitsSettings(max_message_bytes=1024))
    with pytest.raises(InvalidMessage, match="over limits.max_message_bytes"):
        mapper.map(msg("web", {"u": 1, "e": "x" * 2000}))


@pytest.mark.parametrize(
    "raw,found",
    [
        (b'{"a": 1e400}', "1e400 is too large for a JSON number"),
        (b"[-1E999]", "-1E999 is too large for a JSON number"),
        (b'{"a": "\\\\ud800"}', None),  # an escaped backslash: plain text, valid
        (b'{"a": "\\\\ud800 \\ud83d\\ude00"}', None),  # a proper surrogate pair is one character
        (b'{"a": "\\ud800"}', "a lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "a lone UTF-16 surrogate"),
        (b'["x\\uDBFFy"]', "a lone UTF-16 surrogate"),
        (b'{"a": "\xed\xa0\x80"}', "can't decode"),  # a surrogate encoded in UTF-8 is not UTF-8
        (b"1" * 5000, "a number has too many digits"),
    ],
)
def test_values_json_cannot_carry_are_refused_when_decoded(raw, found):
    if found is None:
        decode_value(raw)
        return
    with pytest.raises(InvalidMessage) as info:
        decode_value(raw)
    assert info.value.stage == "deserialize"
    assert found in info.value.reason, info.value.reason
