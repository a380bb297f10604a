"""One measured run of one scenario: the real CLI over the preloaded backlog, then a steady rate.

1. A fresh sink and a fresh consumer group (so the whole backlog is there to read), and an
   empty "live" topic the connector also subscribes to.
2. (c) only: the sink answers 503 until the connector has paused reading at
   ``max_pending_messages``, and for ``outage_s`` more; then it comes up.
3. Throughput: the sink's counters and the connector's CPU (/proc) are sampled while the
   backlog drains; the figures are taken between 10% and 90% of the expected events, so
   start-up and the final drain do not blur them. Then every event must have arrived and
   the group's committed offsets must reach the end of every partition.
4. Latency: the backlog's Kafka timestamps only say how long the backlog waited, so
   latency is measured afterwards, on events produced at a steady rate into the live topic
   (each stamped with its Kafka timestamp), from that timestamp to the sink's 204.
5. Peak RSS (VmHWM) of the connector, then SIGTERM: it must exit 0.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.benchmark import procstat
from tests.benchmark.baseline_process import BaselineProcess
from tests.benchmark.errors import BenchError
from tests.benchmark.events import Produced, avro_encoder, produce_at_rate
from tests.benchmark.profile import Profiler, summary
from tests.benchmark.scenarios import API_KEY_VARIABLE, Scenario
from tests.benchmark.sink import SinkProcess
from tests.support.connector_process import ConnectorProcess, write_config
from tests.support.kafka_broker import create_topic
from tests.support.kafka_tools import all_committed
from tests.support.service_process import free_ports

API_KEY = "benchmark-write-key"
WINDOW = (0.10, 0.90)  # the steady middle of a run, in shares of the expected events
POLL_S = 0.05
# What (c) reads from the connector's /metrics to know it holds all it will while UserFlux is down.
PAUSED = "userflux_connector_consumption_paused"
PENDING = "userflux_connector_pending_messages"
CONSUMED = "userflux_connector_messages_consumed_total"
REQUEST_SECONDS = "userflux_connector_request_duration_seconds"


@dataclass(frozen=True)
class Setup:
    """What every run of an invocation shares."""

    bootstrap: str
    backlog_topic: str
    partitions: int
    produced: Produced
    dead_letter_topic: str
    work_dir: pathlib.Path
    live_rate: int = 5_000
    live_seconds: float = 10.0
    outage_s: float = 10.0
    timeout_s: float = 600.0
    profile_dir: pathlib.Path | None = None
    overrides: tuple[tuple[str, str, Any], ...] = ()  # (section, key, value) set over every scenario's config
    avro_topic: str | None = None  # the same backlog in Avro, for (v)
    registry_url: str | None = None

    def backlog(self, scenario: Scenario) -> str:
        if scenario.value_format == "avro":
            if self.avro_topic is None:
                raise BenchError("the Avro backlog was not preloaded")
            return self.avro_topic
        return self.backlog_topic


@dataclass
class Sample:
    at: float
    events: int
    requests: int
    connector_cpu_s: float
    sink_cpu_s: float
    thread_cpu_s: dict[str, float]  # the connector's, by thread group (procstat.thread_group)


def run_once(scenario: Scenario, setup: Setup, index: int) -> dict[str, Any]:
    tag = f"{scenario.key}{index}-{uuid.uuid4().hex[:6]}"
    live_topic = f"bench-live-{tag}"
    create_topic(setup.bootstrap, live_topic, partitions=setup.partitions)
    metrics_port = free_ports(1)[0]
    expected = scenario.expected(setup.produced)
    deadline = time.monotonic() + setup.timeout_s
    result: dict[str, Any] = {"run": index, "expected_events": expected, "filtered": setup.produced.count - expected}
    with SinkProcess(
        API_KEY, delay_ms=scenario.sink_delay_ms, down=scenario.outage, log_path=str(setup.work_dir / f"sink-{tag}.log")
    ) as sink:
        group = f"bench-{tag}"
        config = scenario.config(
            bootstrap=setup.bootstrap,
            base_url=sink.base_url,
            group=group,
            topics=[setup.backlog(scenario), live_topic],
            metrics_port=metrics_port,
            dead_letter_topic=setup.dead_letter_topic,
            registry_url=setup.registry_url,
        )
        for section, key, value in setup.overrides:
            config.setdefault(section, {})[key] = value
        path = write_config(setup.work_dir / f"connector-{tag}.yaml", config)
        if scenario.baseline_threads:
            process: ConnectorProcess | BaselineProcess = BaselineProcess(
                bootstrap=setup.bootstrap,
                group=group,
                topics=[setup.backlog(scenario), live_topic],
                base_url=sink.base_url,
                api_key=API_KEY,
                threads=scenario.baseline_threads,
                log_path=setup.work_dir / f"baseline-{tag}.log",
            )
        else:
            process = ConnectorProcess(path, env={API_KEY_VARIABLE: API_KEY}, log_level="INFO")
        with process as connector:
            pid, alive = connector.process.pid, _liveness(connector)

            def all_committed_in(topic: str) -> None:
                _wait(
                    lambda: all_committed(setup.bootstrap, group, topic, setup.partitions),
                    deadline,
                    f"every offset of {topic} to be committed",
                    alive,
                )

            if scenario.outage:
                result.update(
                    _outage(
                        sink,
                        pid,
                        f"http://127.0.0.1:{metrics_port}/metrics",
                        setup.produced.count,
                        setup.outage_s,
                        deadline,
                        alive,
                    )
                )
            profile_path = setup.profile_dir / f"profile-{tag}.txt" if setup.profile_dir else None
            samples, profiled_s = _follow(sink, pid, expected, deadline, alive, profile_path)
            result.update(_window(samples, expected))
            if not scenario.baseline_threads:  # the baseline has no metrics
                result["mean_request_ms"] = _mean_request_ms(f"http://127.0.0.1:{metrics_port}/metrics")
            if profile_path is not None:
                result["profile"] = {"path": str(profile_path), **summary(profile_path, profiled_s)}
            all_committed_in(setup.backlog(scenario))
            if setup.live_seconds > 0:
                result["latency_ms"] = _latency(scenario, setup, sink, live_topic, expected, deadline, alive)
                all_committed_in(live_topic)
            # The kernel updates VmHWM lazily (per-thread RSS counters, pages freed by madvise), so an RSS
            # sampled earlier can exceed it by a few pages: the peak is the larger of the two.
            sampled = result.get("outage", {}).get("rss_mb", 0.0)
            result["peak_rss_mb"] = max(procstat.memory_mb(pid)["peak"], sampled)
            stats = sink.stats()
            try:
                code = connector.stop(timeout_s=60)
            except AssertionError as exc:  # how the test helper says it did not exit in time
                raise BenchError(str(exc)) from None
            if code != 0:
                raise BenchError(f"the process measured exited with code {code}:\n{connector.stderr[-3000:]}")
    delivered_expected = expected + result.get("latency_ms", {}).get("produced", 0)
    result["duplicates"] = stats["events"] - delivered_expected
    result["refused"] = stats["refused"]
    result["sink_connections"] = stats["connections"]
    bound = scenario.pipelining_bound()
    if bound:
        result["bound_events_per_s"] = bound
        result["share_of_bound"] = result["events_per_s"] / bound
    return result


def _liveness(connector: ConnectorProcess | BaselineProcess) -> Callable[[], None]:
    def check() -> None:
        if not connector.running():
            raise BenchError(
                f"the process measured exited with code {connector.process.poll()}:\n{connector.stderr[-3000:]}"
            )

    return check


def _wait(
    predicate: Callable[[], Any], deadline: float, what: str, alive: Callable[[], None], interval_s: float = 0.25
) -> Any:
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        alive()
        time.sleep(interval_s)
    raise BenchError(f"timed out waiting for {what}")


def _follow(
    sink: SinkProcess,
    pid: int,
    expected: int,
    deadline: float,
    alive: Callable[[], None],
    profile_path: pathlib.Path | None,
) -> tuple[list[Sample], float]:
    """Sample until the sink has every expected event; profile the window if asked.
    Returns the samples and the seconds profiled."""
    samples: list[Sample] = []
    profiler: Profiler | None = None
    try:
        while time.monotonic() < deadline:
            stats = sink.stats()
            samples.append(
                Sample(
                    time.monotonic(),
                    stats["events"],
                    stats["requests"],
                    procstat.cpu_seconds(pid),
                    procstat.cpu_seconds(sink.pid),
                    procstat.thread_cpu_seconds(pid),
                )
            )
            events = stats["events"]
            wrong = {status: n for status, n in stats["refused"].items() if status != "503"}
            if wrong:
                raise BenchError(
                    f"the sink refused requests (HTTP status: count) {wrong}; "
                    "its log in the work directory says why (--keep keeps it)"
                )
            if profile_path and profiler is None and events >= WINDOW[0] * expected:
                profiler = Profiler(pid, profile_path)
            if profiler is not None and profiler.running and events >= WINDOW[1] * expected:
                profiler.stop()
            if events >= expected:
                return samples, profiler.seconds if profiler is not None else 0.0
            alive()
            time.sleep(POLL_S)
    finally:
        if profiler is not None:
            profiler.stop()
    raise BenchError(f"timed out: the sink got {samples[-1].events if samples else 0} of {expected} events")


def _window(samples: list[Sample], expected: int) -> dict[str, Any]:
    """Throughput, CPU and requests between the first samples past 10% and past 90% of the events."""
    start = next(s for s in samples if s.events >= WINDOW[0] * expected)
    end = next(s for s in samples if s.events >= WINDOW[1] * expected)
    events, seconds = end.events - start.events, end.at - start.at
    if events <= 0 or seconds <= 0:
        raise BenchError(
            f"the steady window holds {events} events in {seconds:.2f} s: too few to measure; use more events"
        )
    requests = end.requests - start.requests
    return {
        "events_per_s": events / seconds,
        "cpu_us_per_event": (end.connector_cpu_s - start.connector_cpu_s) / events * 1e6,
        "connector_cores": (end.connector_cpu_s - start.connector_cpu_s) / seconds,
        "cpu_us_per_event_by_thread": {
            group: (end.thread_cpu_s[group] - start.thread_cpu_s.get(group, 0.0)) / events * 1e6
            for group in sorted(end.thread_cpu_s)
        },
        "requests_per_s": requests / seconds,
        "mean_batch": events / requests if requests else 0.0,
        "sink_cores": (end.sink_cpu_s - start.sink_cpu_s) / seconds,
        "window": {"events": events, "seconds": seconds},
        "total_seconds": samples[-1].at - samples[0].at,
    }


def _latency(
    scenario: Scenario,
    setup: Setup,
    sink: SinkProcess,
    live_topic: str,
    before: int,
    deadline: float,
    alive: Callable[[], None],
) -> dict[str, Any]:
    sink.record_latency()
    encode = None
    if scenario.value_format == "avro":
        assert setup.registry_url is not None
        encode = avro_encoder(setup.registry_url, live_topic)
    produced = produce_at_rate(setup.bootstrap, live_topic, setup.live_rate, setup.live_seconds, encode=encode)
    want = before + scenario.expected(produced)
    _wait(
        lambda: sink.stats()["events"] >= want,
        min(deadline, time.monotonic() + 60),
        "the live events to arrive",
        alive,
        interval_s=0.1,
    )
    latency = sink.latency()
    return {**latency, "rate": setup.live_rate, "seconds": setup.live_seconds, "produced": scenario.expected(produced)}


def _outage(
    sink: SinkProcess,
    pid: int,
    metrics_url: str,
    backlog: int,
    seconds: float,
    deadline: float,
    alive: Callable[[], None],
) -> dict[str, Any]:
    """Keep the sink down until the connector has paused reading (or read a backlog smaller than
    ``max_pending_messages``), and ``seconds`` more; then bring it up."""
    started = time.monotonic()

    def holding() -> bool:
        found = _metrics(metrics_url, PAUSED, CONSUMED)
        return found.get(PAUSED) == 1 or found.get(CONSUMED, 0) >= backlog

    _wait(holding, deadline, "the connector to pause reading while UserFlux is down", alive)
    until = time.monotonic() + seconds
    rss = 0.0
    while time.monotonic() < until:
        alive()
        rss = max(rss, procstat.memory_mb(pid)["rss"])
        time.sleep(0.2)
    pending = _metrics(metrics_url, PENDING).get(PENDING)  # a gauge refreshed every second: read it late
    sink.up()
    return {
        "outage": {
            "seconds": time.monotonic() - started,
            "pending_while_down": pending,
            "rss_mb": rss,
            "refused": sink.stats()["refused"],
        }
    }


def _mean_request_ms(metrics_url: str) -> float | None:
    """How long a request took on average, as the connector saw it (its histogram, since start)."""
    found = _metrics(metrics_url, REQUEST_SECONDS + "_sum", REQUEST_SECONDS + "_count")
    count = found.get(REQUEST_SECONDS + "_count")
    return found[REQUEST_SECONDS + "_sum"] / count * 1000 if count else None


def _metrics(url: str, *names: str) -> dict[str, float]:
    """The named metrics from the connector's /metrics, each summed over its labels; those it
    does not show (yet) are left out."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def as_dict(setup: Setup) -> dict[str, Any]:
    found = dataclasses.asdict(setup)
    found["produced"] = {
        "count": setup.produced.count,
        "mean_bytes": setup.produced.bytes / max(1, setup.produced.count),
        "types": dict(setup.produced.types),
    }
    for key in ("work_dir", "profile_dir"):
        found[key] = str(found[key]) if found[key] else None
    return found
