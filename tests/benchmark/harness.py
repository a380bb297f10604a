"""``make bench``: one invocation of the benchmark, from a fresh broker to the result file.

Starts a local Kafka broker, preloads the backlog once (every run reads it whole under a
consumer group of its own), measures the sink's capacity, runs each chosen scenario
``--runs`` times, prints a table of medians with their spread and writes every figure to a
JSON file. Everything it starts (broker, sink, connector, profiler) is stopped on the way
out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

import yaml

from tests.benchmark import capacity, procstat, report
from tests.benchmark.baseline_process import baseline_python
from tests.benchmark.errors import BenchError
from tests.benchmark.events import avro_encoder, preload
from tests.benchmark.profile import format_summary, py_spy
from tests.benchmark.run import API_KEY, Setup, as_dict, run_once
from tests.benchmark.scenarios import SCENARIOS
from tests.support.kafka_broker import REPO_ROOT, BrokerError, KafkaBroker, create_topic, ensure_jars
from tests.support.schema_registry import RegistryError, SchemaRegistry, ensure_app

BACKLOG_TOPIC = "bench-events"
AVRO_TOPIC = "bench-events-avro"  # the same events, written by AvroSerializer, for (v)
DEAD_LETTER_TOPIC = "bench-dead-letters"
RESULTS_DIR = REPO_ROOT / ".cache" / "bench"


def _scenarios(text: str) -> list[str]:
    keys = [k.strip() for k in text.replace(",", " ").split() if k.strip()]
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"scenarios are {', '.join(SCENARIOS)}; got {text!r}")
    return keys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmark",
        description="Measure the connector: the real CLI, a real Kafka broker and a fast UserFlux sink on this "
        "machine. Scenarios: " + "; ".join(f"({s.key}) {s.title}" for s in SCENARIOS.values()) + ".",
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events preloaded (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default %(default)s)")
    parser.add_argument(
        "--scenario", type=_scenarios, default=list(SCENARIOS), help="which scenarios, e.g. 'a' or 'a,c' (default: all)"
    )
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topics (default %(default)s)")
    parser.add_argument(
        "--live-rate",
        type=int,
        default=5_000,
        help="events/s produced for the latency measurement (default %(default)s)",
    )
    parser.add_argument(
        "--live-seconds",
        type=float,
        default=10.0,
        help="how long they are produced; 0 skips the latency measurement (default %(default)s)",
    )
    parser.add_argument(
        "--outage-seconds",
        type=float,
        default=10.0,
        help="(c): how long UserFlux stays down after the connector paused (default %(default)s)",
    )
    parser.add_argument(
        "--run-timeout", type=float, default=None, help="seconds a run may take (default: 120 + 1 ms per event)"
    )
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        default=None,
        help="the JSON result file (default .cache/bench/results-<date>.json)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the connector with py-spy during each run's window (its figures get a little "
        "worse) and print where the time went; raw profiles go beside the result file",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs, broker data)")
    parser.add_argument(
        "--set",
        dest="overrides",
        type=_override,
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a connector setting for every run, e.g. userflux.max_in_flight=4 or "
        "kafka.queued.max.messages.kbytes=8192 (the value is read as YAML); repeatable",
    )
    return parser


def _override(text: str) -> tuple[str, str, Any]:
    name, sep, value = text.partition("=")
    section, dot, key = name.partition(".")
    if not sep or not dot or not key:
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE, found {text!r}")
    return section, key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.events < 1_000 or args.runs < 1 or args.partitions < 1:
        print("error: --events must be at least 1000, --runs and --partitions at least 1", file=sys.stderr)
        return 2
    started_at = datetime.datetime.now().astimezone()
    output = args.output or RESULTS_DIR / f"results-{started_at:%Y%m%d-%H%M%S}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    profile_dir = output.parent if args.profile else None
    try:  # fail now, not after the preload
        if args.profile:
            py_spy()
        if any(SCENARIOS[key].baseline_threads for key in args.scenario):
            baseline_python()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    work = pathlib.Path(tempfile.mkdtemp(prefix="userflux-bench-"))
    broker: KafkaBroker | None = None
    registry: SchemaRegistry | None = None
    try:
        step(f"starting a local Kafka broker (work directory {work})")
        broker = KafkaBroker(work / "broker", ensure_jars(), heap_mb=1024).start()
        create_topic(broker.bootstrap_servers, BACKLOG_TOPIC, partitions=args.partitions)
        create_topic(broker.bootstrap_servers, DEAD_LETTER_TOPIC, partitions=1)

        step("measuring the sink's capacity")
        sink_capacity = capacity.measure(API_KEY)
        print(
            f"   {sink_capacity['events_per_s']:,.0f} events/s from {sink_capacity['client_threads']} client "
            f"threads; {sink_capacity['cpu_us_per_event']:.2f} µs of sink CPU per event, so one core takes "
            f"{sink_capacity['events_per_s_per_core']:,.0f} events/s"
        )

        step(f"preloading {args.events:,} events into {BACKLOG_TOPIC} ({args.partitions} partitions)")
        began = time.monotonic()
        produced = preload(broker.bootstrap_servers, BACKLOG_TOPIC, args.events)
        took = time.monotonic() - began
        print(
            f"   {produced.count:,} events, {produced.bytes / produced.count:.0f} bytes on average, "
            f"in {took:.1f} s ({produced.count / took:,.0f}/s)"
        )

        avro_topic = registry_url = None
        if any(SCENARIOS[key].value_format == "avro" for key in args.scenario):
            step("starting the schema registry, preloading the same events in Avro into " + AVRO_TOPIC)
            registry = SchemaRegistry(work / "registry", ensure_app()).start()
            registry_url = registry.url
            avro_topic = AVRO_TOPIC
            create_topic(broker.bootstrap_servers, AVRO_TOPIC, partitions=args.partitions)
            began = time.monotonic()
            in_avro = preload(
                broker.bootstrap_servers, AVRO_TOPIC, args.events, encode=avro_encoder(registry_url, AVRO_TOPIC)
            )
            took = time.monotonic() - began
            if in_avro.types != produced.types:
                raise BenchError("the Avro backlog does not hold the same events as the JSON one")
            print(f"   {in_avro.bytes / in_avro.count:.0f} bytes on average, in {took:.1f} s (AvroSerializer)")

        setup = Setup(
            bootstrap=broker.bootstrap_servers,
            backlog_topic=BACKLOG_TOPIC,
            partitions=args.partitions,
            produced=produced,
            dead_letter_topic=DEAD_LETTER_TOPIC,
            work_dir=work,
            live_rate=args.live_rate,
            live_seconds=args.live_seconds,
            outage_s=args.outage_seconds,
            timeout_s=args.run_timeout or 120 + args.events / 1000,
            profile_dir=profile_dir,
            overrides=tuple(args.overrides),
            avro_topic=avro_topic,
            registry_url=registry_url,
        )
        results: dict[str, Any] = {
            "date": started_at.isoformat(timespec="seconds"),
            "machine": procstat.machine(),
            "load_average_at_start": procstat.load_average(),
            "setup": as_dict(setup),
            "sink_capacity": sink_capacity,
            "scenarios": {},
        }
        # Rounds, each running every scenario once: the machine's speed drifts by 10 to 20% over
        # minutes, and interleaving spreads that drift over every scenario alike, so that their
        # medians (the connector's and the baseline's, say) compare fairly.
        runs: dict[str, list[dict[str, Any]]] = {key: [] for key in args.scenario}
        for index in range(1, args.runs + 1):
            for key in args.scenario:
                scenario = SCENARIOS[key]
                step(f"({key}) {scenario.title}: run {index} of {args.runs}")
                result = run_once(scenario, setup, index)
                result["load_average"] = procstat.load_average()
                runs[key].append(result)
                print("   " + _run_line(result))
                if "profile" in result:
                    print(format_summary(result["profile"]))
                results["scenarios"][key] = {
                    "title": scenario.title,
                    "settings": scenario.userflux,
                    "sink_delay_ms": scenario.sink_delay_ms,
                    "baseline_threads": scenario.baseline_threads,
                    "summary": report.summarize(runs[key]),
                    "runs": runs[key],
                }
                report.write(results, output)  # a later failure keeps what was measured
        results["load_average_at_end"] = procstat.load_average()
        report.write(results, output)
        step(
            f"results (median ±half the range over {args.runs} runs; {results['machine']['cores']} cores, "
            f"load average {results['load_average_at_start'][0]} at start, "
            f"{results['load_average_at_end'][0]} at the end)"
        )
        print(report.table(results))
        print(f"\nall figures: {output}")
        return 0
    except (BenchError, BrokerError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if registry is not None:
            registry.stop()
        if broker is not None:
            broker.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run_line(r: dict[str, Any]) -> str:
    parts = [
        f"{r['events_per_s']:,.0f} events/s",
        f"{r['cpu_us_per_event']:.1f} µs CPU/event",
        f"peak RSS {r['peak_rss_mb']:.0f} MB",
        f"{r['requests_per_s']:,.0f} req/s",
        f"batch {r['mean_batch']:.1f}",
        f"a request {r['mean_request_ms']:.1f} ms" if r.get("mean_request_ms") else "a request -",
        f"process {r['connector_cores']:.2f} cores",
        "CPU µs/event by thread: "
        + " ".join(f"{group} {us:.1f}" for group, us in r.get("cpu_us_per_event_by_thread", {}).items()),
        f"sink {r['sink_cores']:.2f} cores",
    ]
    latency = r.get("latency_ms")
    if latency and latency.get("count"):
        parts.append(f"latency p50 {latency['p50']} ms, p99 {latency['p99']} ms at {latency['rate']:,}/s")
    if "share_of_bound" in r:
        parts.append(f"{r['share_of_bound']:.0%} of the bound")
    if "outage" in r:
        parts.append(f"RSS {r['outage']['rss_mb']:.0f} MB while down")
    if r.get("duplicates"):
        parts.append(f"{r['duplicates']} duplicates")
    return ", ".join(parts)


def step(text: str) -> None:
    print(f"== {text}", flush=True)
