"""The decoders and their schema cache (formats/decoders.py), and how the registry's
answers are told apart (formats/registry.py): with a fake client that answers as
confluent-kafka's does. The real registry is in tests/integration/test_registry_formats.py."""

from __future__ import annotations

import json
import struct

import pytest
from confluent_kafka.schema_registry import Schema

from connector import metrics
from connector.config.model import LimitsSettings, SchemaRegistrySettings, Secret
from connector.errors import InvalidMessage, RegistryRefused, RegistryUnavailable
from connector.formats import Decoders
from connector.formats.decoders import NOT_FOUND_TTL_S
from connector.formats.registry import Registry, _http_library, client_config
from tests.support.registry_fakes import FakeRegistryClient
from tests.support.registry_samples import EVENT_AVRO, sample_event
from tests.unit.formats.test_avro import framed

SETTINGS = SchemaRegistrySettings(urls=("http://registry.test:8081",), cache_size=3)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(schemas=None, cache_size=3):
    client = FakeRegistryClient(schemas or {1: Schema(json.dumps(EVENT_AVRO), "AVRO")})
    clock = Clock()
    decoders = Decoders(Registry(SETTINGS, lambda _: client), LimitsSettings(), cache_size, clock=clock)
    return decoders, client, clock


def count(outcome: str) -> float:
    return metrics.schema_registry_requests.labels(outcome)._value.get()


def test_a_schema_is_fetched_once_per_id():
    decoders, client, _ = make()
    decode = decoders.decoder("avro")
    for i in range(5):
        assert decode(framed(EVENT_AVRO, sample_event(i)))["anonymous_id"] == sample_event(i)["anonymous_id"]
    assert client.requests == [("schema", 1), ("subjects", 1)]
    assert decoders.cached == 1


def test_the_cache_is_bounded():
    schemas = {i: Schema(json.dumps({**EVENT_AVRO, "name": f"E{i}"}), "AVRO") for i in range(1, 6)}
    decoders, client, _ = make(schemas, cache_size=3)
    decode = decoders.decoder("avro")
    for i in range(1, 6):
        decode(framed(EVENT_AVRO, sample_event(0), schema_id=i))
    assert decoders.cached == 3
    assert metrics.schemas_cached._value.get() == 3
    decode(framed(EVENT_AVRO, sample_event(0), schema_id=1))  # evicted: fetched again
    assert client.requests.count(("schema", 1)) == 2


def test_an_unknown_id_is_invalid_and_asked_again_only_after_a_while():
    decoders, client, clock = make()
    decode = decoders.decoder("avro")
    data = framed(EVENT_AVRO, sample_event(0), schema_id=77)
    for _ in range(3):
        with pytest.raises(InvalidMessage, match="schema id 77 is not in the schema registry at http://registry.test"):
            decode(data)
    assert client.requests.count(("schema", 77)) == 1
    clock.now += NOT_FOUND_TTL_S + 1
    with pytest.raises(InvalidMessage):
        decode(data)
    assert client.requests.count(("schema", 77)) == 2


@pytest.mark.parametrize(
    "failure, outcome, match",
    [
        (503, "server_error", "answered HTTP 503"),
        (500, "server_error", "answered HTTP 500"),
        (429, "server_error", "answered HTTP 429"),
        ("connect", "unreachable", "cannot reach the schema registry at http://registry.test:8081"),
        ("timeout", "timeout", "did not answer within 5s"),
    ],
)
def test_an_unavailable_registry_is_transient_and_nothing_is_remembered(failure, outcome, match):
    http = _http_library()
    decoders, client, _ = make()
    client.fail = {"connect": http.ConnectError("refused"), "timeout": http.ReadTimeout("slow")}.get(failure, failure)
    before = count(outcome)
    data = framed(EVENT_AVRO, sample_event(0))
    with pytest.raises(RegistryUnavailable, match=match):
        decoders.decoder("avro")(data)
    assert count(outcome) == before + 1
    assert decoders.cached == 0
    client.fail = None  # it answers again: the same message decodes
    assert decoders.decoder("avro")(data)["event"] == sample_event(0)["event"]


@pytest.mark.parametrize("code", [401, 403])
def test_refused_credentials_are_fatal(code):
    decoders, client, _ = make()
    client.fail = code
    with pytest.raises(
        RegistryRefused, match=f"refused the credentials asking for schema id 1 \\(HTTP {code}\\)"
    ) as info:
        decoders.decoder("avro")(framed(EVENT_AVRO, sample_event(0)))
    assert info.value.exit_code == 3


def test_failures_name_the_schema_id_and_subject():
    decoders, _, _ = make({1: Schema(json.dumps(EVENT_AVRO), "AVRO"), 2: Schema('{"type": "object"}', "JSON")})
    with pytest.raises(
        InvalidMessage, match="schema id 1 \\(subject subject-1\\), which is Avro, but the mapping reads protobuf"
    ):
        decoders.decoder("protobuf")(framed(EVENT_AVRO, sample_event(0)))
    with pytest.raises(InvalidMessage, match="not JSON.*the payload of schema id 2 \\(subject subject-2\\)"):
        decoders.decoder("json_schema")(b"\x00" + struct.pack(">I", 2) + b"{nope")
    assert decoders.decoder("json_schema")(b"\x00" + struct.pack(">I", 2) + b'{"a": [1]}') == {"a": [1]}


def test_a_schema_that_cannot_be_compiled_is_invalid_and_remembered():
    decoders, client, _ = make({5: Schema('syntax = "proto3"; message M { strng a = 1; }', "PROTOBUF")})
    for _ in range(2):
        with pytest.raises(
            InvalidMessage, match="schema id 5 \\(subject subject-5\\): the schema cannot be used: protoc.*strng"
        ):
            decoders.decoder("protobuf")(b"\x00\x00\x00\x00\x05\x00")
    assert client.requests.count(("schema", 5)) == 1


def test_what_is_not_framed_tombstones_and_sizes():
    decoders, client, _ = make()
    decode, key = decoders.decoder("avro"), decoders.decoder("avro", "key")
    with pytest.raises(InvalidMessage, match="the value is not in Confluent's wire format \\(Avro\\).*plain JSON"):
        decode(b'{"event": "x"}')
    with pytest.raises(InvalidMessage, match="tombstone"):
        decode(None)
    assert key(None) is None  # no key: @key is missing
    with pytest.raises(InvalidMessage, match="the key is not in Confluent's wire format"):
        key(b"plain")
    limits = LimitsSettings(max_message_bytes=1024)
    small = Decoders(Registry(SETTINGS, lambda _: client), limits)
    with pytest.raises(InvalidMessage, match="2000 bytes, over limits.max_message_bytes"):
        small.decoder("avro")(b"\x00" * 2000)
    assert client.requests == []  # nothing of this needed the registry


def test_the_client_gets_a_timeout_no_retries_and_the_credentials():
    conf = client_config(
        SchemaRegistrySettings(
            urls=("https://a:8081", "https://b:8081"),
            username="svc",
            password=Secret("pw"),
            request_timeout_s=2.5,
            client={"cache.latest.ttl.sec": "60", "proxy": "http://proxy:3128"},
        )
    )
    assert conf["url"] == "https://a:8081,https://b:8081"
    assert (conf["timeout"], conf["max.retries"], conf["basic.auth.user.info"]) == (2.5, 0, "svc:pw")
    assert conf["cache.latest.ttl.sec"] == 60 and conf["proxy"] == "http://proxy:3128"
    bearer = client_config(SchemaRegistrySettings(urls=("https://a",), bearer_token=Secret("tok")))
    assert bearer["bearer.auth.credentials.source"] == "STATIC_TOKEN" and bearer["bearer.auth.token"] == "tok"
