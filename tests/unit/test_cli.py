"""`check` and `map`, driven in-process through connector.cli.main."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from connector.cli import main
from tests.support.examples import CONTRACT_EXAMPLE as EXAMPLE

API_KEY = "uf-cli-test-key-0123456789"


@pytest.fixture(autouse=True)
def env_and_logging(monkeypatch):
    monkeypatch.setenv("USERFLUX_API_KEY", API_KEY)
    # Nothing listens on port 1: check never talks to a broker, and this keeps it so.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers  # main() installs its own stderr handler
    root.setLevel(level)


def write(tmp_path, text=EXAMPLE, old=None, new=None):
    if old is not None:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "connector.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def run_map(monkeypatch, capsys, config, topic, lines, *extra):
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    code = main(["map", "--config", config, "--topic", topic, *extra])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


# -- check ----------------------------------------------------------------------------------


def test_check_prints_a_summary_and_exits_0(tmp_path, capsys):
    config = write(tmp_path)
    assert main(["check", "--config", config]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"{config}: OK"
    assert "kafka: 127.0.0.1:1, group userflux-connector (+1 more properties)" in lines
    assert (
        "userflux: https://integration-api.userflux.co, batches of up to 50, linger 200 ms, 8 in flight, "
        "timeout 10s, retries forever"
    ) in lines
    assert "invalid messages: dead-lettered to userflux-connector-dlq" in lines
    assert "  [0] topics web-events, locationEnrichment=false" in lines
    assert ("  [1] pattern ^app\\..+, locationEnrichment=true, only where type in [track, screen]") in lines
    assert any(line.split() == ["name", "the", "template", "'{type}_{action}'"] for line in lines)
    assert API_KEY not in out + err
    assert "error" not in err


def test_check_bad_file_exits_2_with_the_error_on_stderr(tmp_path, capsys):
    config = write(tmp_path, old="batch_size: 50", new="batch_size: 500")
    assert main(["check", "--config", config]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        f"error: {config}: invalid configuration: userflux.batch_size: expected an integer from 1 to 50"
    )


def test_check_missing_file_exits_2(tmp_path, capsys):
    assert main(["check", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read the configuration file" in capsys.readouterr().err


def test_check_unset_env_var_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("USERFLUX_API_KEY")
    assert main(["check", "--config", write(tmp_path)]) == 2
    assert "environment variable USERFLUX_API_KEY is not set" in capsys.readouterr().err


def test_check_misspelled_bootstrap_servers_exits_2_naming_it(tmp_path, capsys):
    config = write(tmp_path, old="bootstrap.servers:", new="bootstrap.server:")
    assert main(["check", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "'bootstrap.server'" in err


def test_check_unknown_librdkafka_property_exits_2_naming_it(tmp_path, capsys):
    config = write(tmp_path, old="auto.offset.reset: earliest", new="auto.offset.rest: earliest")
    assert main(["check", "--config", config]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "kafka: librdkafka refused the configuration" in err
    assert '"auto.offset.rest"' in err


def test_check_validates_dead_letter_producer_properties(tmp_path, capsys):
    config = write(
        tmp_path,
        old="dead_letter: {topic: userflux-connector-dlq}",
        new="dead_letter: {topic: userflux-connector-dlq, producer: {linger.mss: 5}}",
    )
    assert main(["check", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "dead_letter.producer: librdkafka refused the configuration" in err and "linger.mss" in err


def test_check_masks_secrets_in_librdkafka_errors(tmp_path, capsys):
    secret = "sasl-pw-do-not-print-42"
    config = write(
        tmp_path, old="auto.offset.reset: earliest", new=f"sasl.password: {secret}\n  auto.offset.reset: {secret}"
    )
    assert main(["check", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "auto.offset.reset" in err  # librdkafka quotes the bad value ...
    assert secret not in err  # ... which is masked
    assert "***" in err


def test_check_summary_for_on_invalid_skip(tmp_path, capsys):
    config = write(
        tmp_path, old="on_invalid: dead_letter\ndead_letter: {topic: userflux-connector-dlq}", new="on_invalid: skip"
    )
    assert main(["check", "--config", config]) == 0
    assert "invalid messages: skip" in capsys.readouterr().out.splitlines()


def test_check_lists_each_destination_with_its_caps_and_mappings(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("USERFLUX_MOBILE_API_KEY", "mobile-key-0123456789")
    text = EXAMPLE.replace(
        "  api_key: ${USERFLUX_API_KEY}\n",
        "  api_key: ${USERFLUX_API_KEY}\n  max_events_per_second: 200\n"
        "  destinations:\n    mobile: {api_key: '${USERFLUX_MOBILE_API_KEY}', max_requests_per_second: 5}\n",
    ).replace('  - pattern: "^app\\\\..+"\n', '  - pattern: "^app\\\\..+"\n    destination: mobile\n')
    config = write(tmp_path, text)
    assert main(["check", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "destination default: https://integration-api.userflux.co, at most 200 events/s, mappings 0" in lines
    assert "destination mobile: https://integration-api.userflux.co, at most 5 requests/s, mappings 1" in lines
    assert any(
        line.startswith("  [1] pattern ^app\\..+, locationEnrichment=true, to destination mobile") for line in lines
    )
    assert any("8 in flight per destination" in line for line in lines)
    assert "mobile-key-0123456789" not in "\n".join(lines)


def test_map_says_the_destination_of_a_mapping_that_names_one(tmp_path, monkeypatch, capsys):
    text = EXAMPLE.replace(
        "  api_key: ${USERFLUX_API_KEY}\n",
        "  api_key: ${USERFLUX_API_KEY}\n  destinations: {mobile: {api_key: mobile-key-0123456789}}\n",
    ).replace('  - pattern: "^app\\\\..+"\n', '  - pattern: "^app\\\\..+"\n    destination: mobile\n')
    line = json.dumps({"type": "track", "action": "tap", "user": {"id": "u"}})
    code, results, _ = run_map(monkeypatch, capsys, write(tmp_path, text), "app.ios", [line])
    assert code == 0 and results[0]["destination"] == "mobile"


def test_config_option_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2
    assert "--config" in capsys.readouterr().err


# -- map ------------------------------------------------------------------------------------


def test_map_prints_one_line_per_input_line(tmp_path, monkeypatch, capsys):
    lines = [
        json.dumps({"event": "page_view", "user": {"id": 7}, "sent_at": 1_700_000_000, "properties": {"p": "/"}}),
        json.dumps({"event": "signup", "anonymous_id": "a-1", "sent_at": "2023-11-14T22:13:20Z"}),
    ]
    code, results, err = run_map(monkeypatch, capsys, write(tmp_path), "web-events", lines)
    assert code == 0
    assert results == [
        {
            "line": 1,
            "locationEnrichment": False,
            "event": {"name": "page_view", "userId": "7", "timestamp": 1_700_000_000_000, "properties": {"p": "/"}},
        },
        {
            "line": 2,
            "locationEnrichment": False,
            "event": {"name": "signup", "anonymousId": "a-1", "timestamp": 1_700_000_000_000, "properties": {}},
        },
    ]


def test_map_invalid_and_skipped_lines_and_exit_1(tmp_path, monkeypatch, capsys):
    lines = [
        json.dumps({"type": "track", "action": "tap", "user": {"id": "u"}}),
        json.dumps({"type": "identify", "action": "x", "user": {"id": "u"}}),
        "not json",
        "",
        json.dumps({"type": "track", "action": "tap"}),
    ]
    code, results, _ = run_map(monkeypatch, capsys, write(tmp_path), "app.ios", lines, "--timestamp", "1600000000000")
    assert code == 1
    assert [r["line"] for r in results] == [1, 2, 3, 5]  # the blank line is not echoed
    assert results[0]["event"]["name"] == "track_tap" and results[0]["locationEnrichment"] is True
    assert results[1] == {"line": 2, "skipped": "where: type is string 'identify', not one of [track, screen]"}
    assert results[2]["stage"] == "deserialize" and results[2]["invalid"].startswith("the value is not JSON")
    assert results[3] == {
        "line": 5,
        "stage": "map",
        "invalid": "no userId or anonymousId: nothing found for userId (any of 'user.id', '@key') "
        "and anonymousId ('@headers.device-id')",
    }


def test_map_skipped_only_exits_0(tmp_path, monkeypatch, capsys):
    code, results, _ = run_map(monkeypatch, capsys, write(tmp_path), "app.ios", [json.dumps({"type": "page"})])
    assert code == 0 and "skipped" in results[0]


def test_map_key_header_and_timestamp_feed_metadata(tmp_path, monkeypatch, capsys):
    line = json.dumps({"type": "screen", "action": "view", "screen": "home", "user": {"name": "x"}})
    code, results, _ = run_map(
        monkeypatch,
        capsys,
        write(tmp_path),
        "app.android",
        [line],
        "--key",
        "key-9",
        "--header",
        "device-id=dev-1",
        "--header",
        "other=x=y",
        "--timestamp",
        "1600000000123",
    )
    assert code == 0
    assert results[0]["event"] == {
        "name": "screen_view",
        "userId": "key-9",
        "anonymousId": "dev-1",
        "timestamp": 1_600_000_000_123,
        "properties": {"screen": "home", "source": "mobile", "topic": "app.android"},
    }


def test_map_repeated_header_last_wins(tmp_path, monkeypatch, capsys):
    line = json.dumps({"type": "track", "action": "a", "user": {"id": 1}})
    _, results, _ = run_map(
        monkeypatch,
        capsys,
        write(tmp_path),
        "app.x",
        [line],
        "--header",
        "device-id=first",
        "--header",
        "device-id=second",
    )
    assert results[0]["event"]["anonymousId"] == "second"


def test_map_timestamp_defaults_to_now(tmp_path, monkeypatch, capsys):
    before = int(time.time() * 1000)
    line = json.dumps({"type": "track", "action": "a", "user": {"id": 1}})
    _, results, _ = run_map(monkeypatch, capsys, write(tmp_path), "app.x", [line])
    assert before <= results[0]["event"]["timestamp"] <= int(time.time() * 1000)


def test_map_unknown_topic_exits_2(tmp_path, monkeypatch, capsys):
    code, results, err = run_map(monkeypatch, capsys, write(tmp_path), "nobody-reads-this", ["{}"])
    assert code == 2 and results == []
    assert "--topic nobody-reads-this: no mapping takes this topic" in err
    assert "web-events, ^app\\..+" in err


def test_map_bad_header_exits_2(tmp_path, monkeypatch, capsys):
    code, results, err = run_map(monkeypatch, capsys, write(tmp_path), "web-events", ["{}"], "--header", "novalue")
    assert code == 2 and results == []
    assert "--header 'novalue': expected NAME=VALUE" in err


def test_map_bad_config_exits_2(tmp_path, monkeypatch, capsys):
    config = write(tmp_path, old="name: event\n", new="name: '@nope'\n")
    code, results, err = run_map(monkeypatch, capsys, config, "web-events", ["{}"])
    assert code == 2 and results == []
    assert "mappings[0].event.name: unknown message metadata '@nope'" in err


def test_map_never_prints_a_secret(tmp_path, monkeypatch, capsys):
    line = json.dumps({"event": "leak", "user": {"id": 1}, "properties": {"token": API_KEY}})
    code, results, _ = run_map(monkeypatch, capsys, write(tmp_path), "web-events", [line])
    assert code == 0 and results[0]["event"]["properties"] == {"token": "***"}


def test_map_reads_bytes_so_a_line_that_is_not_utf8_is_just_invalid(tmp_path, monkeypatch, capsys):
    good = json.dumps({"event": "ok", "user": {"id": 1}}).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"event": "\xff"}\n' + good + b"\n")))
    code = main(["map", "--config", write(tmp_path), "--topic", "web-events"])
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert results[0]["stage"] == "deserialize" and "utf-8" in results[0]["invalid"]
    assert results[1]["event"]["name"] == "ok"


REGISTRY_CONFIG = """\
kafka: {bootstrap.servers: "${KAFKA_BOOTSTRAP_SERVERS}", group.id: g}
userflux: {api_key: "${USERFLUX_API_KEY}"}
on_invalid: skip
schema_registry:
  url: [https://registry-a:8081, https://registry-b:8081]
  basic_auth: {username: svc, password: registry-secret-99}
value_format: avro
mappings:
  - topics: [orders]
    key_format: avro
    event: {name: event, userId: "@key.user", properties: "."}
  - topics: [plain]
    value_format: json
    event: {name: event, userId: user}
"""


def test_check_summarises_the_registry_and_the_formats_and_masks_the_password(tmp_path, capsys):
    assert main(["check", "--config", write(tmp_path, REGISTRY_CONFIG)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert (
        "schema registry: https://registry-a:8081, https://registry-b:8081 (basic auth), timeout 5s, "
        "up to 1000 schemas cached"
    ) in lines
    assert "  [0] topics orders, avro values, avro keys, locationEnrichment=false" in lines
    assert "  [1] topics plain, locationEnrichment=false" in lines
    assert "registry-secret-99" not in out


def test_check_refuses_a_registry_format_without_a_registry(tmp_path, capsys):
    text = REGISTRY_CONFIG.replace(
        "schema_registry:\n  url: [https://registry-a:8081, https://registry-b:8081]\n"
        "  basic_auth: {username: svc, password: registry-secret-99}\n",
        "",
    )
    assert main(["check", "--config", write(tmp_path, text)]) == 2
    err = capsys.readouterr().err
    assert "mappings[0].value_format: avro is read through a schema registry: set schema_registry.url" in err
    assert "mappings[0].key_format: avro is read through a schema registry" in err


def test_check_names_an_unknown_registry_client_property(tmp_path, capsys):
    text = REGISTRY_CONFIG.replace("  basic_auth:", "  client: {no.such.thing: 1}\n  basic_auth:")
    assert main(["check", "--config", write(tmp_path, text)]) == 2
    assert "schema_registry.client: Unrecognized properties: no.such.thing" in capsys.readouterr().err


def test_map_takes_the_decoded_form_of_avro_values_and_keys(tmp_path, monkeypatch, capsys):
    line = json.dumps({"event": "order_placed", "total": 12})
    code, results, _ = run_map(
        monkeypatch, capsys, write(tmp_path, REGISTRY_CONFIG), "orders", [line], "--key", '{"user": "u-1"}'
    )
    assert code == 0
    assert results[0]["event"]["userId"] == "u-1"
    assert results[0]["event"]["properties"] == {"event": "order_placed", "total": 12}


# -- replay and offsets (what is checked before any broker is asked) ------------------------


def test_replay_without_a_dead_letter_topic_exits_2_saying_so(tmp_path, capsys):
    config = write(
        tmp_path, old="on_invalid: dead_letter\ndead_letter: {topic: userflux-connector-dlq}", new="on_invalid: skip"
    )
    assert main(["replay", "--config", config]) == 2
    assert "dead_letter.topic: not set, so there is no dead-letter topic to replay" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, says",
    [
        (["--stage", "mapping"], "invalid choice: 'mapping'"),
        (["--max-replays", "-1"], "expected 0 or more"),
        (["--output", "yaml"], "invalid choice: 'yaml'"),
    ],
)
def test_replay_refuses_a_wrong_flag(tmp_path, capsys, args, says):
    with pytest.raises(SystemExit) as info:
        main(["replay", "--config", write(tmp_path), *args])
    assert info.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, says",
    [
        (["--since", "last tuesday"], "--since: expected an ISO-8601 date and time"),
        (["--since", "2026-03-02T00:00:00Z", "--until", "2026-03-01T00:00:00Z"], "--since must be before --until"),
    ],
)
def test_replay_refuses_a_wrong_filter_before_it_asks_kafka(tmp_path, capsys, args, says):
    assert main(["replay", "--config", write(tmp_path), *args]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, says",
    [
        (["reset"], "offsets reset: --to is required"),
        (["--execute"], "belong to `offsets reset`"),
    ],
)
def test_offsets_refuses_a_wrong_command_line_before_it_asks_kafka(tmp_path, capsys, args, says):
    assert main(["offsets", "--config", write(tmp_path), *args]) == 2
    assert says in capsys.readouterr().err
