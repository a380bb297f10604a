"""Property-based tests of the map stage: whatever the message, ``map`` either builds an
event the UserFlux stand-in accepts, skips it on purpose, or says why not. Nothing else.

The values are generated JSON (of every type, with odd keys, huge numbers, deep nesting,
escapes that decode to lone surrogates) and raw bytes; keys, headers and Kafka
timestamps vary too. Every mapping feature is exercised by one of MAPPINGS.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config.model import LimitsSettings
from connector.errors import InvalidMessage
from connector.mapping.event import compile_mapping
from connector.mapping.mapper import MessageMapper
from connector.sink.request import encode_batch
from connector.validation import Problems
from tests.support.fakes import FakeMessage
from tests.support.userflux_standin import validate_event

SPECS = [
    {
        "topics": ["plain"],
        "event": {
            "name": "event",
            "userId": "user.id",
            "anonymousId": "anonymous_id",
            "timestamp": "sent_at",
            "properties": "properties",
        },
    },
    {
        "topics": ["whole"],
        "event": {
            "name": "name",
            "userId": "id",
            "timestamp": "ts",
            "properties": {"from": ".", "exclude": ["id", "a.b"]},
        },
    },
    {
        "topics": ["meta"],
        "where": {"path": "type", "not_in": ["debug"]},
        "event": {
            "name": {"template": "{type}_{action}"},
            "userId": ["user.id", "@key"],
            "anonymousId": "@headers.device-id",
            "timestamp": "@timestamp",
            "properties": {
                "from": ".",
                "include": ["a", "n", "list"],
                "set": {
                    "k": "@key",
                    "t": "@topic",
                    "o": "@offset",
                    "first": "list.0",
                    "label": {"template": "{a}/{n}"},
                },
            },
        },
    },
    {
        "topics": ["defaults"],
        "event": {
            "name": {"path": "name", "default": "fallback"},
            "anonymousId": {"path": ["a", "b", "c"], "default": "anon"},
            "properties": {"set": {"x": "x", "c": {"value": {"nested": [1]}}}},
        },
    },
    {
        "topics": ["filtered"],
        "where": [{"path": "keep", "in": [True, 1, "yes"]}, {"path": "id", "exists": True}],
        "event": {"name": {"value": "kept"}, "userId": "id"},
    },
]


def compile_all(specs):
    problems = Problems()
    mappings = [compile_mapping(spec, i, problems, False) for i, spec in enumerate(specs)]
    assert problems.lines == []
    return mappings


LIMITS = LimitsSettings(max_message_bytes=64 * 1024, max_nesting_depth=16)
MAPPER = MessageMapper(compile_all(SPECS), LIMITS)
TOPICS = [spec["topics"][0] for spec in SPECS]
FIELD_NAMES = [
    "event",
    "name",
    "type",
    "action",
    "id",
    "user",
    "anonymous_id",
    "sent_at",
    "ts",
    "properties",
    "a",
    "b",
    "c",
    "n",
    "x",
    "list",
    "keep",
    "0",
    "",
    " ",
    "null",
    "a.b",
    "ü",
    "\x00",
]

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, 1, -1, 10**11, 10**14 - 1, 10**14, 10**17, 10**20, 1_700_000_000, 1_700_000_000_123]),
    st.floats(allow_nan=False, allow_infinity=False),
)
texts = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            " ",
            "null",
            "undefined",
            "page view",
            "page_view",
            "2023-11-14T22:13:20Z",
            "1700000000",
            "1e999",
            "NaN",
            "\u2028",
            "\t",
            "x" * 300,
        ]
    ),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), children, max_size=6),
    ),
    max_leaves=30,
)
# Values shaped like the mappings expect, mostly well, so that many of them build events;
# any field may still be any JSON, or missing.
names = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:-]{0,15}", fullmatch=True), texts)
ids = st.one_of(st.text(min_size=1, max_size=12), st.integers(), st.floats(allow_nan=False, allow_infinity=False))
times = st.one_of(
    st.integers(min_value=10**9, max_value=4 * 10**9),
    st.integers(min_value=10**12, max_value=10**13),
    st.just("2023-11-14T22:13:20.123+01:00"),
    numbers,
    texts,
)


def maybe(good: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(good, good, good, json_values)


plausible = st.fixed_dictionaries(
    {
        "event": maybe(names),
        "name": maybe(names),
        "type": maybe(names),
        "action": maybe(names),
        "id": maybe(ids),
        "user": maybe(st.fixed_dictionaries({"id": maybe(ids)})),
    },
    optional={
        "anonymous_id": maybe(ids),
        "sent_at": maybe(times),
        "ts": maybe(times),
        "properties": maybe(st.dictionaries(texts, json_values)),
        "a": json_values,
        "n": json_values,
        "list": json_values,
        "keep": maybe(st.sampled_from([True, 1, "yes"])),
        "x": json_values,
        "": json_values,
        "a.b": json_values,
    },
)


def encoded(value) -> st.SearchStrategy[bytes]:
    return st.sampled_from(
        [
            json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"),
            json.dumps(value, ensure_ascii=True).encode("ascii"),
        ]
    )


def deeply_nested(depth: int) -> bytes:
    return b'{"n":' * depth + b"1" + b"}" * depth


raw_values = st.one_of(
    plausible.flatmap(encoded),
    plausible.flatmap(encoded),
    json_values.flatmap(encoded),
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b'"text"',
            b"1e400",
            b'{"name": NaN}',
            b'{"name": "\\ud800", "id": 1}',
            b"\xff\xfe",
            b'{"event": "x", "user": {"id": 1e400}}',
            deeply_nested(17),
            deeply_nested(3000),
            b"[" * 100_000,
            b"9" * 5000,
            b'"' + b"x" * 70_000 + b'"',
            None,
        ]
    ),
)
headers = st.lists(
    st.tuples(
        st.sampled_from(["device-id", "trace", ""]),
        st.one_of(st.none(), st.binary(max_size=12), st.text(max_size=12).map(str.encode)),
    ),
    max_size=3,
)
kafka_timestamps = st.tuples(
    st.sampled_from([0, 1, 2]),
    st.one_of(st.just(1_700_000_000_000), st.just(1_700_000_000_000), st.integers(min_value=-1, max_value=10**16)),
)
messages = st.builds(
    lambda topic, value, key, hdrs, ts, offset: FakeMessage(
        topic=topic, value=value, key=key, headers=hdrs, timestamp=ts, offset=offset
    ),
    st.sampled_from(TOPICS),
    raw_values,
    st.one_of(st.none(), st.binary(max_size=12)),
    headers,
    kafka_timestamps,
    st.integers(min_value=0, max_value=2**40),
)

STAGES = {"deserialize", "map"}


def check(message) -> None:
    try:
        _, event = MAPPER.map(message)
    except InvalidMessage as exc:
        assert exc.stage in STAGES
        assert exc.reason and len(exc.reason) <= InvalidMessage.MAX_REASON_CHARS + 40
        return
    if event is None:
        return  # skipped by where:
    body = encode_batch([event])  # what the sender posts; it must not fail
    sent = json.loads(body)["events"][0]
    assert sent == event  # exactly what was built: no number rounded, nothing turned into null
    assert validate_event(sent) is None, (validate_event(sent), sent)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_map_builds_an_acceptable_event_or_says_why_not(message):
    check(message)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TOPICS), plausible)
def test_plausible_values_map_or_fail_with_a_reason(topic, value):
    check(FakeMessage(topic=topic, value=json.dumps(value).encode()))


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=40))
def test_nesting_at_the_limit_is_mapped_and_beyond_it_refused(depth):
    message = FakeMessage(topic="whole", value=b'{"name": "n", "id": 1, "p": ' + deeply_nested(depth - 1) + b"}")
    try:
        MAPPER.map(message)
    except InvalidMessage as exc:
        assert depth > LIMITS.max_nesting_depth and "max_nesting_depth" in exc.reason
    else:
        assert depth <= LIMITS.max_nesting_depth


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values.flatmap(encoded))
def test_the_fast_decoder_reads_what_the_exact_one_reads(raw):
    # orjson does the ordinary work; the standard library is the reference it must match
    # (an integer beyond 64 bits must not come back as a rounded float).
    try:
        exact = json.loads(raw)
    except ValueError:
        return
    try:
        decoded = MAPPER.decode(raw)
    except InvalidMessage:
        return  # over a limit, or a lone surrogate: refused on purpose
    assert decoded == exact and type(decoded) is type(exact)
