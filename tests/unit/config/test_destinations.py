"""userflux.destinations, a mapping's destination, and the rate caps: what loads, and every error."""

from __future__ import annotations

import pytest

from connector.config.model import DEFAULT_DESTINATION
from connector.errors import ConfigError
from connector.startup import parse_config

WEB_KEY = "web-write-key-0123456789"
MOBILE_KEY = "mobile-write-key-0123456789"

TWO_PROJECTS = f"""
kafka: {{bootstrap.servers: "b:9092", group.id: g}}
userflux:
  api_key: {WEB_KEY}
  max_events_per_second: 500
  destinations:
    mobile:
      api_key: {MOBILE_KEY}
      max_requests_per_second: 2.5
on_invalid: skip
mappings:
  - topics: [web]
    event: {{name: n, userId: u}}
  - topics: [ios, android]
    destination: mobile
    event: {{name: n, userId: u}}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="conn.yaml", env={})
    return info.value.problems


def one_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def edit(old: str, new: str, text: str = TWO_PROJECTS) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_two_projects_load_with_their_keys_caps_and_mappings():
    startup = parse_config(TWO_PROJECTS, env={})
    uf = startup.settings.userflux
    default, mobile = uf.all_destinations
    assert (default.name, default.api_key.reveal(), default.base_url) == (
        DEFAULT_DESTINATION,
        WEB_KEY,
        "https://integration-api.userflux.co",
    )
    assert (default.max_events_per_second, default.max_requests_per_second) == (500.0, None)
    # The server's settings are the top-level ones; the caps are each project's own.
    assert (mobile.name, mobile.api_key.reveal(), mobile.base_url, mobile.tls) == (
        "mobile",
        MOBILE_KEY,
        uf.base_url,
        uf.tls,
    )
    assert (mobile.max_events_per_second, mobile.max_requests_per_second) == (None, 2.5)
    web, apps = startup.mappings
    assert (web.destination, web.batch_key) == (DEFAULT_DESTINATION, (DEFAULT_DESTINATION, False))
    assert (apps.destination, apps.batch_key) == ("mobile", ("mobile", False))
    assert set(startup.settings.secrets) == {WEB_KEY, MOBILE_KEY}
    assert MOBILE_KEY not in repr(startup.settings)


def test_a_destination_may_have_its_own_base_url_and_tls():
    text = edit(
        "      max_requests_per_second: 2.5\n",
        "      base_url: http://127.0.0.1:8080/\n      tls: {}\n",
    )
    mobile = parse_config(text, env={}).settings.userflux.destinations[0]
    assert mobile.base_url == "http://127.0.0.1:8080" and mobile.tls.ca_file is None


def test_without_a_top_level_key_every_mapping_names_a_destination():
    text = edit(f"  api_key: {WEB_KEY}\n", "")
    text = edit("  - topics: [web]\n", "  - topics: [web]\n    destination: mobile\n", text)
    startup = parse_config(text, env={})
    assert [d.name for d in startup.settings.userflux.all_destinations] == ["mobile"]
    assert startup.settings.userflux.default_destination is None


def test_a_mapping_without_a_destination_needs_the_top_level_key():
    problem = one_problem(edit(f"  api_key: {WEB_KEY}\n", ""))
    assert problem == (
        "mappings[0]: names no destination, and userflux.api_key is not set: set it, or give the "
        "mapping a destination (declared under userflux.destinations: mobile)"
    )


def test_without_destinations_the_top_level_key_is_required():
    text = edit("  destinations:\n    mobile:\n", "  other:\n    mobile:\n")
    assert "userflux.api_key: is required" in problems_of(edit(f"  api_key: {WEB_KEY}\n", "", text))


def test_a_mapping_naming_an_undeclared_destination_is_an_error_with_a_suggestion():
    assert one_problem(edit("destination: mobile", "destination: mobil")) == (
        "mappings[1].destination: no destination 'mobil' under userflux.destinations (did you mean 'mobile'?)"
    )
    assert one_problem(edit("destination: mobile", "destination: tv")) == (
        "mappings[1].destination: no destination 'tv' under userflux.destinations (declared: mobile)"
    )


def test_a_mapping_may_name_the_default_destination():
    startup = parse_config(edit("destination: mobile", "destination: default"), env={})
    assert startup.mappings[1].destination == DEFAULT_DESTINATION


def test_the_typo_is_reported_with_the_mappings_other_problems():
    problems = problems_of(edit("destination: mobile\n    event: {name: n, userId: u}", "destination: mobil\n"))
    assert any(p.startswith("mappings[1].destination: no destination 'mobil'") for p in problems)
    assert any(p.startswith("mappings[1].event: is required") for p in problems)


@pytest.mark.parametrize(
    "name, why",
    [
        ("Mobile", "a destination's name is lowercase letters, digits and '_', starting with a letter"),
        ("web-app", "a destination's name is lowercase letters, digits and '_', starting with a letter"),
        ("default", "'default' is the top-level userflux.api_key's destination; choose another name"),
    ],
)
def test_destination_names_are_checked(name, why):
    text = edit("    mobile:\n", f"    {name}:\n")
    problems = problems_of(text.replace("destination: mobile", "destination: default"))
    assert any(p.startswith(f"userflux.destinations.{name}: {why}") for p in problems), problems


def test_a_destination_needs_its_key_and_knows_only_its_own_settings():
    text = edit(f"      api_key: {MOBILE_KEY}\n", "      batch_size: 10\n")
    problems = problems_of(text)
    assert "userflux.destinations.mobile.api_key: is required" in problems
    assert any(p.startswith("userflux.destinations.mobile.batch_size: unknown key") for p in problems), problems


def test_a_destination_key_is_checked_and_never_quoted():
    problem = one_problem(edit(f"api_key: {MOBILE_KEY}", f"api_key: Bearer {MOBILE_KEY}"))
    assert problem == (
        "userflux.destinations.mobile.api_key: contains white space; expected the write key alone (without 'Bearer ')"
    )
    problem = one_problem(edit("max_requests_per_second: 2.5", f"max_requests_per_second: {MOBILE_KEY}"))
    assert MOBILE_KEY not in problem and "***" in problem


def test_a_destinations_base_url_is_checked_like_the_top_level_one():
    problem = one_problem(edit("      max_requests_per_second: 2.5\n", "      base_url: http://example.com\n"))
    assert problem.startswith("userflux.destinations.mobile.base_url: plain http to example.com would send")


@pytest.mark.parametrize("value", ["0", "-5", "2000000", "fast"])
def test_rate_caps_are_positive_numbers(value):
    problem = one_problem(edit("max_events_per_second: 500", f"max_events_per_second: {value}"))
    assert problem.startswith("userflux.max_events_per_second: expected a number from 0.01 to 1000000, found")


def test_a_destinations_own_tls_file_is_read_at_start(tmp_path):
    text = edit("      max_requests_per_second: 2.5\n", f"      tls: {{ca_file: {tmp_path}/missing.pem}}\n")
    problem = one_problem(text)
    assert problem.startswith("userflux.destinations.mobile.tls.ca_file: cannot read a PEM CA bundle")
