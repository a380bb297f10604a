"""The dashboard, the alert rules and docs/operations.md name the metrics the running connector exports.

One connector run delivers events, retries a request and dead-letters a message, and its
/metrics page is scraped while it still owns its partitions: per-partition series exist
only then. The tests below read that one scrape.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import API_KEY
from tests.integration.test_run import free_port, http_get
from tests.support.connector_process import ConnectorProcess, base_config, write_config
from tests.support.kafka_tools import new_topic, produce, read_all, unique
from tests.support.monitoring import (
    dashboard_expressions,
    documented_metrics,
    documented_name,
    exported_series,
    load_dashboard,
    load_rules,
    rule_expressions,
    used_metric_names,
)

pytestmark = pytest.mark.kafka

# Per-partition lag appears at the first lag refresh (metrics.lag_interval_s, 1 s here).
SCRAPE_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def used() -> dict[str, list[str]]:
    """Series name -> the panels and alerts that read it."""
    return used_metric_names(dashboard_expressions(load_dashboard()) + rule_expressions(load_rules()))


# Series that exist only while a partition is owned, one per partition.
PER_PARTITION = (
    "userflux_connector_consumer_lag_messages",
    "userflux_connector_committed_offset",
    "userflux_connector_oldest_pending_age_seconds",
)


def unexported(used: dict[str, list[str]], scrape: str) -> dict[str, list[str]]:
    exported = exported_series(scrape)
    return {name: where for name, where in sorted(used.items()) if name not in exported}


def partition_samples(scrape: str) -> dict[str, int]:
    """How many samples of each per-partition series the scrape holds."""
    lines = scrape.splitlines()
    return {name: sum(line.startswith(name + "{") for line in lines) for name in PER_PARTITION}


@pytest.fixture(scope="module")
def scrape(kafka_bootstrap, standin_server, tmp_path_factory, used) -> str:
    port = free_port()
    topic = new_topic(kafka_bootstrap, "monitoring", partitions=2)
    dlq = new_topic(kafka_bootstrap, "monitoring-dlq")
    mapping = {"topics": [topic], "event": {"name": "event", "userId": "user"}}
    config = write_config(
        tmp_path_factory.mktemp("monitoring") / "connector.yaml",
        base_config(
            kafka_bootstrap,
            standin_server.base_url,
            API_KEY,
            unique("group"),
            [mapping],
            on_invalid="dead_letter",
            dead_letter={"topic": dlq},
            metrics={"enabled": True, "host": "127.0.0.1", "port": port, "lag_interval_s": 1},
        ),
    )
    standin_server.reset()
    standin_server.fail_next(1, 503)  # one retry
    # Into each partition explicitly: keyless messages may all stick to one, leaving the other
    # with nothing to commit and no committed-offset series.
    for partition in (0, 1):
        produce(kafka_bootstrap, topic, [{"event": "page_view", "user": i} for i in range(10)], partition=partition)
    produce(kafka_bootstrap, topic, [b"{not json"], partition=1)
    try:
        with ConnectorProcess(config) as connector:
            standin_server.wait_for_events(20, timeout_s=60)
            read_all(kafka_bootstrap, dlq, 1, timeout_s=30)
            deadline = time.monotonic() + SCRAPE_TIMEOUT_S
            while True:
                status, body = http_get(f"http://127.0.0.1:{port}/metrics")
                assert status == 200, body
                owned = all(n == 2 for n in partition_samples(body).values())
                if (owned and not unexported(used, body)) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert connector.stop() == 0, connector.stderr[-3000:]
    finally:
        standin_server.reset()
    return body


def test_the_scrape_holds_both_partitions_series(scrape):
    assert partition_samples(scrape) == dict.fromkeys(PER_PARTITION, 2)


def test_promtool_finds_nothing_to_fix_in_the_metrics(scrape, promtool):
    result = subprocess.run([promtool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_the_dashboard_and_the_alerts_use_is_exported(scrape, used):
    assert used, "no metric found in the dashboard and the alerts"
    missing = unexported(used, scrape)
    assert missing == {}, "used by the dashboard or the alerts, not exported: " + ", ".join(missing)


def test_every_metric_the_connector_exports_is_documented(scrape):
    documented = documented_metrics()
    histograms = [m.name for m in documented.values() if m.type == "histogram"]
    exported = {
        documented_name(name, histograms)
        for name in exported_series(scrape)
        if name.startswith("userflux_connector_") and not name.endswith("_created")
    }
    assert exported - set(documented) == set(), "exported but not in the metric table of docs/operations.md"
