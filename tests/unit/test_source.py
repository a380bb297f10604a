"""connector/source.py: the consumer's configuration."""

from __future__ import annotations

from connector.source import consumer_config


def test_the_connector_owns_offset_storage_and_bounds_the_prefetch():
    conf = consumer_config({"bootstrap.servers": "b:9092", "group.id": "g"})
    assert conf["enable.auto.commit"] == "false" and conf["enable.auto.offset.store"] == "false"
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    assert conf["queued.max.messages.kbytes"] == "8192" and conf["fetch.queue.backoff.ms"] == "20"
    assert conf["fetch.max.bytes"] == "4194304" and conf["max.partition.fetch.bytes"] == "524288"


def test_a_user_s_prefetch_settings_win():
    conf = consumer_config(
        {
            "bootstrap.servers": "b:9092",
            "group.id": "g",
            "queued.max.messages.kbytes": "65536",
            "fetch.queue.backoff.ms": "1000",
        }
    )
    assert conf["queued.max.messages.kbytes"] == "65536" and conf["fetch.queue.backoff.ms"] == "1000"


def test_the_kip_848_protocol_gets_no_assignment_strategy():
    conf = consumer_config({"bootstrap.servers": "b:9092", "group.id": "g", "group.protocol": "consumer"})
    assert "partition.assignment.strategy" not in conf
