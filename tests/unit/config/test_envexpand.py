"""${VAR} / ${VAR:-default} / $${ expansion of parsed YAML string values."""

from __future__ import annotations

import pytest

from connector.config.envexpand import expand
from connector.validation import Problems


def run(tree, env):
    problems = Problems()
    return expand(tree, env, problems), problems.lines


def test_set_variable_is_substituted_inside_text():
    value, problems = run({"a": "host-${H}:9092"}, {"H": "kafka1"})
    assert value == {"a": "host-kafka1:9092"}
    assert problems == []


def test_default_used_when_unset():
    value, problems = run({"a": "${KAFKA:-localhost:9092}"}, {})
    assert value == {"a": "localhost:9092"}
    assert problems == []


def test_default_used_when_set_but_empty():
    value, _ = run("${X:-fallback}", {"X": ""})
    assert value == "fallback"


def test_default_not_used_when_set():
    value, _ = run("${X:-fallback}", {"X": "real"})
    assert value == "real"


def test_empty_default_is_allowed():
    value, problems = run("a${X:-}b", {})
    assert value == "ab"
    assert problems == []


def test_unset_variable_is_a_problem_naming_key_and_variable():
    value, problems = run({"userflux": {"api_key": "${USERFLUX_API_KEY}"}}, {})
    assert value == {"userflux": {"api_key": ""}}
    assert len(problems) == 1
    assert problems[0].startswith("userflux.api_key: ")
    assert "USERFLUX_API_KEY is not set" in problems[0]
    assert "${USERFLUX_API_KEY:-default}" in problems[0]


def test_set_but_empty_variable_without_default_is_empty_not_a_problem():
    value, problems = run("${X}", {"X": ""})
    assert value == ""
    assert problems == []


def test_double_dollar_is_a_literal_reference():
    value, problems = run("price $${AMOUNT} and ${CUR}", {"CUR": "EUR", "AMOUNT": "9"})
    assert value == "price ${AMOUNT} and EUR"
    assert problems == []


def test_dollar_without_brace_is_left_alone():
    value, problems = run("cost $5 or $X", {"X": "nope"})
    assert value == "cost $5 or $X"
    assert problems == []


@pytest.mark.parametrize("text", ["${}", "${1ABC}", "${A B}", "${A-B}"])
def test_invalid_reference_is_a_problem(text):
    _, problems = run({"k": text}, {"A": "x"})
    assert len(problems) == 1
    assert problems[0].startswith("k: ")
    assert "is not a valid reference" in problems[0]


def test_lists_and_nested_paths_are_named_with_indexes():
    value, problems = run({"m": [{"t": "ok"}, {"t": "${MISSING}"}]}, {})
    assert value["m"][0] == {"t": "ok"}
    assert problems and problems[0].startswith("m[1].t: ")


def test_non_strings_and_keys_are_untouched():
    tree = {"${K}": 5, "b": True, "c": None, "d": 1.5}
    value, problems = run(tree, {"K": "expanded"})
    assert value == tree
    assert problems == []


def test_value_from_environment_is_not_parsed_as_yaml():
    value, _ = run({"a": "${V}"}, {"V": "{b: 1}\nc: [2]"})
    assert value == {"a": "{b: 1}\nc: [2]"}


def test_every_unset_variable_is_reported():
    _, problems = run({"a": "${A}", "b": "${B}-${C}"}, {})
    assert len(problems) == 3
    assert [p.split(":")[0] for p in problems] == ["a", "b", "b"]


def test_a_default_may_itself_be_a_reference():
    assert run("${A:-${B}}", {"B": "b"}) == ("b", [])
    assert run("${A:-${B}}", {"A": "a", "B": "b"}) == ("a", [])
    assert run("x${A:-${B:-${C:-deep}}}y", {}) == ("xdeepy", [])
    assert run("${A:-pre-${B}-post}", {"B": "b"}) == ("pre-b-post", [])


def test_an_unused_default_does_not_need_its_variables():
    assert run("${A:-${UNSET}}", {"A": "a"}) == ("a", [])


def test_a_used_default_reports_its_unset_variable():
    value, problems = run({"k": "${A:-${UNSET}}"}, {})
    assert value == {"k": ""}
    assert len(problems) == 1 and "UNSET is not set" in problems[0]


def test_a_literal_inside_a_default_stays_literal():
    assert run("${A:-$${B}}", {"B": "no"}) == ("${B}", [])


@pytest.mark.parametrize("text", ["${A", "${A:-x", "${A:-${B}", "pre ${A:-${B:-c} post"])
def test_an_unclosed_reference_is_a_problem_not_left_as_text(text):
    value, problems = run({"k": text}, {"B": "b"})
    assert len(problems) == 1
    assert problems[0].startswith("k: ") and "is not closed" in problems[0]
    assert "${" not in value["k"] and "}" not in value["k"]


def test_a_closing_brace_outside_a_reference_is_text():
    assert run("a}b ${A}}", {"A": "x"}) == ("a}b x}", [])


def test_absurdly_deep_defaults_are_refused():
    text = "${A:-" * 20 + "x" + "}" * 20
    _, problems = run({"k": text}, {})
    assert len(problems) == 1 and "nest more than" in problems[0]


def test_an_unclosed_reference_inside_an_unused_default_is_still_a_problem():
    _, problems = run({"k": "${A:-${B"}, {"A": "a"})
    assert len(problems) == 1 and "is not closed" in problems[0]
