"""Where the connector's CPU per event goes, found by taking parts away.

    python -m tests.benchmark.floor [--events N] [--runs R]      (make bench-floor)

The real pipeline (connector/pipeline.py: source, mapping, batching, offsets, commits) runs
in a process of its own over a preloaded backlog, three ways, interleaved run by run:

- ``loop``: a sender that answers every batch at once, on the loop's own thread. No HTTP,
  no thread hand-off: what consuming, mapping, batching, marking done and committing cost.
  No concurrency model can bring the connector below this.
- ``inline``: the real sender (the request, httpx on the lean transport, the retry policy)
  to the benchmark's sink, called on the loop's thread: HTTP's cost without a hand-off. One
  request at a time, so only a loopback sink keeps it busy.
- ``pool``: as the CLI runs it, ``max_in_flight`` (8) sender threads.
- ``evented``: a prototype of another design, not the connector's: the loop's own thread
  keeps 8 requests open on an asyncio event loop (httpcore's async HTTP/1.1 on the minimal
  backend of senders.py), run for a moment at every step of the pipeline. It sends plain
  HTTP and expects 204 (no retry, no gate, no TLS): what that design would cost per event.

``inline`` minus ``loop`` is what sending costs; ``pool`` minus ``inline`` is what running the
senders on threads costs. CPU is the process's (user + system) between 10% and 90% of the
events, as in the main benchmark; scenario (a) of ``make bench`` measures the same as
``pool`` through the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections import deque
from typing import Any, Callable

import httpcore
import httpx

from tests.benchmark.errors import BenchError
from tests.benchmark.events import preload
from tests.benchmark.run import API_KEY, WINDOW
from tests.benchmark.scenarios import SCENARIOS
from tests.benchmark.sink import SinkProcess
from tests.support.kafka_broker import REPO_ROOT, KafkaBroker, create_topic, ensure_jars

MODES = ("loop", "inline", "pool", "evented")
TOPIC = "floor-events"
DEAD_LETTER_TOPIC = "floor-dead-letters"


def child(mode: str, bootstrap: str, base_url: str, events: int, topic: str = TOPIC,
          dead_letter_topic: str = DEAD_LETTER_TOPIC, in_flight: int = 8) -> dict[str, Any]:
    """One run, in this process: the pipeline until ``events`` are delivered."""
    import yaml

    from connector.cli import _tune_gc
    from connector.config.load import parse_settings
    from connector.pipeline import Pipeline
    from connector.sink.sender import BatchResult

    config = SCENARIOS["a"].config(bootstrap=bootstrap, base_url=base_url, group=f"floor-{uuid.uuid4().hex}",
                                   topics=[topic], metrics_port=0, dead_letter_topic=dead_letter_topic)
    config["userflux"]["api_key"] = API_KEY
    config["userflux"]["max_in_flight"] = in_flight
    config["metrics"] = {"enabled": False}
    pipeline = Pipeline(parse_settings(yaml.safe_dump(config)))
    _tune_gc()  # as `userflux-connector run` does
    send = pipeline.pool.sender.send
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

    if mode == "evented":
        evented = EventedPool(base_url, pipeline.completions, count, in_flight)
        pipeline.pool.close()
        pipeline.pool = evented  # type: ignore[assignment]
        drain = pipeline._drain

        def pumped(wait_s: float = 0.0) -> None:  # the requests move on at every step
            evented.pump(wait_s if pipeline.completions.empty() else 0.0)
            drain(0.0)

        pipeline._drain = pumped  # type: ignore[method-assign]
    elif mode == "pool":
        class Counted:  # the sender the pool's threads call
            def send(self, batch: Any) -> BatchResult:
                return counted(batch)

        pipeline.pool.sender = Counted()
    else:
        class Inline:  # the pool's interface, on the loop's thread
            def submit(self, batch: Any) -> None:
                pipeline.completions.put(counted(batch))

            def close(self, timeout_s: float = 0.0) -> None:
                pass

        pipeline.pool.close()
        pipeline.pool = Inline()  # type: ignore[assignment]
    code = pipeline.run()
    if code != 0 or len(marks) < len(WINDOW):
        raise SystemExit(f"the pipeline exited with code {code} after {delivered} events")
    (start_at, start_cpu, start_n), (end_at, end_cpu, end_n) = marks[WINDOW[0]], marks[WINDOW[1]]
    return {"mode": mode, "cpu_us_per_event": (end_cpu - start_cpu) / (end_n - start_n) * 1e6,
            "events_per_s": (end_n - start_n) / (end_at - start_at)}


class EventedPool:
    """The prototype behind ``evented``: the pool's interface, its requests on an event loop that
    the pipeline's thread runs briefly at every step (``pump``)."""

    def __init__(self, base_url: str, completions: Any, count: Callable[[Any], Any], in_flight: int):
        from connector.sink.request import encode_batch
        from tests.benchmark.senders import AioBackend

        self._encode = encode_batch
        self._completions, self._count = completions, count
        self._loop = asyncio.new_event_loop()
        url = httpx.URL(base_url + "/event/ingest/batch?locationEnrichment=false")
        self._url = httpcore.URL(scheme=b"http", host=url.raw_host, port=url.port, target=url.raw_path)
        self._headers = [(b"Host", url.netloc), (b"Authorization", f"Bearer {API_KEY}".encode()),
                         (b"Content-Type", b"application/json")]
        self._free = [httpcore.AsyncHTTPConnection(self._url.origin, network_backend=AioBackend())
                      for _ in range(in_flight)]
        self._connections = list(self._free)
        self._waiting: deque[Any] = deque()
        self._answered = asyncio.Event()

    def submit(self, batch: Any) -> None:
        self._waiting.append(batch)
        self._start()

    def _start(self) -> None:
        while self._free and self._waiting:
            self._loop.create_task(self._send(self._free.pop(), self._waiting.popleft()))

    async def _send(self, connection: Any, batch: Any) -> None:
        from connector.sink.sender import BatchResult

        body = self._encode([item.event for item in batch.items])
        response = await connection.handle_async_request(httpcore.Request(
            b"POST", self._url, headers=[*self._headers, (b"Content-Length", str(len(body)).encode())], content=body))
        await response.aread()
        await response.aclose()
        if response.status != 204:
            raise RuntimeError(f"the sink answered {response.status}")
        self._completions.put(self._count(BatchResult(batch, delivered=list(batch.items), delivered_at=time.time())))
        self._answered.set()
        self._free.append(connection)
        self._start()

    def pump(self, wait_s: float) -> None:
        """Run the event loop once without waiting, or until an answer comes (at most ``wait_s``)."""
        if wait_s > 0 and len(self._free) < len(self._connections):
            self._answered.clear()
            try:
                self._loop.run_until_complete(asyncio.wait_for(self._answered.wait(), wait_s))
            except asyncio.TimeoutError:
                pass
        else:
            self._loop.call_soon(self._loop.stop)
            self._loop.run_forever()

    def close(self, timeout_s: float = 0.0) -> None:
        for connection in self._connections:
            self._loop.run_until_complete(connection.aclose())
        self._loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="events preloaded (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode (default %(default)s)")
    parser.add_argument("--sink-delay-ms", type=float, default=0.0,
                        help="the sink answers this long after each request (default %(default)s)")
    parser.add_argument("--in-flight", type=int, default=8,
                        help="requests open at once: max_in_flight, and evented's connections (default %(default)s)")
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
                        [sys.executable, "-m", "tests.benchmark.floor", "--events", str(produced.count),
                         "--in-flight", str(args.in_flight), "--child", mode, broker.bootstrap_servers,
                         sink.base_url],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120 + produced.count / 1000)
                    if run.returncode != 0:
                        raise BenchError(f"{mode} run {index} failed:\n{run.stderr[-3000:]}")
                    result = json.loads(run.stdout.strip().splitlines()[-1])
                    found[mode].append(result)
                    print(f"   {mode:6} run {index}: {result['cpu_us_per_event']:.1f} µs CPU/event, "
                          f"{result['events_per_s']:,.0f} events/s")
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
        print(f"{mode:6} {median:5.1f} µs CPU/event ±{(max(cpu) - min(cpu)) / 2 / median:.0%}, "
              f"{rate:8,.0f} events/s{share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
