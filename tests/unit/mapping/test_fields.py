"""Field specs: references, first-present lists, templates, constants and defaults."""

from __future__ import annotations

import pytest

from connector.mapping.fields import blank_id, blank_value, compile_field, parse_template
from connector.mapping.paths import MISSING
from connector.validation import Problems
from tests.support.fakes import FakeMessage

MSG = FakeMessage(key=b"key-1", headers=[("device-id", b"dev-1")])


def compile_ok(spec, blank=blank_value):
    problems = Problems()
    extractor = compile_field(spec, "f", problems, blank)
    assert problems.lines == []
    assert extractor is not None
    return extractor


def compile_bad(spec, blank=blank_value) -> list[str]:
    problems = Problems()
    assert compile_field(spec, "f", problems, blank) is None
    assert problems.lines
    return problems.lines


@pytest.mark.parametrize(
    "value,blank",
    [
        (MISSING, True),
        (None, True),
        ("", True),
        ("   ", True),
        ("x", False),
        (0, False),
        (False, False),
        ("null", False),
        ([], False),
        ({}, False),
    ],
)
def test_blank_value(value, blank):
    assert blank_value(value) is blank


@pytest.mark.parametrize(
    "value,blank",
    [
        ("null", True),
        ("undefined", True),
        ("", True),
        (None, True),
        (MISSING, True),
        ("Null", False),
        ("nil", False),
        (0, False),
    ],
)
def test_blank_id(value, blank):
    assert blank_id(value) is blank


def test_reference():
    e = compile_ok("user.id")
    assert e({"user": {"id": "u1"}}, MSG) == "u1"
    assert e({}, MSG) is MISSING
    assert e.describe == "'user.id'"


def test_metadata_reference():
    assert compile_ok("@key")({}, MSG) == "key-1"
    assert compile_ok("@headers.device-id")({}, MSG) == "dev-1"


def test_first_present_skips_absent_candidates_for_ids():
    e = compile_ok(["a", "b", "c", "d", "e", "@key"], blank_id)
    assert e({"a": None, "b": "", "c": "null", "d": "undefined", "e": "found"}, MSG) == "found"
    assert e({}, MSG) == "key-1"
    assert e({"a": 0}, MSG) == 0  # zero is a value
    assert e.describe == "any of 'a', 'b', 'c', 'd', 'e', '@key'"


def test_first_present_for_non_ids_keeps_the_string_null():
    e = compile_ok(["a", "b"], blank_value)
    assert e({"a": "null", "b": "x"}, MSG) == "null"
    assert e({"a": "  ", "b": "x"}, MSG) == "x"


def test_first_present_all_absent_is_missing():
    e = compile_ok(["a", "@key"], blank_id)
    assert e({"a": None}, FakeMessage(key=None)) is MISSING


def test_single_item_list_is_the_item():
    e = compile_ok(["a"])
    assert e({"a": 1}, MSG) == 1
    assert e.describe == "'a'"


def test_list_may_mix_specs():
    e = compile_ok(["a", {"template": "{b}-{c}"}, {"value": "const"}], blank_id)
    assert e({"b": 1, "c": 2}, MSG) == "1-2"
    assert e({"b": 1}, MSG) == "const"


def test_path_spec_with_default():
    e = compile_ok({"path": "a", "default": "anon"}, blank_id)
    assert e({"a": "x"}, MSG) == "x"
    assert e({}, MSG) == "anon"
    assert e({"a": None}, MSG) == "anon"
    assert e({"a": "undefined"}, MSG) == "anon"
    assert e.describe == "'a' (default \"anon\")"


def test_path_spec_with_list_and_default():
    e = compile_ok({"path": ["a", "b"], "default": 7})
    assert e({"b": "bee"}, MSG) == "bee"
    assert e({}, MSG) == 7


def test_path_spec_without_default():
    e = compile_ok({"path": "a"})
    assert e({}, MSG) is MISSING


def test_constant():
    e = compile_ok({"value": "mobile"})
    assert e({}, MSG) == "mobile"
    assert e.describe == 'the constant "mobile"'
    assert compile_ok({"value": {"nested": [1]}})(None, MSG) == {"nested": [1]}


def test_constant_blank_uses_default():
    assert compile_ok({"value": "", "default": "d"})({}, MSG) == "d"


def test_template_renders_values():
    e = compile_ok({"template": "{type}_{action}"})
    assert e({"type": "track", "action": "click"}, MSG) == "track_click"
    assert e.describe == "the template '{type}_{action}'"


def test_template_renders_numbers_booleans_objects_and_metadata():
    e = compile_ok({"template": "{a}|{b}|{c}|{d}|{@topic}|{ e }"})
    assert (
        e({"a": 42.0, "b": 1.5, "c": True, "d": {"k": [1, "ü"]}, "e": "sp"}, MSG)
        == '42|1.5|true|{"k":[1,"ü"]}|events|sp'
    )


def test_template_escapes():
    e = compile_ok({"template": "{{literal}}_{a}_}}{{"})
    assert e({"a": "x"}, MSG) == "{literal}_x_}{"
    assert compile_ok({"template": "{{{a}}}"})({"a": "v"}, MSG) == "{v}"


def test_template_missing_placeholder_is_absent_so_default_applies():
    e = compile_ok({"template": "{type}_{action}"})
    assert e({"type": "track"}, MSG) is MISSING
    assert e({"type": "track", "action": ""}, MSG) is MISSING
    assert e({"type": "track", "action": None}, MSG) is MISSING
    d = compile_ok({"template": "{type}_{action}", "default": "unknown_event"})
    assert d({"type": "track"}, MSG) == "unknown_event"
    assert d({"type": "a", "action": "b"}, MSG) == "a_b"


@pytest.mark.parametrize(
    "text,parts",
    [
        ("{a}", [("ref", "a")]),
        ("x{a}y", [("text", "x"), ("ref", "a"), ("text", "y")]),
        ("{a}_x{{y}}", [("ref", "a"), ("text", "_x{y}")]),
        ("{ a.b }", [("ref", "a.b")]),
        ("plain", [("text", "plain")]),
    ],
)
def test_parse_template(text, parts):
    assert parse_template(text) == parts


@pytest.mark.parametrize(
    "text,match",
    [
        ("{a", "unclosed '{' at position 0"),
        ("x}", "unmatched '}' at position 1"),
    ],
)
def test_parse_template_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_template(text)


@pytest.mark.parametrize(
    "spec,expected",
    [
        (
            {"template": "constant"},
            "f.template: a template needs at least one {reference}; use {value: ...} for a constant",
        ),
        ({"template": "{a..b}"}, "f.template: a path has no empty segments (write 'a.b', not 'a..b', '.a' or 'a.')"),
        ({"template": "{}"}, "f.template: a path cannot be empty (use '.' for the whole value)"),
        ({"template": 5}, "f.template: expected a string like '{type}_{action}', found number 5"),
        ({"template": "{a"}, "f.template: unclosed '{' at position 0 (write '{{' for a literal brace)"),
        ({"path": "a", "value": 1}, "f: expected exactly one of path, template or value, found path, value"),
        ({"default": 1}, "f: expected exactly one of path, template or value, found keys default"),
        ({"path": {"value": 1}}, "f.path: expected a path or a list of paths, found an object"),
        ([], "f: expected at least one candidate, found an empty list"),
        (
            ["ok", "@nope"],
            "f[1]: unknown message metadata '@nope'; known: @key, @key.<path>, @topic, @partition, @offset, "
            "@timestamp, @headers.<name>",
        ),
        (
            5,
            "f: expected a path (e.g. 'user.id'), a list of paths, or a mapping with one of path/template/value, "
            "found number 5",
        ),
        (
            None,
            "f: expected a path (e.g. 'user.id'), a list of paths, or a mapping with one of path/template/value, "
            "found null",
        ),
    ],
)
def test_spec_errors(spec, expected):
    assert compile_bad(spec) == [expected]


def test_unknown_key_in_spec_suggests():
    problems = Problems()
    compile_field({"path": "a", "defualt": 1}, "f", problems)
    assert problems.lines == ["f.defualt: unknown key (did you mean 'default'?)"]


@pytest.mark.parametrize(
    "spec", [{"value": float("nan")}, {"value": {"a": [float("inf")]}}, {"path": "a", "default": float("-inf")}]
)
def test_a_constant_must_be_json_not_nan_or_infinity(spec):
    # YAML reads .nan and .inf as floats; UserFlux could not take them, and the encoder
    # would write them as null.
    [line] = compile_bad(spec)
    assert "NaN and infinity are not JSON" in line
