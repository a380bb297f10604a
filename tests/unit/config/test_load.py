"""Loading the configuration file: typed values, and every kind of error message."""

from __future__ import annotations

import pytest

from connector.config.load import is_loopback, is_secret_property
from connector.config.model import Secret
from connector.errors import ConfigError
from connector.startup import load_config, parse_config
from tests.support.examples import CONTRACT_EXAMPLE as EXAMPLE
from tests.support.fakes import FakeMessage, apply_mapping

API_KEY = "uf-write-key-0123456789abcdef"
ENV = {"USERFLUX_API_KEY": API_KEY}

MINIMAL = """
kafka: {bootstrap.servers: "b:9092", group.id: g}
userflux: {api_key: KEY_PLACEHOLDER}
on_invalid: skip
mappings:
  - topics: [t]
    event: {name: n, userId: u}
"""


def problems_of(text: str, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="conn.yaml", env=ENV if env is None else env)
    assert str(info.value).startswith("conn.yaml: invalid configuration")
    return info.value.problems


def one_problem(text: str, env=None) -> str:
    problems = problems_of(text, env)
    assert len(problems) == 1, problems
    return problems[0]


def edit(old: str, new: str, text: str = EXAMPLE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# -- the example ---------------------------------------------------------------------------


def test_example_parses_into_typed_values():
    s = parse_config(EXAMPLE, source="example.yaml", env=ENV)
    assert s.settings.source == "example.yaml"
    assert s.settings.kafka == {
        "bootstrap.servers": "localhost:9092",
        "group.id": "userflux-connector",
        "auto.offset.reset": "earliest",
    }
    uf = s.settings.userflux
    assert uf.base_url == "https://integration-api.userflux.co"
    assert isinstance(uf.api_key, Secret) and uf.api_key.reveal() == API_KEY
    assert API_KEY not in repr(uf) and API_KEY not in str(uf.api_key)
    assert uf.location_enrichment is False
    assert (uf.batch_size, uf.linger_ms, uf.max_in_flight) == (50, 200, 8)
    assert uf.request_timeout_s == 10.0 and isinstance(uf.request_timeout_s, float)
    assert (uf.retry.initial_backoff_ms, uf.retry.max_backoff_ms, uf.retry.max_attempts) == (250, 30000, 0)
    assert s.settings.on_invalid == "dead_letter"
    assert s.settings.dead_letter.topic == "userflux-connector-dlq" and s.settings.dead_letter.producer == {}
    assert (s.settings.metrics.enabled, s.settings.metrics.host, s.settings.metrics.port) == (True, "0.0.0.0", 9464)
    assert s.settings.secrets == (API_KEY,)


def test_example_mappings_are_compiled():
    s = parse_config(EXAMPLE, env=ENV)
    web, app = s.mappings
    assert web.topics == frozenset({"web-events"}) and web.pattern is None
    assert web.location_enrichment is False and web.where is None
    assert app.topics is None and app.pattern.pattern == r"^app\..+"
    assert app.location_enrichment is True
    assert app.matches("app.ios") and not app.matches("web-events") and not app.matches("app.")
    assert app.where.describe() == "type in [track, screen]"


def test_example_mappings_build_events():
    s = parse_config(EXAMPLE, env=ENV)
    web, app = s.mappings
    event = apply_mapping(
        web,
        {
            "event": "page_view",
            "user": {"id": 42},
            "anonymous_id": "a1",
            "sent_at": "2023-11-14T22:13:20Z",
            "properties": {"path": "/"},
        },
        FakeMessage(topic="web-events"),
    )
    assert event == {
        "name": "page_view",
        "userId": "42",
        "anonymousId": "a1",
        "timestamp": 1_700_000_000_000,
        "properties": {"path": "/"},
    }
    msg = FakeMessage(topic="app.ios", key=b"k9", headers=[("device-id", b"dev-1")], timestamp=(1, 1_600_000_000_123))
    event = apply_mapping(app, {"type": "track", "action": "tap", "user": {"name": "x"}, "screen": "home"}, msg)
    assert event == {
        "name": "track_tap",
        "userId": "k9",
        "anonymousId": "dev-1",
        "timestamp": 1_600_000_000_123,
        "properties": {"screen": "home", "source": "mobile", "topic": "app.ios"},
    }
    assert apply_mapping(app, {"type": "identify", "action": "x"}, msg) is None


def test_env_var_overrides_default_in_example():
    s = parse_config(EXAMPLE, env={**ENV, "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"})
    assert s.settings.kafka["bootstrap.servers"] == "k1:9092,k2:9092"


def test_defaults_when_sections_are_left_out():
    s = parse_config(MINIMAL, env={})
    assert s.settings.userflux.base_url == "https://integration-api.userflux.co"
    assert (s.settings.userflux.batch_size, s.settings.userflux.linger_ms, s.settings.userflux.max_in_flight) == (
        50,
        200,
        8,
    )
    assert s.settings.userflux.location_enrichment is False
    assert s.settings.dead_letter is None and s.settings.on_invalid == "skip"
    assert s.settings.metrics.port == 9464 and s.settings.pipeline.max_pending_messages == 10_000
    assert s.mappings[0].location_enrichment is False


def test_mapping_inherits_global_location_enrichment():
    s = parse_config(edit("{api_key: KEY_PLACEHOLDER}", "{api_key: k, location_enrichment: true}", MINIMAL), env={})
    assert s.mappings[0].location_enrichment is True


def test_strings_from_env_become_typed_values():
    text = edit(
        "{api_key: KEY_PLACEHOLDER}",
        "{api_key: k, batch_size: '${BS}', location_enrichment: '${LE}', request_timeout_s: '${TO}'}",
        MINIMAL,
    )
    s = parse_config(text, env={"BS": "20", "LE": "true", "TO": "2.5"})
    assert s.settings.userflux.batch_size == 20
    assert s.settings.userflux.location_enrichment is True
    assert s.settings.userflux.request_timeout_s == 2.5


def test_kafka_property_values_become_strings():
    text = edit(
        "group.id: g}",
        "group.id: g, enable.partition.eof: false, fetch.min.bytes: 10, bootstrap.servers: [a:1, b:2]}",
        MINIMAL,
    ).replace('bootstrap.servers: "b:9092", ', "")
    s = parse_config(text, env={})
    assert s.settings.kafka["enable.partition.eof"] == "false"
    assert s.settings.kafka["fetch.min.bytes"] == "10"
    assert s.settings.kafka["bootstrap.servers"] == "a:1,b:2"


def test_base_url_trailing_slash_is_dropped():
    s = parse_config(
        edit("{api_key: KEY_PLACEHOLDER}", "{api_key: k, base_url: 'http://127.0.0.1:8080/'}", MINIMAL), env={}
    )
    assert s.settings.userflux.base_url == "http://127.0.0.1:8080"


def test_yaml_merge_keys_are_accepted():
    text = (
        MINIMAL
        + """  - <<: *m
    topics: [t2]
"""
    )
    text = edit(
        "  - topics: [t]\n    event: {name: n, userId: u}",
        "  - &m\n    topics: [t]\n    event: {name: n, userId: u}",
        text,
    )
    s = parse_config(text, env={})
    assert [sorted(m.topics) for m in s.mappings] == [["t"], ["t2"]]


def test_load_config_reads_a_file_and_uses_given_env(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    s = load_config(str(path), env=ENV)
    assert s.settings.source == str(path) and s.settings.userflux.api_key.reveal() == API_KEY


def test_load_config_missing_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing), env={})
    assert str(missing) in str(info.value)
    assert "cannot read the configuration file" in str(info.value)
    assert info.value.exit_code == 2


# -- errors ------------------------------------------------------------------------------


def test_unknown_key_with_suggestion():
    problem = one_problem(edit("batch_size: 50", "batch_sise: 50"))
    assert problem == "userflux.batch_sise: unknown key (did you mean 'batch_size'?)"


def test_unknown_top_level_key_lists_known_keys():
    problem = one_problem(MINIMAL + "zzz: 1\n", env={})
    assert problem.startswith("zzz: unknown key (known keys: kafka, userflux,")
    assert "mappings" in problem


def test_unknown_key_in_nested_retry_and_mapping_sections():
    text = edit("max_backoff_ms: 30000}", "max_backof_ms: 30000}")
    text = edit("      timestamp: sent_at\n", "      timestmap: sent_at\n", text)
    problems = problems_of(text)
    assert "userflux.retry.max_backof_ms: unknown key (did you mean 'max_backoff_ms'?)" in problems
    assert "mappings[0].event.timestmap: unknown key (did you mean 'timestamp'?)" in problems


def test_wrong_type_names_key_expected_and_found():
    assert (
        one_problem(edit("batch_size: 50", "batch_size: lots"))
        == "userflux.batch_size: expected an integer from 1 to 50, found string 'lots'"
    )
    assert (
        one_problem(edit("location_enrichment: false", "location_enrichment: maybe"))
        == "userflux.location_enrichment: expected true or false, found string 'maybe'"
    )
    assert (
        one_problem(edit("retry: {initial_backoff_ms: 250, max_backoff_ms: 30000}", "retry: [1, 2]"))
        == "userflux.retry: expected a mapping, found an array"
    )


def test_null_value_is_reported_as_null():
    assert (
        one_problem(edit("batch_size: 50", "batch_size:"))
        == "userflux.batch_size: expected an integer from 1 to 50, found null"
    )


@pytest.mark.parametrize(
    "old,new,key",
    [
        ("base_url: https://integration-api.userflux.co", "base_url:", "userflux.base_url"),
        ("dead_letter: {topic: userflux-connector-dlq}", "dead_letter: {topic: }", "dead_letter.topic"),
        ('pattern: "^app\\\\..+"', "pattern:", "mappings[1].pattern"),
        ("where: {path: type,", "where: {path: ,", "mappings[1].where.path"),
    ],
)
def test_empty_string_settings_are_not_silently_accepted(old, new, key):
    assert one_problem(edit(old, new)) == f"{key}: expected a non-empty string, found null"


def test_out_of_range():
    assert (
        one_problem(edit("batch_size: 50", "batch_size: 51"))
        == "userflux.batch_size: expected an integer from 1 to 50, found number 51"
    )
    assert (
        one_problem(edit("metrics: {port: 9464}", "metrics: {port: 70000}"))
        == "metrics.port: expected an integer from 0 to 65535, found number 70000"
    )
    assert (
        one_problem(edit("request_timeout_s: 10", "request_timeout_s: 0"))
        == "userflux.request_timeout_s: expected a number from 0.1 to 600, found number 0"
    )


def test_initial_backoff_above_max_backoff():
    problem = one_problem(edit("{initial_backoff_ms: 250,", "{initial_backoff_ms: 60000,"))
    assert problem == "userflux.retry: initial_backoff_ms (60000) is above max_backoff_ms (30000)"


def test_bad_choice():
    assert (
        one_problem(edit("on_invalid: dead_letter", "on_invalid: drop"))
        == "on_invalid: expected one of dead_letter, skip, stop, found string 'drop'"
    )


def test_missing_required_sections_and_keys():
    problems = problems_of("on_invalid: skip\nmetrics: {port: 1}\n", env={})
    assert "kafka: is required (at least bootstrap.servers and group.id)" in problems
    assert "userflux: is required" in problems
    assert "userflux.api_key: is required" in problems
    assert "mappings: is required" in problems


def test_missing_kafka_group_and_bootstrap():
    problems = problems_of(
        edit('{bootstrap.servers: "b:9092", group.id: g}', "{auto.offset.reset: earliest}", MINIMAL), env={}
    )
    assert problems == ["kafka.bootstrap.servers: is required", "kafka.group.id: is required"]


def test_misspelled_bootstrap_servers_is_named():
    problem = one_problem(edit("bootstrap.servers:", "bootstrap.server:"))
    assert problem.startswith("kafka.bootstrap.servers: is required")
    assert "'bootstrap.server'" in problem


def test_metadata_broker_list_replaces_bootstrap_servers():
    s = parse_config(edit('bootstrap.servers: "b:9092"', 'metadata.broker.list: "b:9092"', MINIMAL), env={})
    assert s.settings.kafka["metadata.broker.list"] == "b:9092"


def test_missing_required_mapping_fields():
    problems = problems_of(edit("event: {name: n, userId: u}", "event: {properties: p}", MINIMAL), env={})
    assert "mappings[0].event.name: is required" in problems
    assert "mappings[0].event: map at least one of userId or anonymousId: UserFlux needs one of them" in problems


def test_null_ids_count_as_unmapped():
    problem = one_problem(
        edit("event: {name: n, userId: u}", "event: {name: n, userId: null, anonymousId: ~}", MINIMAL), env={}
    )
    assert problem == "mappings[0].event: map at least one of userId or anonymousId: UserFlux needs one of them"


def test_unset_env_var_is_reported_once_for_the_key():
    problem = one_problem(EXAMPLE, env={})
    assert problem.startswith("userflux.api_key: environment variable USERFLUX_API_KEY is not set")


def test_unset_env_var_for_a_required_kafka_property_is_reported_once():
    text = edit("${KAFKA_BOOTSTRAP_SERVERS:-localhost:9092}", "${KAFKA_BOOTSTRAP_SERVERS}")
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith("kafka.bootstrap.servers: environment variable KAFKA_BOOTSTRAP_SERVERS is not set")


def test_env_var_set_to_empty_is_an_empty_api_key():
    assert (
        one_problem(EXAMPLE, env={"USERFLUX_API_KEY": ""})
        == "userflux.api_key: expected a non-empty string, found an empty one"
    )


def test_duplicate_yaml_key_with_line_number():
    text = edit("  group.id: userflux-connector\n", "  group.id: a\n  group.id: b\n")
    line = text.splitlines().index("  group.id: b") + 1
    assert one_problem(text) == f"line {line}, column 3: duplicate key 'group.id'"


def test_duplicate_key_inside_a_merge_is_still_caught():
    text = "a: &x {k: 1}\nb:\n  <<: *x\n  j: 1\n  j: 2\n"
    assert one_problem(text) == "line 5, column 3: duplicate key 'j'"


def test_yaml_syntax_error_with_line():
    text = edit("  linger_ms: 200\n", "  linger_ms: [200\n")
    problem = one_problem(text)
    assert problem.startswith("line ")
    line = int(problem.split()[1].rstrip(","))
    assert line > text.splitlines().index("  linger_ms: [200")  # where the parser noticed


def test_yaml_mapping_value_error_reports_exact_line():
    assert one_problem("kafka:\n  a: b: c\n") == "line 2, column 7: mapping values are not allowed here"


def test_yaml_tagged_value_that_cannot_be_built_is_a_config_error_without_the_value():
    problem = one_problem(edit("api_key: ${USERFLUX_API_KEY}", "api_key: !!int hunter2-secret"))
    assert problem == "line 8, column 12: the value cannot be read as int"
    assert "hunter2" not in problem


def test_unhashable_yaml_key_is_a_config_error():
    problem = one_problem("kafka:\n  ? [a, b]\n  : c\n")
    assert problem.startswith("line ") and "unhashable key" in problem


def test_empty_file_and_non_mapping_top_level():
    assert one_problem("") == "the file is empty; see config/ for examples"
    assert one_problem("- a\n- b\n") == "(top level): expected a mapping, found an array"


def test_enable_auto_commit_refused():
    problem = one_problem(edit("auto.offset.reset: earliest", "enable.auto.commit: true"))
    assert problem.startswith("kafka.enable.auto.commit: must not be set:")
    problem = one_problem(edit("auto.offset.reset: earliest", "enable.auto.offset.store: 'true'"))
    assert problem.startswith("kafka.enable.auto.offset.store: must not be set:")


def test_enable_auto_commit_false_is_tolerated():
    s = parse_config(edit("auto.offset.reset: earliest", "enable.auto.commit: false"), env=ENV)
    assert s.settings.kafka["enable.auto.commit"] == "false"


def test_dead_letter_required_for_on_invalid_dead_letter():
    text = edit("dead_letter: {topic: userflux-connector-dlq}\n", "")
    problem = one_problem(text)
    assert problem.startswith("dead_letter.topic: is required when on_invalid is dead_letter")
    # the default on_invalid is dead_letter too
    assert one_problem(edit("on_invalid: dead_letter\n", "", text)).startswith("dead_letter.topic: is required")
    # skip does not need it
    assert parse_config(edit("on_invalid: dead_letter", "on_invalid: skip", text), env=ENV).settings.dead_letter is None


def test_dead_letter_topic_must_be_a_topic_name():
    problem = one_problem(edit("topic: userflux-connector-dlq", "topic: 'dl q'"))
    assert problem == "dead_letter.topic: expected a Kafka topic name (letters, digits, '.', '_', '-'), found 'dl q'"


def test_dead_letter_topic_matching_a_pattern_is_refused():
    problem = one_problem(edit("topic: userflux-connector-dlq", "topic: app.dlq"))
    assert problem.startswith("dead_letter.topic: 'app.dlq' matches mappings[1] (pattern ^app\\..+)")
    assert "read its own dead letters" in problem


def test_dead_letter_topic_listed_in_topics_is_refused():
    problem = one_problem(edit("topic: userflux-connector-dlq", "topic: web-events"))
    assert problem.startswith("dead_letter.topic: 'web-events' matches mappings[0] (topics web-events)")


def test_dead_letter_producer_properties_are_kept():
    s = parse_config(
        edit(
            "dead_letter: {topic: userflux-connector-dlq}",
            "dead_letter: {topic: dlq, producer: {linger.ms: 5, sasl.password: dl-pass-123}}",
        ),
        env=ENV,
    )
    assert s.settings.dead_letter.producer == {"linger.ms": "5", "sasl.password": "dl-pass-123"}
    assert "dl-pass-123" in s.settings.secrets


def test_mapping_needs_exactly_one_of_topics_or_pattern():
    both = one_problem(edit("  - topics: [web-events]\n", "  - topics: [web-events]\n    pattern: '^x'\n"))
    assert both == "mappings[0]: expected exactly one of topics (a list of names) or pattern (a regex), found both"
    neither = one_problem(edit("  - topics: [web-events]\n    event:", "  - event:"))
    assert neither.endswith("found neither")


def test_pattern_must_be_anchored_and_valid():
    assert (
        one_problem(edit('pattern: "^app\\\\..+"', 'pattern: "app"'))
        == "mappings[1].pattern: a Kafka regex subscription must start with '^', found 'app' (did you mean '^app'?)"
    )
    assert one_problem(edit('pattern: "^app\\\\..+"', 'pattern: "^app("')).startswith(
        "mappings[1].pattern: not a valid regex:"
    )


def test_topic_that_looks_like_a_regex():
    assert (
        one_problem(edit("topics: [web-events]", "topics: ['^web']"))
        == "mappings[0].topics: '^web' looks like a regex; write it as pattern: instead"
    )


@pytest.mark.parametrize(
    "old,new,expected",
    [
        (
            "name: event\n",
            "name: 'a..b'\n",
            "mappings[0].event.name: a path has no empty segments (write 'a.b', not 'a..b', '.a' or 'a.')",
        ),
        (
            "name: event\n",
            "name: '@bogus'\n",
            "mappings[0].event.name: unknown message metadata '@bogus'; known: @key, @key.<path>, @topic, @partition, "
            "@offset, @timestamp, @headers.<name>",
        ),
        (
            '"{type}_{action}"',
            '"{type"',
            "mappings[1].event.name.template: unclosed '{' at position 0 (write '{{' for a literal brace)",
        ),
        (
            '"{type}_{action}"',
            '"constant"',
            "mappings[1].event.name.template: a template needs at least one {reference}; "
            "use {value: ...} for a constant",
        ),
        (
            "name: event\n",
            "name: {path: event, value: x}\n",
            "mappings[0].event.name: expected exactly one of path, template or value, found path, value",
        ),
        ("name: event\n", "name: []\n", "mappings[0].event.name: expected at least one candidate, found an empty list"),
        (
            "properties: properties",
            "properties: 5",
            "mappings[0].event.properties: expected a path, or a mapping with from/include/exclude/set, found number 5",
        ),
        (
            "where: {path: type, in: [track, screen]}",
            "where: {path: type, in: [], exists: true}",
            "mappings[1].where: expected exactly one of in, not_in or exists, found in, exists",
        ),
        (
            "where: {path: type, in: [track, screen]}",
            "where: {path: type, in: []}",
            "mappings[1].where.in: expected a non-empty list of values, found an array",
        ),
        (
            "where: {path: type, in: [track, screen]}",
            "where: {path: type, exists: maybe}",
            "mappings[1].where.exists: expected true or false, found string 'maybe'",
        ),
        (
            "exclude: [type, action, user]",
            "exclude: [type, 'a..b']",
            "mappings[1].event.properties.exclude: 'a..b': a path has no empty segments "
            "(write 'a.b', not 'a..b', '.a' or 'a.')",
        ),
    ],
)
def test_mapping_errors_name_the_key(old, new, expected):
    assert one_problem(edit(old, new)) == expected


def test_include_without_from():
    problem = one_problem(edit("properties: properties", "properties: {include: [a]}"))
    assert (
        problem == "mappings[0].event.properties: include/exclude narrow the object read by from:, but from: is missing"
    )


def test_all_problems_reported_together():
    text = edit("batch_size: 50", "batch_size: 0")
    text = edit("linger_ms: 200", "lingerms: 200", text)
    text = edit("auto.offset.reset: earliest", "enable.auto.commit: true", text)
    text = edit("name: event\n", "name: '@nope'\n", text)
    problems = problems_of(text, env={})
    keys = [p.split(": ")[0] for p in problems]
    assert set(keys) == {
        "kafka.enable.auto.commit",
        "userflux.api_key",
        "userflux.batch_size",
        "userflux.lingerms",
        "mappings[0].event.name",
    }
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.yaml", env={})
    assert str(info.value).startswith(f"c.yaml: invalid configuration ({len(problems)} problems):\n  - ")


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,secret",
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("sasl.oauthbearer.client.secret", True),
        ("ssl.key.pem", True),
        ("sasl.oauthbearer.config", True),
        ("sasl.username", False),
        ("group.id", False),
    ],
)
def test_secret_property_names(name, secret):
    assert is_secret_property(name) is secret


def test_sasl_password_is_never_in_errors():
    secret = "hunter2-sasl-secret"
    text = edit("auto.offset.reset: earliest", f"sasl.password: {{nested: {secret}}}")
    problem = one_problem(text)
    assert problem.startswith("kafka.sasl.password: expected a string, number or boolean")
    assert problem.endswith("found an object (value hidden)")
    assert secret not in problem


def test_sasl_password_is_collected_as_a_secret():
    s = parse_config(edit("auto.offset.reset: earliest", "sasl.password: pw-123456"), env=ENV)
    assert s.settings.kafka["sasl.password"] == "pw-123456"
    assert set(s.settings.secrets) == {API_KEY, "pw-123456"}


@pytest.mark.parametrize(
    "value,expected",
    [
        ("12345678987654321", "userflux.api_key: expected a string, found a number (value hidden)"),
        ("[sekrit-key-value]", "userflux.api_key: expected a string, found an array (value hidden)"),
        (
            "'Bearer sekrit-key-value'",
            "userflux.api_key: contains white space; expected the write key alone (without 'Bearer ')",
        ),
    ],
)
def test_api_key_value_is_never_in_errors(value, expected):
    problem = one_problem(edit("api_key: ${USERFLUX_API_KEY}", f"api_key: {value}"))
    assert problem == expected
    assert "sekrit" not in problem and "987654" not in problem


def test_api_key_from_env_is_not_in_other_errors():
    problems = problems_of(edit("batch_size: 50", f"batch_size: {API_KEY}"), env={"USERFLUX_API_KEY": "other-key-xyz"})
    text = "\n".join(problems)
    assert "batch_size" in text and "other-key-xyz" not in text


def test_config_error_exit_code():
    with pytest.raises(ConfigError) as info:
        parse_config("", env={})
    assert info.value.exit_code == 2


@pytest.mark.parametrize("section", ["userflux", "kafka", "dead_letter", "metrics", "pipeline"])
def test_a_section_written_as_a_plain_string_is_not_echoed(section):
    secret = "sekrit-section-value-42"
    lines = [
        line for line in MINIMAL.replace("KEY_PLACEHOLDER", API_KEY).splitlines() if not line.startswith(f"{section}:")
    ]
    problems = problems_of("\n".join([f"{section}: {secret}", *lines]))
    assert any(
        p.startswith(f"{section}: expected a mapping") and p.endswith("a string (value hidden)") for p in problems
    ), problems
    assert secret not in "\n".join(problems)


def minimal(extra: str = "") -> str:
    return MINIMAL.replace("KEY_PLACEHOLDER", API_KEY) + extra


def test_limits_defaults_and_values():
    from connector.config.model import LimitsSettings

    assert parse_config(minimal(), env=ENV).settings.limits == LimitsSettings(1_048_576, 64)
    limits = parse_config(
        minimal("limits: {max_message_bytes: 4096, max_nesting_depth: '${DEPTH}'}\n"), env={**ENV, "DEPTH": "10"}
    ).settings.limits
    assert limits == LimitsSettings(max_message_bytes=4096, max_nesting_depth=10)


@pytest.mark.parametrize(
    "entry,expected",
    [
        (
            "max_message_bytes: 10",
            "limits.max_message_bytes: expected an integer from 1024 to 104857600, found number 10",
        ),
        ("max_nesting_depth: 0", "limits.max_nesting_depth: expected an integer from 1 to 500, found number 0"),
        ("max_nesting_depth: 5000", "limits.max_nesting_depth: expected an integer from 1 to 500, found number 5000"),
        ("max_mesage_bytes: 10", "limits.max_mesage_bytes: unknown key (did you mean 'max_message_bytes'?)"),
    ],
)
def test_limits_are_validated(entry, expected):
    assert one_problem(minimal(f"limits: {{{entry}}}\n")) == expected


def with_userflux(entries: str) -> str:
    return minimal().replace(
        "userflux: {api_key: " + API_KEY + "}", "userflux: {api_key: " + API_KEY + ", " + entries + "}"
    )


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "https://integration-api.userflux.co"],
)
def test_plain_http_is_allowed_to_this_machine(url):
    assert parse_config(with_userflux(f"base_url: '{url}'"), env=ENV).settings.userflux.base_url == url


def test_plain_http_to_another_host_is_refused_unless_allowed():
    text = with_userflux("base_url: 'http://userflux-proxy.internal:8080'")
    assert one_problem(text) == (
        "userflux.base_url: plain http to userflux-proxy.internal would send the write key and the events "
        "unencrypted; use https, or set userflux.allow_insecure_http: true"
    )
    allowed = parse_config(text.replace("base_url:", "allow_insecure_http: true, base_url:"), env=ENV).settings
    assert allowed.userflux.base_url == "http://userflux-proxy.internal:8080" and allowed.userflux.allow_insecure_http


def test_credentials_in_the_base_url_are_refused_without_being_echoed():
    problem = one_problem(with_userflux("base_url: 'https://user:hunter2-pw@example.com'"))
    assert problem.startswith("userflux.base_url: expected a URL without user:password@")
    assert "hunter2" not in problem


def test_tls_files_are_read_at_start(tmp_path, certs):
    tls = parse_config(
        with_userflux(
            f"tls: {{ca_file: '{certs.ca}', client_cert_file: '{certs.client_cert}', "
            f"client_key_file: '{certs.client_key}'}}"
        ),
        env=ENV,
    ).settings.userflux.tls
    assert tls.ca_file == str(certs.ca) and tls.client_key_file == str(certs.client_key)
    problem = one_problem(with_userflux(f"tls: {{ca_file: '{tmp_path}/missing.pem'}}"))
    assert problem.startswith(f"userflux.tls.ca_file: cannot read a PEM CA bundle from '{tmp_path}/missing.pem'")
    assert (
        one_problem(with_userflux(f"tls: {{client_key_file: '{certs.client_key}'}}"))
        == "userflux.tls.client_key_file: is set without client_cert_file"
    )
    assert (
        one_problem(with_userflux("tls: {ca_fiel: x}")) == "userflux.tls.ca_fiel: unknown key (did you mean 'ca_file'?)"
    )


def test_a_secret_reaching_another_key_is_masked_in_its_error():
    text = edit("batch_size: 50", "batch_size: ${USERFLUX_API_KEY}")
    text = edit("auto.offset.reset: earliest", "auto.offset.reset: earliest\n  sasl.password: ${PW}", text)
    text = edit("linger_ms: 200", "linger_ms: ${PW}", text)
    problems = problems_of(text, env={"USERFLUX_API_KEY": API_KEY, "PW": "hunter2-kafka-pw"})
    joined = "\n".join(problems)
    assert "userflux.batch_size: expected an integer from 1 to 50, found string '***'" in joined
    assert "userflux.linger_ms:" in joined and "hunter2" not in joined and API_KEY not in joined


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("integration-api.userflux.co", False),
        ("localhost.example", False),
        ("0.0.0.0", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


# -- schema_registry and the formats ------------------------------------------------------

REGISTRY = MINIMAL + "schema_registry:\n  url: https://registry:8081\n"


def test_the_schema_registry_section_is_typed_and_its_secrets_masked():
    text = (
        MINIMAL.replace("    event:", "    value_format: protobuf\n    key_format: avro\n    event:")
        + "schema_registry:\n  url: 'https://a:8081, https://b:8081/'\n"
        "  basic_auth: {username: svc, password: sr-password-1}\n  request_timeout_s: 2\n"
        "  client: {cache.latest.ttl.sec: 30}\n"
    )
    settings = parse_config(text, env=ENV).settings
    registry = settings.schema_registry
    assert registry.urls == ("https://a:8081", "https://b:8081")
    assert (registry.username, registry.password) == ("svc", Secret("sr-password-1"))
    assert (registry.request_timeout_s, registry.client) == (2.0, {"cache.latest.ttl.sec": "30"})
    assert "sr-password-1" in settings.secrets and "sr-password-1" not in repr(settings)
    mapping = parse_config(text, env=ENV).mappings[0]
    assert (mapping.value_format, mapping.key_format) == ("protobuf", "avro")


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            "  url: ftp://r\n",
            "schema_registry.url: expected an http(s) URL like https://registry:8081, found 'ftp://r'",
        ),
        (
            "  url: https://u:p@r\n",
            "schema_registry.url: expected a URL without user:password@; use schema_registry.basic_auth",
        ),
        (
            "  client: {timeout: 3}\n",
            "schema_registry.client.timeout: is set by schema_registry.request_timeout_s; set it there",
        ),
        ("  basic_auth: {username: a}\n", "schema_registry.basic_auth.password: is required"),
        (
            "  bearer: {token: t}\n  basic_auth: {username: a, password: b}\n",
            "schema_registry: set basic_auth or bearer, not both",
        ),
        (
            "  initial_backoff_ms: 5000\n  max_backoff_ms: 10\n",
            "schema_registry: initial_backoff_ms (5000) is above max_backoff_ms (10)",
        ),
        ("  cache_sizes: 5\n", "schema_registry.cache_sizes: unknown key (did you mean 'cache_size'?)"),
        (
            "  tls: {ca_file: /nonexistent/ca.pem}\n",
            "schema_registry.tls.ca_file: cannot read a PEM CA bundle from '/nonexistent/ca.pem': "
            "No such file or directory",
        ),
    ],
)
def test_schema_registry_errors_name_the_key(extra, expected):
    assert (
        one_problem((REGISTRY + extra).replace("  url: https://registry:8081\n  url:", "  url:"), env=ENV) == expected
    )


def test_a_format_is_one_of_the_known_ones():
    problem = one_problem(REGISTRY.replace("    event:", "    value_format: avro2\n    event:"), env=ENV)
    assert (
        problem == "mappings[0].value_format: expected one of json, avro, protobuf, json_schema, found string 'avro2'"
    )
    problem = one_problem(REGISTRY + "key_format: binary\n", env=ENV)
    assert problem == "key_format: expected one of string, json, avro, protobuf, json_schema, found string 'binary'"
