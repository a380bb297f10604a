"""How many events a second the benchmark's sink takes, so a reader sees it is not the bottleneck.

A simple client (the standard library's ``http.client``, a few keep-alive connections in
threads of the benchmark's own process) posts the same 50-event batch as fast as it can
for a few seconds. Two figures come out: the events/s that client got through, and the
sink's CPU per event, from which one core's worth of sink is ``1 / cpu_us_per_event``.
The client shares the machine, so the first figure is a lower bound.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

from tests.benchmark import procstat
from tests.benchmark.errors import BenchError
from tests.benchmark.events import EventFactory
from tests.benchmark.sink import SinkProcess

MAX_REQUESTS = 1_000_000  # per thread: the time limit ends it long before


def sample_batch(size: int = 50) -> bytes:
    """A body like the connector's: mapped events of the benchmark's data, compact JSON."""
    factory = EventFactory(seed=1)
    now_ms = int(time.time() * 1000)
    events = []
    for _ in range(size):
        _key, value, _kind = factory.message(now_ms)
        doc = json.loads(value)
        event = {"name": doc["event"]}
        if "user" in doc:
            event["userId"] = str(doc["user"]["id"])
        event["anonymousId"] = doc["anonymous_id"]
        event["timestamp"] = now_ms
        event["properties"] = doc["properties"]
        events.append(event)
    return json.dumps({"events": events}, separators=(",", ":"), ensure_ascii=False).encode()


def measure(api_key: str, seconds: float = 3.0, threads: int = 4) -> dict[str, Any]:
    body = sample_batch()
    events_per_request = body.count(b'"timestamp":')
    with SinkProcess(api_key) as sink:
        host, port = sink.address.rsplit(":", 1)
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        failures: list[str] = []
        stop = threading.Event()

        def post() -> None:
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                for _ in range(MAX_REQUESTS):
                    if stop.is_set():
                        return
                    connection.request("POST", "/event/ingest/batch?locationEnrichment=false", body, headers)
                    response = connection.getresponse()
                    response.read()
                    if response.status != 204:
                        failures.append(f"HTTP {response.status}")
                        return
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
            finally:
                connection.close()

        workers = [threading.Thread(target=post, daemon=True) for _ in range(threads)]
        before, cpu_before, started = sink.stats(), procstat.cpu_seconds(sink.pid), time.monotonic()
        for worker in workers:
            worker.start()
        stop.wait(seconds)
        after, cpu_after, elapsed = sink.stats(), procstat.cpu_seconds(sink.pid), time.monotonic() - started
        stop.set()
        for worker in workers:
            worker.join(15)
    if failures:
        raise BenchError(f"the sink's capacity could not be measured: {failures[:3]}")
    events = after["events"] - before["events"]
    cpu = cpu_after - cpu_before
    return {
        "events_per_s": events / elapsed,
        "requests_per_s": (after["requests"] - before["requests"]) / elapsed,
        "cpu_us_per_event": cpu / events * 1e6 if events else None,
        "events_per_s_per_core": events / cpu if cpu else None,
        "sink_cores": cpu / elapsed,
        "events_per_request": events_per_request,
        "client_threads": threads,
        "seconds": elapsed,
    }
