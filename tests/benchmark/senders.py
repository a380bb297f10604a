"""The sender's concurrency model, chosen by measurement: CPU per request, model by model.

    python -m tests.benchmark.senders [--requests N] [--runs R]      (make bench-senders)

Every model posts the same body (50 of the benchmark's events, mapped and encoded as the
connector does) to the benchmark's sink, N requests in all:

- ``threads-K``: K threads, each with a connection of the connector's own
  (connector/sink/connection.py), through ``UserFluxClient.post_batch``: how the sender
  threads send (K = 1, and 8 as ``max_in_flight``). The connector sends first requests
  from its pipeline's thread (connector/sink/direct.py), which needs the pipeline around
  it: ``make bench-floor`` measures that.
- ``asyncio-K``: one thread running an asyncio loop that keeps K requests open, on
  httpcore's async HTTP/1.1 connection over a minimal asyncio network backend (below:
  plain HTTP only, no TLS, no proxy; a measurement, not the connector's code).
- ``httpx-async-8``: stock ``httpx.AsyncClient``, 8 requests open.

Each model runs alone, then beside a thread that keeps the interpreter busy mapping
messages, as the pipeline's loop does; that is where threads pay for taking turns at the
interpreter lock. The CPU counted is the sending threads' own (``time.thread_time``), so
the busy thread's is not; medians over ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpcore
import httpx

from tests.benchmark.run import API_KEY

MODELS = ("threads-1", "threads-8", "asyncio-1", "asyncio-8", "httpx-async-8")


def sample_body_and_mapper() -> tuple[bytes, Callable[[], None]]:
    """The request body, and one step of the busy thread's work (mapping 100 messages)."""
    import yaml

    from connector.mapping.mapper import MessageMapper
    from connector.sink.request import encode_batch
    from connector.startup import parse_config
    from tests.benchmark.events import EventFactory
    from tests.benchmark.scenarios import SCENARIOS
    from tests.support.fakes import FakeMessage

    config = SCENARIOS["a"].config(
        bootstrap="127.0.0.1:1",
        base_url="http://127.0.0.1:2",
        group="g",
        topics=["t"],
        metrics_port=1,
        dead_letter_topic="d",
    )
    config["userflux"]["api_key"] = API_KEY
    mapper = MessageMapper(parse_config(yaml.safe_dump(config)).mappings)
    factory = EventFactory(seed=4)
    messages = [
        FakeMessage(topic="t", offset=i, key=key, value=value)
        for i, (key, value, _kind) in enumerate(factory.message(1_764_320_000_000 + i) for i in range(100))
    ]
    body = encode_batch([mapper.map(message)[1] for message in messages[:50]])

    def map_some() -> None:
        for message in messages:
            mapper.map(message)

    return body, map_some


# -- the models ------------------------------------------------------------------------------


def run_threads(base_url: str, body: bytes, requests: int, threads: int) -> float:
    """CPU seconds of ``threads`` sender threads posting ``requests`` in all, as the connector does."""
    from connector.config.model import Secret
    from connector.sink.client import UserFluxClient, make_route
    from connector.sink.outcome import DELIVERED

    client = UserFluxClient(make_route(base_url, Secret(API_KEY), 30.0))
    spent: list[float] = []

    def work(count: int) -> None:
        started = time.thread_time()
        for _ in range(count):
            answer = client.post_batch(body, False)
            if answer is None or answer.kind != DELIVERED:
                raise RuntimeError(f"the sink answered {answer.detail}")
        spent.append(time.thread_time() - started)

    workers = [threading.Thread(target=work, args=(requests // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    client.close()
    return sum(spent)


class _AioStream(httpcore.AsyncNetworkStream):
    """A non-blocking socket on the running loop; a request leaves in one send, as in connection.py."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop):
        self._sock, self._loop, self._unsent = sock, loop, []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._unsent:
            data = b"".join(self._unsent)
            self._unsent.clear()
            await self._loop.sock_sendall(self._sock, data)
        return await self._loop.sock_recv(self._sock, max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._unsent.append(buffer)

    async def aclose(self) -> None:
        self._sock.close()

    def get_extra_info(self, info: str) -> Any:
        return False if info == "is_readable" else None


class AioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (host, port))
        return _AioStream(sock, loop)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _in_loop_thread(main: Callable[[], Any]) -> float:
    """Run the coroutine function on an event loop in a thread of its own; that thread's CPU seconds."""
    spent: list[float] = []
    failed: list[BaseException] = []

    def target() -> None:
        started = time.thread_time()
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported on the caller's thread
            failed.append(exc)
        spent.append(time.thread_time() - started)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return spent[0]


def run_asyncio(base_url: str, body: bytes, requests: int, in_flight: int) -> float:
    url = httpx.URL(base_url + "/event/ingest/batch?locationEnrichment=false")
    target = url.raw_path
    core_url = httpcore.URL(scheme=b"http", host=url.raw_host, port=url.port, target=target)
    headers = [
        (b"Host", url.netloc),
        (b"Authorization", f"Bearer {API_KEY}".encode()),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(body)).encode()),
    ]

    async def main() -> None:
        async def work(count: int) -> None:
            async with httpcore.AsyncHTTPConnection(core_url.origin, network_backend=AioBackend()) as connection:
                for _ in range(count):
                    response = await connection.handle_async_request(
                        httpcore.Request(b"POST", core_url, headers=headers, content=body)
                    )
                    await response.aread()
                    await response.aclose()
                    if response.status != 204:
                        raise RuntimeError(f"the sink answered {response.status}")

        await asyncio.gather(*(work(requests // in_flight) for _ in range(in_flight)))

    return _in_loop_thread(main)


def run_httpx_async(base_url: str, body: bytes, requests: int, in_flight: int) -> float:
    async def main() -> None:
        async with httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=in_flight),
        ) as client:

            async def work(count: int) -> None:
                for _ in range(count):
                    response = await client.post(
                        "/event/ingest/batch", params={"locationEnrichment": "false"}, content=body
                    )
                    if response.status_code != 204:
                        raise RuntimeError(f"the sink answered {response.status_code}")

            await asyncio.gather(*(work(requests // in_flight) for _ in range(in_flight)))

    return _in_loop_thread(main)


def measure(model: str, base_url: str, body: bytes, requests: int) -> float:
    """CPU µs per request of one model."""
    kind, count = model.rsplit("-", 1)
    run = {"threads": run_threads, "asyncio": run_asyncio, "httpx-async": run_httpx_async}[kind]
    return run(base_url, body, requests, int(count)) / requests * 1e6


class Busy:
    """A thread mapping messages until stopped, as the pipeline's loop keeps the interpreter busy."""

    def __init__(self, step: Callable[[], None]):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(step,), daemon=True)

    def _run(self, step: Callable[[], None]) -> None:
        while not self._stop.is_set():
            step()

    def __enter__(self) -> Busy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    from tests.benchmark.sink import SinkProcess

    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.senders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4_000, help="requests per measurement (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each model (default %(default)s)")
    args = parser.parse_args(argv)
    body, map_some = sample_body_and_mapper()
    found: dict[tuple[str, bool], list[float]] = {}
    with SinkProcess(API_KEY) as sink:
        for _ in range(args.runs):
            for busy in (False, True):
                for model in MODELS:
                    if busy:
                        with Busy(map_some):
                            us = measure(model, sink.base_url, body, args.requests)
                    else:
                        us = measure(model, sink.base_url, body, args.requests)
                    found.setdefault((model, busy), []).append(us)
    print(
        f"CPU µs per request of the sending threads (median of {args.runs}; {args.requests:,} requests of "
        f"{len(body):,} bytes each; {os.cpu_count()} cores)"
    )
    print(f"{'model':14} {'alone':>8} {'beside a busy thread':>22}")
    for model in MODELS:
        alone, beside = (statistics.median(found[(model, b)]) for b in (False, True))
        print(f"{model:14} {alone:8.0f} {beside:22.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
