"""The chart's monitoring, end to end: a real Prometheus configured from what the chart
renders scrapes the real connector through a scripted run, and evaluates the shipped
alerts and every dashboard query.

From ci/monitoring-values.yaml (the scrape interval set to 1 s, the connector pointed at
the test broker and the UserFlux stand-in) the chart renders the ServiceMonitor, the
Service, the Deployment, the ConfigMap, the Secret and the PrometheusRule. The connector
runs as a process on the rendered ConfigMap's configuration, with the environment the
kubelet would give it from the rendered Secret and fieldRef (tests/support/pod_spec.py).
Prometheus scrapes it through the scrape job the Operator would generate for the
rendered ServiceMonitor (tests/support/prometheus_operator.py: file-based discovery with
the pod's and the Service's Kubernetes labels) and evaluates the rendered PrometheusRule,
rewritten to seconds (tests/support/fast_rules.py).

The run, one after the other:

- **healthy**: events at a steady rate, some filtered out by the mapping's `where:`;
- **outage**: UserFlux answers 503 to everything while events keep coming, and a few
  invalid messages are dead-lettered; then production stops, the lag holds still and
  is compared with the broker's own figures;
- **recovery**: UserFlux answers again; it refuses a few events (400, dead-lettered);
- **refused**: UserFlux refuses the write key (401); the connector reports it, lingers
  and exits with code 3, and Prometheus sees it down.

Then, through Prometheus's HTTP API: every panel query of the shipped dashboard, with
its variables substituted as Grafana does, returns what the phase should show (each
panel that may rightly be empty says why); each alert the run reaches went firing, and
none did while healthy; the counters known at start were there from the first scrape
at 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from tests.conftest import API_KEY
from tests.support.connector_process import ConnectorProcess, free_port, http_get, write_config
from tests.support.fast_rules import differences, fast_rules
from tests.support.grafana_vars import ALL, compute_intervals, dashboard_variables, interpolate, label_values_query
from tests.support.helm import NAMESPACE, RELEASE, SCENARIOS, connector_config, one, render
from tests.support.kafka_tools import committed, end_offsets, new_topic, produce, unique, wait_until
from tests.support.monitoring import dashboard_panels, load_dashboard, load_rules
from tests.support.pod_spec import Objects, PodIdentity, container_env, pod_template
from tests.support.prometheus import PrometheusError, PrometheusServer
from tests.support.prometheus_operator import Pod, Service, endpoint_target, scrape_configs, write_targets

pytestmark = pytest.mark.kafka

POD_NAME = "uf-userflux-connector-5b7c9d4f8-q8w2z"
SCRAPE = "1s"  # the ServiceMonitor's interval, set through the chart's values
PARTITIONS = 2
RATE = 40  # events a second while producing
DEBUG_EVERY = 5  # one event in five is filtered out by the mapping's where:
HEALTHY_S = 12
# Alerts each phase's condition reaches; every other alert of the rules must be listed in
# NOT_REACHED with the reason.
REACHED = {
    "outage": {
        "UserFluxConnectorStalled",
        "UserFluxConnectorLagHighAndGrowing",
        "UserFluxConnectorOldestPendingTooOld",
        "UserFluxConnectorErrorRatioHigh",
        "UserFluxConnectorRetryStorm",
        "UserFluxConnectorDeadLetters",
    },
    "refused": {"UserFluxConnectorKeyRefused", "UserFluxConnectorDown", "UserFluxConnectorNoReplicaUp"},
}
NOT_REACHED = {
    "UserFluxConnectorCommitsFailing": "needs the group coordinator to refuse commits: a broker outage, which "
    "this run does not stage (the session's broker is shared with every other test)",
}

# What each panel shows in each phase: "data" (a series with a value above 0), "series" (a
# series, maybe 0), or why it is rightly empty; by title, or by "title refId" for one query
# of a panel. A panel not listed shows "data" while healthy.
SERIES, DATA = "series", "data"
PANELS: dict[str, dict[str, str]] = {
    "Error ratio": {"healthy": SERIES, "outage": DATA},
    "Total lag": {"healthy": SERIES, "outage": DATA},
    "Dead letters /s": {"healthy": SERIES, "outage": DATA},
    "Oldest pending": {"healthy": SERIES, "outage": DATA},
    "Retries /s by reason": {
        "healthy": "empty: retries_total has a series only from the first retry (its reason, a status code, "
        "is not known before), and nothing is retried while healthy",
        "outage": DATA,
    },
    "Senders waiting to retry": {"healthy": SERIES, "outage": DATA},
    "Batches in flight": {"healthy": SERIES},
    "Events buffered, in flight; messages pending": {"healthy": SERIES, "outage": DATA},
    "Consumer lag by partition": {"healthy": SERIES, "outage": DATA},
    "Oldest pending message by partition": {"healthy": SERIES, "outage": DATA},
    # The assignment is at the start: an increase over the rate interval may be 0 all phase.
    "Rebalances": {"healthy": SERIES},
    # max_pending_messages (10000) is far above what this run holds.
    "Paused partitions (backpressure)": {"healthy": SERIES, "outage": SERIES},
    "Invalid messages /s by stage": {"healthy": SERIES, "outage": DATA, "recovery": DATA},
    "Invalid messages /s by action": {"healthy": SERIES, "outage": DATA},
    "Dead letters refused by the broker": {
        "healthy": SERIES,
        "outage": SERIES,
        # never DATA: the run stages no broker refusing a dead letter (one stops the run).
    },
    "Requests UserFlux refused": {
        "healthy": "empty: requests_total has a series per outcome and code only from the first such answer, "
        "and UserFlux refuses nothing while healthy",
        "recovery": DATA,
        "refused": DATA,
    },
    "Write key refused": {"healthy": SERIES, "refused": DATA},
    # The run's topics are JSON: nothing is asked of a schema registry, nothing decoded by one
    # (the registry formats have tests of their own, against a real registry).
    "Schema registry requests /s; reading waiting A": {
        "healthy": "empty: schema_registry_requests_total has a series per outcome only from the first "
        "request, and no topic of this run has a registry format",
    },
    "Schema registry requests /s; reading waiting B": {"healthy": SERIES},
    "Decode failures /s by format and reason": {
        "healthy": "empty: decode_failures_total has a series only from the first failure, and no topic "
        "of this run has a registry format",
    },
    "Schemas cached by pod": {"healthy": SERIES},
    # The cap (1000 events a second) is far above the run's 40: nothing waits for it.
    "Senders waiting for the rate cap": {"healthy": SERIES, "outage": SERIES},
}


@dataclasses.dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    firing: dict[str, float] = dataclasses.field(default_factory=dict)  # alert -> first seen firing


@dataclasses.dataclass
class Record:
    """What the run left for the tests: Prometheus (still running), the phases, the figures."""

    prometheus: PrometheusServer
    topic: str
    phases: dict[str, Phase]
    healthy_steady: float  # from here on while healthy, no alert is even pending
    filtered: int  # events filtered out, all of them read by the end of the outage
    lag: dict[str, Any]
    exit_code: int
    stderr: str

    def window(self, phase: str) -> tuple[float, float]:
        return self.phases[phase].start, self.phases[phase].end


class SteadyEvents:
    """Events at RATE a second in the background; one in DEBUG_EVERY is a "debug" event
    the mapping's where: filters out."""

    def __init__(self, bootstrap: str, topic: str):
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
        self.topic, self.count, self.filtered = topic, 0, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SteadyEvents:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="steady-events", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        for _ in range(10_000):  # bounded: 1000 s at most
            if self._stop.wait(0.1):
                return
            for _ in range(RATE // 10):
                i, self.count = self.count, self.count + 1
                debug = i % DEBUG_EVERY == DEBUG_EVERY - 1
                self.filtered += debug
                value = {"event": "page_view", "user": f"u-{i}", "kind": "debug" if debug else "web"}
                self.producer.produce(self.topic, json.dumps({**value, "properties": {"i": i}}).encode(), str(i))
            self.producer.poll(0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        assert self.producer.flush(30) == 0


def render_monitoring(bootstrap: str, base_url: str, topic: str, dlq: str, group: str, port: int) -> list[dict]:
    return render(
        [SCENARIOS["monitoring"]],
        {
            "apiKey.value": API_KEY,
            "prometheus.monitor.interval": SCRAPE,
            "prometheus.monitor.scrapeTimeout": SCRAPE,
            "config.kafka.bootstrap\\.servers": bootstrap,
            "config.kafka.group\\.id": group,
            "config.userflux": {
                "base_url": base_url,
                "linger_ms": 50,
                "request_timeout_s": 2,
                "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 500},
                # A cap far above the run's rate: its panels have their series, nothing waits.
                "max_events_per_second": 1000,
            },
            "config.metrics": {"port": port, "host": "127.0.0.1", "lag_interval_s": 1},
            "config.pipeline": {"shutdown_grace_s": 5, "commit_interval_ms": 200, "refused_exit_delay_s": 4},
            "config.dead_letter.topic": dlq,
            "config.mappings": [
                {
                    "topics": [topic],
                    "where": {"path": "kind", "not_in": ["debug"]},
                    "event": {"name": "event", "userId": "user", "properties": "properties"},
                }
            ],
        },
    )


def watch_alerts(prometheus: PrometheusServer, phase: Phase, wanted: set[str], timeout_s: float) -> None:
    """Poll the alerts until every wanted one has been firing (recorded with when)."""

    def seen() -> bool:
        for alert in prometheus.alerts():
            name = alert["labels"]["alertname"]
            if alert["state"] == "firing":
                phase.firing.setdefault(name, time.time())
        return wanted <= set(phase.firing)

    try:
        wait_until(seen, timeout_s, f"alerts {sorted(wanted)} firing", interval_s=0.5)
    except AssertionError:
        missing = sorted(wanted - set(phase.firing))
        raise AssertionError(f"{phase.name}: firing {sorted(phase.firing)}, not {missing}") from None


def answers(url: str) -> bool:
    try:
        return http_get(url)[0] == 200
    except OSError:
        return False


def broker_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    ends = end_offsets(bootstrap, topic, PARTITIONS)
    offsets = committed(bootstrap, group, topic, PARTITIONS)
    return {p: ends[p] - max(offsets[p], 0) for p in range(PARTITIONS)}


def stored_lag(prometheus: PrometheusServer, topic: str, at: float) -> dict[int, int]:
    result = prometheus.query(
        f'userflux_connector_consumer_lag_messages{{namespace="{NAMESPACE}", pod="{POD_NAME}", topic="{topic}"}}', at
    )
    return {int(s["metric"]["partition"]): int(float(s["value"][1])) for s in result}


@pytest.fixture(scope="module")
def run(kafka_bootstrap, standin_server, tmp_path_factory, prometheus_binary) -> Iterator[Record]:
    work = tmp_path_factory.mktemp("prometheus-e2e")
    topic = new_topic(kafka_bootstrap, "e2e", partitions=PARTITIONS)
    dlq = new_topic(kafka_bootstrap, "e2e-dlq")
    group, port = unique("e2e"), free_port()
    manifests = render_monitoring(kafka_bootstrap, standin_server.base_url, topic, dlq, group, port)
    deployment, service, monitor = (one(manifests, k) for k in ("Deployment", "Service", "ServiceMonitor"))
    template = pod_template(deployment)
    identity = PodIdentity(name=POD_NAME, namespace=NAMESPACE)
    env = container_env(template["spec"]["containers"][0], template, Objects(manifests, NAMESPACE), identity)
    config = write_config(work / "config.yaml", yaml.safe_load(connector_config(manifests)))

    rules = work / "userflux-connector.fast-rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": fast_rules(one(manifests, "PrometheusRule")["spec"]["groups"])}))
    targets = write_targets(
        work / "targets.json",
        [
            endpoint_target(
                Pod(POD_NAME, NAMESPACE, f"127.0.0.1:{port}", template["metadata"]["labels"]),
                Service(service["metadata"]["name"], NAMESPACE, service["metadata"]["labels"]),
            )
        ],
    )
    prometheus = PrometheusServer(work, scrape_configs(monitor, targets), [rules], binary=prometheus_binary)
    standin_server.reset()
    connector = ConnectorProcess(config, env=env, log_level="INFO")
    steady = SteadyEvents(kafka_bootstrap, topic)
    phases: dict[str, Phase] = {}
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 30, "the connector's /healthz")
        try:
            prometheus.start()
        except PrometheusError as exc:
            pytest.fail(f"Prometheus could not start:\n{exc}", pytrace=False)
        prometheus.wait_for_target_up({"job": "userflux-connector", "pod": POD_NAME})
        prometheus.wait_for_series(f'userflux_connector_messages_filtered_total{{topic="{topic}"}}')

        # healthy
        phases["healthy"] = healthy = Phase("healthy", time.time())
        steady.start()
        time.sleep(HEALTHY_S)
        healthy.end = time.time()

        # outage: UserFlux answers 503; invalid messages are dead-lettered all the same
        standin_server.fail_always(503)
        phases["outage"] = outage = Phase("outage", time.time())
        produce(kafka_bootstrap, topic, [b"{not json"] * 3, key=lambda i: str(i).encode())
        watch_alerts(prometheus, outage, REACHED["outage"], 60)
        steady.stop()
        filtered = steady.filtered  # every one of them read by the end of the outage (filtering needs no UserFlux)
        # The lag holds still (nothing produced, nothing delivered): the broker's figures
        # before and after Prometheus' sample bracket it.
        lag: dict[str, Any] = {}

        def still() -> bool:
            before = broker_lag(kafka_bootstrap, group, topic)
            time.sleep(2.5)  # a lag refresh (1 s) and a scrape (1 s) later
            at = time.time()
            lag.update(
                before=before,
                stored=stored_lag(prometheus, topic, at),
                after=broker_lag(kafka_bootstrap, group, topic),
                at=at,
            )
            return lag["before"] == lag["after"] == lag["stored"]

        wait_until(still, 30, "the lag Prometheus stored to hold still at the broker's", interval_s=0)
        outage.end = time.time()

        # recovery: UserFlux answers again, and refuses a few events (400: dead-lettered)
        standin_server.heal()
        standin_server.reject_events(lambda event: bool((event.get("properties") or {}).get("refuse")))
        phases["recovery"] = recovery = Phase("recovery", time.time())
        produce(
            kafka_bootstrap, topic, [{"event": "x", "user": f"r-{i}", "properties": {"refuse": True}} for i in range(3)]
        )
        wait_until(lambda: sum(stored_lag(prometheus, topic, time.time()).values()) == 0, 40, "the lag to drain")
        time.sleep(3)  # the refused requests' rates over a rate interval
        recovery.end = time.time()

        # refused: the write key is refused; the process reports it, lingers, exits 3
        standin_server.fail_always(401)
        phases["refused"] = refused = Phase("refused", time.time())
        produce(kafka_bootstrap, topic, [{"event": "x", "user": "k-1", "kind": "web"}])
        exit_code = connector.wait(30)
        watch_alerts(prometheus, refused, REACHED["refused"], 30)
        refused.end = time.time()
        record = Record(prometheus, topic, phases, healthy.start + 4, filtered, lag, exit_code, connector.stderr)
    except BaseException:
        prometheus.stop()
        raise
    finally:
        steady.stop()
        connector.kill()
        standin_server.reset()
    try:
        yield record  # Prometheus keeps what it stored for the tests' queries
    finally:
        prometheus.stop()


def test_the_test_rules_are_the_shipped_ones_rewritten_and_nothing_else(promtool, tmp_path):
    groups = one(render([SCENARIOS["monitoring"]]), "PrometheusRule")["spec"]["groups"]
    fast = fast_rules(groups)
    assert differences(groups, fast) == []
    assert differences(groups, groups) != []  # the check can fail: the shipped rules are not scaled
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump({"groups": fast}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_connector_ran_the_script_and_exited_3_on_the_refused_key(run):
    assert run.exit_code == 3, run.stderr[-3000:]


def test_prometheus_scraped_it_as_the_operator_would_label_it(run):
    (target,) = run.prometheus.targets()
    labels = target["labels"]
    assert (labels["job"], labels["release"], labels["namespace"], labels["pod"]) == (
        "userflux-connector",
        RELEASE,
        NAMESPACE,
        POD_NAME,
    )
    assert target["scrapeInterval"] == SCRAPE and target["scrapeUrl"].endswith("/metrics")


def test_every_alert_the_run_reaches_fires_in_its_phase(run):
    every = {rule["alert"] for rule in load_rules()}
    assert set().union(*REACHED.values()) | set(NOT_REACHED) == every, "an alert the test does not account for"
    for phase, wanted in REACHED.items():
        assert wanted <= set(run.phases[phase].firing), (phase, run.phases[phase].firing)
    # Every rule evaluated without error all along (a query error would keep an alert quiet).
    unhealthy = [
        (r["name"], r.get("lastError")) for g in run.prometheus.rules() for r in g["rules"] if r["health"] != "ok"
    ]
    assert unhealthy == []
    # Once UserFlux answers and the backlog is delivered, the stall is over.
    stalled = 'ALERTS{alertname="UserFluxConnectorStalled", alertstate="firing"}'
    assert run.prometheus.query(stalled, at=run.window("recovery")[1]) == []


def test_no_alert_fires_while_healthy(run):
    prometheus, (start, end) = run.prometheus, run.window("healthy")
    first = min(prometheus.query_range("up", start - 10, end, 1)[0]["values"])[0]
    span = int(math.ceil(end - first))
    fired = prometheus.query(f'ALERTS{{alertstate="firing"}}[{span}s]', at=end)
    assert fired == [], [s["metric"] for s in fired]
    # Past the first seconds (lag seen before the first delivery is scraped), not even pending.
    steady = int(end - run.healthy_steady)
    pending = prometheus.query(f"ALERTS[{steady}s]", at=end)
    assert pending == [], [s["metric"] for s in pending]


def test_the_counters_known_at_start_were_there_from_the_first_scrape_at_0(run):
    prometheus, (start, end) = run.prometheus, run.window("healthy")
    for name in (
        "messages_filtered_total",
        "dead_letter_failures_total",
        "dead_letters_total",
        "events_delivered_total",
    ):
        result = prometheus.query_range(f'userflux_connector_{name}{{topic="{run.topic}"}}', start - 30, end, 1)
        assert result, name
        for series in result:
            assert series["values"][0][1] == "0", (name, series["metric"], series["values"][:3])
    # increase() sees the first increment: the stored counter went from 0 to every filtered event.
    outage_end = run.window("outage")[1]
    filtered = prometheus.query_range(
        f'userflux_connector_messages_filtered_total{{topic="{run.topic}"}}', start - 30, outage_end, 1
    )
    values = [float(v) for _, v in filtered[0]["values"]]
    assert values[-1] - values[0] == run.filtered > 0


def test_the_lag_prometheus_stored_is_the_brokers_at_the_same_moment(run):
    lag = run.lag
    assert lag["stored"] == lag["before"] == lag["after"], lag
    assert sum(lag["stored"].values()) > 200  # the outage's backlog, above the test's threshold


def test_the_dashboard_variables_offer_the_namespace_pod_topic_and_destination(run):
    dashboard = load_dashboard()
    start, end = run.window("healthy")
    offered = {}
    variables = dashboard_variables(
        dashboard, {"datasource": "prometheus", "namespace": [NAMESPACE], "pod": [POD_NAME]}
    )
    intervals = compute_intervals(end - start, max_data_points=1000, scrape_interval=SCRAPE)
    for item in dashboard["templating"]["list"]:
        if item["type"] != "query":
            continue
        selector, label = label_values_query(item["query"]["query"])
        match = [interpolate(selector, variables, intervals)] if selector else []
        offered[item["name"]] = run.prometheus.label_values(label, match, start, end)
    # One destination: the top-level key's, "default".
    assert offered == {"namespace": [NAMESPACE], "pod": [POD_NAME], "topic": [run.topic], "destination": ["default"]}


def panel_queries() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every panel query."""
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in dashboard_panels(load_dashboard())
        for target in panel.get("targets", [])
    ]


def test_every_panel_is_accounted_for():
    names = {title for title, _, _ in panel_queries()} | {f"{title} {ref}" for title, ref, _ in panel_queries()}
    assert set(PANELS) <= names, set(PANELS) - names


@pytest.mark.parametrize("phase", ["healthy", "outage", "recovery", "refused"])
def test_every_panel_query_shows_what_the_phase_has_to_show(run, phase):
    dashboard = load_dashboard()
    start, end = run.window(phase)
    variables = dashboard_variables(
        dashboard, {"datasource": "prometheus", "namespace": [NAMESPACE], "pod": [POD_NAME], "topic": ALL}
    )
    # Grafana's data source "Scrape interval" set to the scrape job's; a panel 1000 points wide.
    intervals = compute_intervals(end - start, max_data_points=1000, scrape_interval=SCRAPE)
    wrong = []
    for title, ref, expr in panel_queries():
        expected = PANELS.get(f"{title} {ref}", PANELS.get(title, {"healthy": DATA})).get(phase)
        if expected is None:
            continue
        query = interpolate(expr, variables, intervals)
        result = run.prometheus.query_range(query, start, end, intervals.step_ms / 1000)
        values = [float(v) for series in result for _, v in series["values"]]
        got = "empty" if not result else DATA if any(v > 0 for v in values if not math.isnan(v)) else SERIES
        if expected.startswith("empty"):
            ok = got == "empty"
        else:
            ok = got == DATA or (expected == SERIES and got == SERIES)
        if not ok:
            wrong.append(f"{title} {ref}: {got}, expected {expected.split(':')[0]}: {query}")
    assert wrong == [], "\n".join(wrong)
