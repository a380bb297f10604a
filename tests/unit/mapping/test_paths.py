"""References: dotted JSON paths and @metadata."""

from __future__ import annotations

import pytest

from connector.mapping.paths import MISSING, compile_ref, split_path
from connector.validation import type_name
from tests.support.fakes import FakeMessage

MSG = FakeMessage(topic="orders", partition=3, offset=41, timestamp=(1, 1_700_000_000_123))
VALUE = {
    "user": {"id": 42, "tags": ["a", "b"], "null": None},
    "items": [{"sku": "s1"}, {"sku": "s2", "dims": [[1, 2], [3, 4]]}],
    "a.b": "dotted-key",
    "a": {"b": "nested"},
    "zero": 0,
    "empty": "",
}


def get(ref, value=VALUE, message=MSG):
    return compile_ref(ref)(value, message)


@pytest.mark.parametrize(
    "ref,expected",
    [
        ("user", VALUE["user"]),
        ("user.id", 42),
        ("user.tags.1", "b"),
        ("items.0.sku", "s1"),
        ("items.1.dims.1.0", 3),
        ("a.b", "nested"),
        ("a\\.b", "dotted-key"),
        ("zero", 0),
        ("empty", ""),
        ("user.null", None),
    ],
)
def test_json_paths_find_values(ref, expected):
    assert get(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "nope",
        "user.nope",
        "user.id.deeper",
        "user.tags.2",
        "user.tags.x",
        "user.tags.-1",
        "items.5.sku",
        "items.1.dims.9.9",
        "zero.x",
        "user.null.x",
        "a\\.b.c",
    ],
)
def test_json_paths_find_nothing(ref):
    assert get(ref) is MISSING


def test_missing_is_falsy_and_prints():
    assert not MISSING
    assert repr(MISSING) == "MISSING"


def test_paths_on_non_object_values():
    assert get("0", [10, 20]) == 10
    assert get("0.x", [{"x": "y"}]) == "y"
    assert get("x", "a string") is MISSING
    assert get("x.y", None) is MISSING
    assert get("x.y.z", 5) is MISSING


def test_whole_value():
    assert get(".") is VALUE
    assert get(".", [1, 2]) == [1, 2]
    assert get(".", "text") == "text"


@pytest.mark.parametrize(
    "text,segments",
    [
        ("a", ["a"]),
        ("a.b.c", ["a", "b", "c"]),
        ("a\\.b", ["a.b"]),
        ("x.a\\.b.c", ["x", "a.b", "c"]),
        ("a\\b", ["a\\b"]),  # a backslash not before a dot is kept
    ],
)
def test_split_path(text, segments):
    assert split_path(text) == segments


@pytest.mark.parametrize("text", ["a..b", ".a", "a.", "a.b."])
def test_empty_segments_are_refused(text):
    with pytest.raises(ValueError, match="no empty segments"):
        split_path(text)
    with pytest.raises(ValueError, match="no empty segments"):
        compile_ref(text)


def test_empty_and_non_string_refs_are_refused():
    with pytest.raises(ValueError, match="cannot be empty"):
        compile_ref("")
    with pytest.raises(ValueError, match="must be a string, found number"):
        compile_ref(5)


def test_metadata_topic_partition_offset_timestamp():
    assert get("@topic") == "orders"
    assert get("@partition") == 3
    assert get("@offset") == 41
    assert get("@timestamp") == 1_700_000_000_123


@pytest.mark.parametrize("ts", [(0, 1_700_000_000_000), (1, -1), (1, None)])
def test_timestamp_not_available_is_missing(ts):
    assert get("@timestamp", message=FakeMessage(timestamp=ts)) is MISSING


def test_log_append_time_is_used():
    assert get("@timestamp", message=FakeMessage(timestamp=(2, 5))) == 5


def test_key_is_decoded_utf8():
    assert get("@key", message=FakeMessage(key="ü-1".encode())) == "ü-1"
    assert get("@key", message=FakeMessage(key="already-str")) == "already-str"


def test_missing_or_binary_key_is_absent():
    assert get("@key", message=FakeMessage(key=None)) is MISSING
    assert get("@key", message=FakeMessage(key=b"\xff\xfe\x00")) is MISSING


def test_headers_last_wins():
    msg = FakeMessage(headers=[("device-id", b"first"), ("other", b"x"), ("device-id", b"last")])
    assert get("@headers.device-id", message=msg) == "last"
    assert get("@headers.other", message=msg) == "x"


def test_headers_absent_binary_or_null():
    msg = FakeMessage(headers=[("bin", b"\xff\xfe"), ("null", None), ("text", b"ok")])
    assert get("@headers.bin", message=msg) is MISSING
    assert get("@headers.null", message=msg) is MISSING
    assert get("@headers.nope", message=msg) is MISSING
    assert get("@headers.text", message=msg) == "ok"
    assert get("@headers.any", message=FakeMessage(headers=None)) is MISSING


def test_last_header_binary_makes_it_absent_even_after_a_text_one():
    msg = FakeMessage(headers=[("h", b"text"), ("h", b"\xff")])
    assert get("@headers.h", message=msg) is MISSING


def test_header_names_are_case_sensitive_and_may_contain_dots():
    msg = FakeMessage(headers=[("X.Trace", b"t1")])
    assert get("@headers.X.Trace", message=msg) == "t1"
    assert get("@headers.x.trace", message=msg) is MISSING


@pytest.mark.parametrize(
    "text,match",
    [
        ("@", "unknown message metadata '@'"),
        ("@value", "unknown message metadata '@value'"),
        (
            "@Key",
            "unknown message metadata '@Key'; known: @key, @key.<path>, @topic, @partition, @offset, @timestamp, "
            "@headers.<name>",
        ),
        ("@headers.", "needs a header name"),
        ("@headers", "unknown message metadata"),
    ],
)
def test_bad_metadata_refs(text, match):
    with pytest.raises(ValueError) as info:
        compile_ref(text)
    assert match in str(info.value)


def test_metadata_ignores_the_value():
    assert get("@topic", value=None) == "orders"


@pytest.mark.parametrize(
    "value,name",
    [
        (MISSING, "nothing"),
        (None, "null"),
        (True, "boolean"),
        (1, "number"),
        (1.5, "number"),
        ("s", "string"),
        ([], "array"),
        ({}, "object"),
    ],
)
def test_type_name(value, name):
    assert type_name(value) == name
