"""connector/registry_wait.py in the loop: a registry that does not answer holds reading,
dead-letters nothing and commits nothing past the message that waits; one that refuses
the credentials stops the run with exit 3. With the pipeline tests' fake source and
sender, and a fake registry client (tests/unit/formats/fakes.py)."""

from __future__ import annotations

import json

import yaml
from confluent_kafka.schema_registry import Schema

from connector import metrics
from connector.pipeline import Pipeline
from connector.startup import parse_config
from tests.support.fakes import FakeMessage
from tests.support.pipeline_fakes import T0, T1, FakeSender, FakeSource, fake_pipeline, stop, until
from tests.support.registry_fakes import FakeRegistryClient
from tests.support.registry_samples import EVENT_AVRO, sample_event
from tests.unit.formats.test_avro import framed


def config(on_invalid: str = "stop") -> dict:
    return {
        "kafka": {"bootstrap.servers": "fake:9092", "group.id": "g"},
        "userflux": {
            "base_url": "http://127.0.0.1:9",
            "api_key": "fake-key-0123456789",
            "batch_size": 5,
            "linger_ms": 5,
        },
        "on_invalid": on_invalid,  # stop: anything invalid would end the run with exit 4
        "metrics": {"enabled": False},
        "pipeline": {
            "commit_interval_ms": 10,
            "rebalance_timeout_s": 1,
            "shutdown_grace_s": 2,
            "refused_exit_delay_s": 0,
        },
        "schema_registry": {"url": "http://127.0.0.1:9", "initial_backoff_ms": 5, "max_backoff_ms": 40},
        "value_format": "avro",
        "mappings": [{"topics": ["t"], "event": {"name": "event", "anonymousId": "anonymous_id"}}],
    }


def avro_message(partition: int, offset: int) -> FakeMessage:
    return FakeMessage(topic="t", partition=partition, offset=offset, value=framed(EVENT_AVRO, sample_event(offset)))


def run_with(steps, client: FakeRegistryClient, on_invalid: str = "stop") -> tuple[Pipeline, FakeSource, FakeSender]:
    pipe, source, sender = fake_pipeline(parse_config(yaml.safe_dump(config(on_invalid))))
    assert pipe.decoders.registry is not None
    pipe.decoders.registry._client = client  # the real client would dial 127.0.0.1:9
    source.script.extend(steps(source, pipe))
    return pipe, source, sender


def test_reading_waits_for_the_registry_and_then_delivers_everything():
    client = FakeRegistryClient({1: Schema(json.dumps(EVENT_AVRO), "AVRO")})
    client.fail = 503
    seen: dict = {}
    waiting_before = metrics.schema_registry_waiting._value.get()

    def while_waiting(source, pipe):
        def step() -> bool:
            if not (pipe.registry_wait.waiting and pipe.registry_wait.attempts >= 3):
                return False
            seen["paused"] = set(source.paused)
            seen["health"] = pipe.status.live()
            seen["commits"] = [c.get(T0) for c in source.commits]
            seen["metric"] = metrics.schema_registry_waiting._value.get()
            client.fail = None  # the registry is back
            return True

        return step

    def steps(source, pipe):
        source.add(*[avro_message(p, o) for p in (0, 1) for o in range(12)])
        return [
            source.assign([T0, T1]),
            while_waiting(source, pipe),
            until(lambda: source.last_commit(T0) == 12 and source.last_commit(T1) == 12),
            stop(pipe),
        ]

    pipe, source, sender = run_with(steps, client)
    assert pipe.run() == 0  # on_invalid is stop: nothing was invalid
    assert seen["paused"] == {T0, T1}
    ok, body = seen["health"]
    assert ok and body["status"] == "registry_unavailable" and "answered HTTP 503" in body["detail"]
    assert all(c is None or c == 0 for c in seen["commits"])  # nothing committed past the first message
    assert seen["metric"] == 1 and metrics.schema_registry_waiting._value.get() == waiting_before == 0
    assert sender.delivered(0) == sender.delivered(1) == set(range(12))
    delivered = [i.message.offset() for b in sender.sent for i in b.items if i.message.partition() == 0]
    assert delivered == list(range(12))  # in order
    assert not source.paused and pipe.status.registry_problem is None
    assert client.requests.count(("schema", 1)) >= 4  # three failed tries, then the answer, then never again


def test_refused_credentials_stop_the_run_with_exit_3_committing_nothing_past():
    client = FakeRegistryClient({1: Schema(json.dumps(EVENT_AVRO), "AVRO")})
    client.fail = 401

    def steps(source, pipe):
        source.add(*[avro_message(0, o) for o in range(5)])
        return [source.assign([T0]), until(lambda: False)]

    pipe, source, sender = run_with(steps, client)
    assert pipe.run() == 3
    assert pipe.status.state == "registry_refused" and "HTTP 401" in pipe.status.detail
    assert not sender.sent and all(c.get(T0) in (None, 0) for c in source.commits)


def test_a_partition_revoked_while_waiting_drops_its_held_messages():
    client = FakeRegistryClient({1: Schema(json.dumps(EVENT_AVRO), "AVRO")})
    client.fail = 500

    def revoke_while_waiting(source, pipe):
        def step() -> bool:
            if not pipe.registry_wait.waiting:
                return False
            source.revoke([T1])()
            client.fail = None
            return True

        return step

    def steps(source, pipe):
        source.add(*[avro_message(p, o) for p in (0, 1) for o in range(4)])
        return [
            source.assign([T0, T1]),
            revoke_while_waiting(source, pipe),
            until(lambda: source.last_commit(T0) == 4),
            stop(pipe),
        ]

    pipe, source, sender = run_with(steps, client)
    assert pipe.run() == 0
    assert sender.delivered(0) == set(range(4)) and sender.delivered(1) == set()
    assert all(c[T1] == 0 for c in source.commits if T1 in c)  # the next owner reads them all
