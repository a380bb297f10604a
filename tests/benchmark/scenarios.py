"""The scenarios of the benchmark, and the connector configuration each one runs with.

The configuration is the production one: every setting docs/configuration.md gives a default keeps
it (read from the connector's own settings model), and only what a scenario is about
differs: (b) ``max_in_flight: 16`` against a 50 ms round trip, (d) a richer mapping.
(q) runs the baseline instead of the connector: a quixstreams application doing (a)'s job
(baseline.py), measured the same way. (v) is (a) with the same events written in Avro by
confluent-kafka's AvroSerializer (events.AVRO_SCHEMA), read through a schema registry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from connector.config.model import UserFluxSettings
from tests.benchmark.events import FILTERED_TYPE, Produced

API_KEY_VARIABLE = "USERFLUX_API_KEY"

# The mapping a user writes for these web events (as in config/connector.yaml).
PLAIN_EVENT = {
    "name": "event",
    "userId": "user.id",
    "anonymousId": "anonymous_id",
    "timestamp": "sent_at",
    "properties": "properties",
}

# (d): a composed name, a filter, and properties built from the message and its metadata.
FEATURES_EVENT = {
    "name": {"template": "{type}_{event}"},
    "userId": "user.id",
    "anonymousId": "anonymous_id",
    "timestamp": "sent_at",
    "properties": {
        "from": "properties",
        "exclude": ["context.library"],
        "set": {
            "plan": {"path": "user.plan", "default": "anonymous"},
            "source": {"value": "web"},
            "kafka_topic": "@topic",
        },
    },
}
FEATURES_WHERE = {"path": "type", "not_in": [FILTERED_TYPE]}


def _default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(UserFluxSettings) if f.name == name)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    userflux: dict[str, Any] = field(default_factory=dict)  # settings that differ from the defaults
    event: dict[str, Any] = field(default_factory=lambda: PLAIN_EVENT)
    where: dict[str, Any] | None = None
    sink_delay_ms: float = 0.0
    outage: bool = False  # the sink starts down and comes up once the connector has paused reading
    baseline_threads: int = 0  # not the connector: the quixstreams application (baseline.py), posting threads
    value_format: str = "json"  # avro: the Avro backlog, through the schema registry

    def setting(self, name: str) -> Any:
        return self.userflux.get(name, _default(name))

    def pipelining_bound(self) -> float | None:
        """Events/s at most: ``batch_size × max_in_flight / RTT``, when the sink waits before answering."""
        if not self.sink_delay_ms:
            return None
        return self.setting("batch_size") * self.setting("max_in_flight") / (self.sink_delay_ms / 1000)

    def expected(self, produced: Produced) -> int:
        """How many of the produced messages become events UserFlux receives."""
        return produced.passing() if self.where is not None else produced.count

    def config(
        self,
        *,
        bootstrap: str,
        base_url: str,
        group: str,
        topics: list[str],
        metrics_port: int,
        dead_letter_topic: str,
        registry_url: str | None = None,
    ) -> dict[str, Any]:
        mapping: dict[str, Any] = {"topics": topics}
        if self.value_format != "json":
            mapping["value_format"] = self.value_format
        if self.where is not None:
            mapping["where"] = self.where
        mapping["event"] = self.event
        config = {
            # auto.offset.reset: earliest, or a new group would skip the backlog.
            "kafka": {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"},
            "userflux": {"base_url": base_url, "api_key": "${" + API_KEY_VARIABLE + "}", **self.userflux},
            "dead_letter": {"topic": dead_letter_topic},
            "metrics": {"host": "127.0.0.1", "port": metrics_port},
            "mappings": [mapping],
        }
        if self.value_format != "json":
            assert registry_url is not None, "a registry format needs the benchmark's registry"
            config["schema_registry"] = {"url": registry_url}
        return config


SCENARIOS = {
    s.key: s
    for s in (
        Scenario("a", "loopback, CPU-bound"),
        Scenario("b", "50 ms round trip, max_in_flight 16", userflux={"max_in_flight": 16}, sink_delay_ms=50),
        Scenario("c", "backlog while UserFlux is down, then up", outage=True),
        Scenario("d", "template, where filter, properties.set", event=FEATURES_EVENT, where=FEATURES_WHERE),
        Scenario("v", "Avro values through the schema registry, otherwise (a)", value_format="avro"),
        # What a user could write instead: (a)'s job and sink, a quixstreams application.
        Scenario("q", "quixstreams application (baseline)", baseline_threads=8),
    )
}
