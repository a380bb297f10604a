"""Where the connector's CPU per event goes, found by taking parts away.

    python -m tests.benchmark.floor [--events N] [--runs R]      (make bench-floor)

The real pipeline (connector/pipeline.py: source, mapping, batching, offsets, commits) runs
in a process of its own over a preloaded backlog, four ways, interleaved run by run:

- ``loop``: a sender that answers every batch at once, on the loop's own thread. No HTTP,
  no thread hand-off: what consuming, mapping, batching, marking done and committing cost.
  No concurrency model can bring the connector below this.
- ``inline``: the real sender (the request on the connector's own connection, the retry policy)
  to the benchmark's sink, called on the loop's thread: HTTP's cost without a hand-off. One
  request at a time, so only a loopback sink keeps it busy.
- ``threads``: every request on the ``max_in_flight`` (8) sender threads, as the connector
  sent before connector/sink/direct.py: what the hand-offs between threads cost.
- ``direct``: as the CLI runs it: the first request of each batch sent from the loop's own
  thread without blocking it (direct.py), the sender threads only for retries and splits
  (none on loopback).

``inline`` minus ``loop`` is what sending costs; ``threads`` minus ``inline`` is what running
the senders on threads costs. CPU is the process's (user + system) between 10% and 90% of the
events, as in the main benchmark; scenario (a) of ``make bench`` measures the same as
``direct`` through the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from tests.benchmark.errors import BenchError
from tests.benchmark.events import preload
from tests.benchmark.run import API_KEY, WINDOW
from tests.benchmark.scenarios import SCENARIOS
from tests.benchmark.sink import SinkProcess
from tests.support.kafka_broker import REPO_ROOT, KafkaBroker, create_topic, ensure_jars

MODES = ("loop", "inline", "threads", "direct")
TOPIC = "floor-events"
DEAD_LETTER_TOPIC = "floor-dead-letters"


def child(
    mode: str,
    bootstrap: str,
    base_url: str,
    events: int,
    topic: str = TOPIC,
    dead_letter_topic: str = DEAD_LETTER_TOPIC,
    in_flight: int = 8,
) -> dict[str, Any]:
    """One run, in this process: the pipeline until ``events`` are delivered."""
    import yaml

    from connector.cli import _tune_gc
    from connector.pipeline import Pipeline
    from connector.sink.sender import BatchResult
    from connector.startup import parse_config

    config = SCENARIOS["a"].config(
        bootstrap=bootstrap,
        base_url=base_url,
        group=f"floor-{uuid.uuid4().hex}",
        topics=[topic],
        metrics_port=0,
        dead_letter_topic=dead_letter_topic,
    )
    config["userflux"]["api_key"] = API_KEY
    config["userflux"]["max_in_flight"] = in_flight
    config["metrics"] = {"enabled": False}
    pipeline = Pipeline(parse_config(yaml.safe_dump(config)))
    _tune_gc()  # as `userflux-connector run` does
    (pool,) = pipeline.pool.pools.values()  # one destination: one sender pool
    send = pool.sender.send
    if mode == "loop":

        def send(batch: Any) -> BatchResult:
            return BatchResult(batch, delivered=list(batch.items), delivered_at=time.time())
    elif mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    marks: dict[float, tuple[float, float, int]] = {}
    delivered = 0

    def count(result: BatchResult) -> BatchResult:
        nonlocal delivered
        delivered += len(result.delivered)
        for share in WINDOW:
            if share not in marks and delivered >= share * events:
                marks[share] = (time.monotonic(), time.process_time(), delivered)
        if delivered >= events:
            pipeline.request_stop()
        return result

    def counted(batch: Any) -> BatchResult:
        return count(send(batch))

    if mode == "direct":  # counted as the pipeline takes each result
        complete = pipeline._complete

        def completed(result: BatchResult) -> None:
            complete(count(result))

        pipeline._complete = completed  # type: ignore[method-assign]
    elif mode == "threads":

        class Counted:  # the sender the pool's threads call
            def send(self, batch: Any, tried: Any = None) -> BatchResult:
                return counted(batch)

        pipeline.direct = None
        pool.sender = Counted()
    else:

        class Inline:  # the pool's interface, on the loop's thread
            def submit(self, batch: Any) -> None:
                pipeline.completions.put(counted(batch))

            def close(self, timeout_s: float = 0.0) -> None:
                pass

        pipeline.direct = None
        pipeline.pool.close()
        pipeline.pool = Inline()  # type: ignore[assignment]
    code = pipeline.run()
    if code != 0 or len(marks) < len(WINDOW):
        raise SystemExit(f"the pipeline exited with code {code} after {delivered} events")
    (start_at, start_cpu, start_n), (end_at, end_cpu, end_n) = marks[WINDOW[0]], marks[WINDOW[1]]
    return {
        "mode": mode,
        "cpu_us_per_event": (end_cpu - start_cpu) / (end_n - start_n) * 1e6,
        "events_per_s": (end_n - start_n) / (end_at - start_at),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="events preloaded (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode (default %(default)s)")
    parser.add_argument(
        "--sink-delay-ms",
        type=float,
        default=0.0,
        help="the sink answers this long after each request (default %(default)s)",
    )
    parser.add_argument(
        "--in-flight", type=int, default=8, help="requests open at once: max_in_flight (default %(default)s)"
    )
    parser.add_argument("--modes", default=",".join(MODES), help="which modes (default %(default)s)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "BOOTSTRAP", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, bootstrap, url = args.child
        print(json.dumps(child(mode, bootstrap, url, args.events, in_flight=args.in_flight)))
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: choose among {', '.join(MODES)}")
    work = pathlib.Path(tempfile.mkdtemp(prefix="userflux-floor-"))
    broker: KafkaBroker | None = None
    found: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    try:
        broker = KafkaBroker(work / "broker", ensure_jars(), heap_mb=1024).start()
        create_topic(broker.bootstrap_servers, TOPIC, partitions=6)
        create_topic(broker.bootstrap_servers, DEAD_LETTER_TOPIC, partitions=1)
        produced = preload(broker.bootstrap_servers, TOPIC, args.events)
        print(f"== {produced.count:,} events preloaded; {args.runs} runs of each mode, interleaved")
        with SinkProcess(API_KEY, delay_ms=args.sink_delay_ms, log_path=str(work / "sink.log")) as sink:
            for index in range(1, args.runs + 1):
                for mode in modes:
                    run = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "tests.benchmark.floor",
                            "--events",
                            str(produced.count),
                            "--in-flight",
                            str(args.in_flight),
                            "--child",
                            mode,
                            broker.bootstrap_servers,
                            sink.base_url,
                        ],
                        cwd=REPO_ROOT,
                        capture_output=True,
                        text=True,
                        timeout=120 + produced.count / 1000,
                    )
                    if run.returncode != 0:
                        raise BenchError(f"{mode} run {index} failed:\n{run.stderr[-3000:]}")
                    result = json.loads(run.stdout.strip().splitlines()[-1])
                    found[mode].append(result)
                    print(
                        f"   {mode:6} run {index}: {result['cpu_us_per_event']:.1f} µs CPU/event, "
                        f"{result['events_per_s']:,.0f} events/s"
                    )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    # With a sink that waits, throughput is bounded by batch_size × requests open / round trip.
    bound = 50 * args.in_flight / (args.sink_delay_ms / 1000) if args.sink_delay_ms else None
    print(f"== medians ±half the range over {args.runs} runs ({os.cpu_count()} cores)")
    for mode in modes:
        cpu = [r["cpu_us_per_event"] for r in found[mode]]
        rate = statistics.median(r["events_per_s"] for r in found[mode])
        median = statistics.median(cpu)
        share = f", {rate / bound:.0%} of the bound {bound:,.0f}/s" if bound and mode != "loop" else ""
        print(
            f"{mode:6} {median:5.1f} µs CPU/event ±{(max(cpu) - min(cpu)) / 2 / median:.0%}, "
            f"{rate:8,.0f} events/s{share}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
