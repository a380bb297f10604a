"""A lean UserFlux sink for the benchmark, run in a process of its own.

The test stand-in (tests/support/userflux_standin.py) validates every field of every
event in a thread per connection and tops out far below what the connector must reach.
This sink is one asyncio event loop speaking HTTP/1.1 keep-alive, standard library only,
and does as little per request as still proves the requests right:

* every request: the path, ``Authorization: Bearer <key>`` (401), a JSON body framed as
  ``{"events":[{...}]}`` with 1..50 events, counted by their ``"timestamp":`` keys (400);
* every 64th request, and the first: the body is parsed and each event checked as
  UserFlux's SDKs would (name without white space, a user or anonymous id, epoch ms);
  the count must match the cheap one (400 otherwise, which the benchmark would report);
* while latency is being recorded: each event's ``timestamp`` (which the benchmark's data
  makes equal to the Kafka timestamp) is subtracted from the time the 204 goes out, into a
  1 ms histogram. Parsing numbers costs, so this is only done when asked.

``--delay-ms`` answers every request that long after it arrived, without holding up other
requests or connections (scenario b). ``--down`` answers 503 with ``Retry-After`` until
``POST /_bench/up`` (scenario c). Events and requests are counted when the 204 is sent.

Control endpoints (loopback, no key): ``GET /_bench/stats`` (counters: cheap enough to
ask 20 times a second), ``POST /_bench/up``, ``POST /_bench/latency`` (forget what was
recorded and start recording), ``GET /_bench/latency`` (percentiles of what was recorded).

Run ``python -m tests.benchmark.sink --api-key KEY``: it prints ``host:port`` on its first
line of output once it listens, and stops on SIGTERM or SIGINT. ``SinkProcess`` does that
for the benchmark and speaks to the control endpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from typing import Any

from tests.benchmark.errors import BenchError
from tests.support.service_process import pdeathsig_preexec

BATCH_PATH = b"/event/ingest/batch"
CONTROL_PREFIX = b"/_bench/"
MAX_EVENTS = 50
FULL_CHECK_EVERY = 64
LATENCY_CAP_MS = 600_000  # a latency beyond ten minutes is counted as ten minutes
MAX_HEAD = 16_384
MAX_BODY = 8 * 1024 * 1024
LOGGED_REFUSALS = 20  # per status, on stderr: enough to see why

_TIMESTAMP_KEY = b'"timestamp":'
_TIMESTAMPS = re.compile(rb'"timestamp":(\d+)')
_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    503: "Service Unavailable",
}


def _response(status: int, body: bytes, extra: str = "", close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}"
    )
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode() + body


def _error(status: int, message: str, extra: str = "", close: bool = False) -> bytes:
    return _response(status, json.dumps({"error": message}).encode(), extra, close)


def check_event(event: Any) -> str | None:
    """Why UserFlux would refuse ``event`` (the SDKs' rules), or None."""
    if type(event) is not dict:
        return "an event must be an object"
    name = event.get("name")
    if type(name) is not str or not name or name in ("null", "undefined") or any(c.isspace() for c in name):
        return f"bad name {name!r}"
    ids = [event.get("userId"), event.get("anonymousId")]
    if not any(type(i) is str and i and i not in ("null", "undefined") for i in ids):
        return "no userId or anonymousId"
    if any(i is not None and type(i) is not str for i in ids):
        return "ids must be strings"
    ts = event.get("timestamp")
    if type(ts) is not int or not 10**11 <= ts < 10**14:
        return f"timestamp must be epoch milliseconds, got {ts!r}"
    if type(event.get("properties", {})) is not dict:
        return "properties must be an object"
    return None


class SinkState:
    """Counters and settings shared by every connection of one sink."""

    def __init__(self, api_key: str, delay_s: float = 0.0, down: bool = False, retry_after_s: int = 1):
        self.authorization = f"Bearer {api_key}".encode()
        self.delay_s = delay_s
        self.down = down
        self.retry_after = f"Retry-After: {retry_after_s}\r\n"
        self.events = 0
        self.requests = 0  # answered 204
        self.refused: Counter[int] = Counter()  # other answers, by status
        self.full_checks = 0
        self.connections = 0
        self.recording = False
        self.latency_ms = [0] * (LATENCY_CAP_MS + 1)
        self.latency_count = 0
        self._seen = 0  # batch requests received, for the sampled full check

    def full_check_due(self) -> bool:
        self._seen += 1
        return self._seen % FULL_CHECK_EVERY == 1

    def accepted(self, count: int, body: bytes) -> None:
        self.events += count
        self.requests += 1
        if self.recording:
            now_ms = time.time() * 1000
            histogram = self.latency_ms
            for raw in _TIMESTAMPS.findall(body):
                histogram[min(LATENCY_CAP_MS, max(0, int(now_ms - int(raw))))] += 1
            self.latency_count += count

    def start_recording(self) -> None:
        self.latency_ms = [0] * (LATENCY_CAP_MS + 1)
        self.latency_count = 0
        self.recording = True

    def latency(self) -> dict[str, Any]:
        """Percentiles of the recorded latencies: a walk over the whole histogram, so asked once."""
        count = self.latency_count
        if not count:
            return {"count": 0}
        wanted = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
        found: dict[str, Any] = {"count": count}
        seen = 0
        for ms, n in enumerate(self.latency_ms):
            if not n:
                continue
            seen += n
            for name, q in wanted.items():
                if name not in found and seen >= q * count:
                    found[name] = ms
            found["max"] = ms
        return found

    def stats(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "requests": self.requests,
            "refused": dict(self.refused),
            "full_checks": self.full_checks,
            "connections": self.connections,
            "down": self.down,
            "delay_ms": round(self.delay_s * 1000),
            "latency_recorded": self.latency_count,
        }


class _Connection(asyncio.Protocol):
    """One keep-alive connection: requests parsed as bytes arrive, answered in order."""

    def __init__(self, state: SinkState):
        self.state = state
        self.buffer = bytearray()
        self.head: tuple[bytes, bytes, dict[bytes, bytes]] | None = None
        self.length = 0
        self.answers: deque[list] = deque()  # [response or None, events, body]: in request order
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.head is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD:
                        self._fail(_error(400, "request head too large", close=True))
                    return
                lines = bytes(self.buffer[:end]).split(b"\r\n")
                del self.buffer[: end + 4]
                try:
                    method, target, _version = lines[0].split(b" ", 2)
                except ValueError:
                    self._fail(_error(400, "malformed request line", close=True))
                    return
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                if b"transfer-encoding" in headers:
                    self._fail(_error(411, "send a Content-Length", close=True))
                    return
                try:
                    self.length = int(headers.get(b"content-length", b"0"))
                except ValueError:
                    self.length = -1
                if not 0 <= self.length <= MAX_BODY:
                    self._fail(_error(413, "bad or too large Content-Length", close=True))
                    return
                self.head = (method, target, headers)
            if len(self.buffer) < self.length:
                return
            body = bytes(self.buffer[: self.length])
            del self.buffer[: self.length]
            method, target, headers = self.head
            self.head = None
            self._request(method, target, headers, body)

    def _request(self, method: bytes, target: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        path = target.split(b"?", 1)[0]
        if path.startswith(CONTROL_PREFIX):
            self._answer_now(self._control(method, path), 0, b"")
            return
        state = self.state
        if path != BATCH_PATH:
            self._refuse(404, "no such endpoint")
        elif method != b"POST":
            self._refuse(405, "use POST")
        elif headers.get(b"authorization") != state.authorization:
            self._refuse(401, "missing or invalid bearer token")
        elif state.down:
            self._refuse(503, "down for the benchmark", state.retry_after)
        elif not headers.get(b"content-type", b"").startswith(b"application/json"):
            self._refuse(415, "Content-Type must be application/json")
        else:
            count, problem = self._shape(body)
            if problem is not None:
                self._refuse(400, problem)
            elif state.delay_s > 0:
                slot = [None, count, body]
                self.answers.append(slot)
                asyncio.get_running_loop().call_later(state.delay_s, self._ready, slot, _NO_CONTENT)
            else:
                self._answer_now(_NO_CONTENT, count, body)

    def _shape(self, body: bytes) -> tuple[int, str | None]:
        if not (body.startswith(b'{"events":[{') and body.endswith(b"}]}")):
            return 0, 'the body must be {"events":[...]} with at least one event'
        count = body.count(_TIMESTAMP_KEY)
        if not 1 <= count <= MAX_EVENTS:
            return count, f"{count} timestamps found: a batch holds 1 to {MAX_EVENTS} events, each with a timestamp"
        if self.state.full_check_due():
            self.state.full_checks += 1
            try:
                events = json.loads(body)["events"]
            except (ValueError, KeyError, TypeError) as exc:
                return count, f"the body is not valid JSON: {exc}"
            if len(events) != count:
                return count, f"{len(events)} events but {count} timestamp keys"
            for index, event in enumerate(events):
                problem = check_event(event)
                if problem is not None:
                    return count, f"event {index}: {problem}"
        return count, None

    def _refuse(self, status: int, message: str, extra: str = "") -> None:
        self.state.refused[status] += 1
        if status != 503 and self.state.refused[status] <= LOGGED_REFUSALS:
            print(f"HTTP {status}: {message}", file=sys.stderr, flush=True)
        response = _error(status, message, extra)
        if self.state.delay_s > 0:
            slot = [None, 0, b""]
            self.answers.append(slot)
            asyncio.get_running_loop().call_later(self.state.delay_s, self._ready, slot, response)
        else:
            self._answer_now(response, 0, b"")

    def _answer_now(self, response: bytes, count: int, body: bytes) -> None:
        slot = [response, count, body]
        self.answers.append(slot)
        self._flush()

    def _ready(self, slot: list, response: bytes) -> None:
        slot[0] = response
        self._flush()

    def _flush(self) -> None:
        """Send the answers that are ready, in the order their requests came."""
        while self.answers and self.answers[0][0] is not None:
            response, count, body = self.answers.popleft()
            if self.transport is None or self.transport.is_closing():
                continue
            if count:
                self.state.accepted(count, body)
            self.transport.write(response)

    def _control(self, method: bytes, path: bytes) -> bytes:
        state = self.state
        if path == b"/_bench/stats" and method == b"GET":
            return _response(200, json.dumps(state.stats()).encode())
        if path == b"/_bench/up" and method == b"POST":
            state.down = False
            return _response(200, b'{"down":false}')
        if path == b"/_bench/latency" and method == b"POST":
            state.start_recording()
            return _response(200, b'{"recording":true}')
        if path == b"/_bench/latency" and method == b"GET":
            return _response(200, json.dumps(state.latency()).encode())
        return _error(404, "no such control endpoint")

    def _fail(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(state: SinkState, host: str, port: int, ready) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(state), host, port, backlog=256, reuse_address=True)
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    bound = server.sockets[0].getsockname()
    ready(f"{bound[0]}:{bound[1]}")
    async with server:
        await stopped.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.sink", description=__doc__.split("\n")[0])
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer every request this long after it came")
    parser.add_argument("--down", action="store_true", help="answer 503 until POST /_bench/up")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After of the 503s, in seconds")
    args = parser.parse_args(argv)
    state = SinkState(args.api_key, args.delay_ms / 1000, args.down, args.retry_after)

    def ready(address: str) -> None:
        print(address, flush=True)

    asyncio.run(serve(state, args.host, args.port, ready))
    return 0


class SinkProcess:
    """The sink in a process of its own (so its CPU is not the connector's), and its controls."""

    def __init__(
        self,
        api_key: str,
        *,
        delay_ms: float = 0.0,
        down: bool = False,
        retry_after_s: int = 1,
        log_path: str | None = None,
        start_timeout_s: float = 20.0,
    ):
        cmd = [
            sys.executable,
            "-m",
            "tests.benchmark.sink",
            "--api-key",
            api_key,
            "--delay-ms",
            str(delay_ms),
            "--retry-after",
            str(retry_after_s),
        ]
        if down:
            cmd.append("--down")
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(os.getpid()),
        )
        self.address = self._read_address(start_timeout_s)
        self.base_url = f"http://{self.address}"
        host, port = self.address.rsplit(":", 1)
        self._control = http.client.HTTPConnection(host, int(port), timeout=10)

    def _read_address(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                self.stop()
                raise BenchError(f"the benchmark sink did not start within {timeout_s:.0f} s")
        line = self.process.stdout.readline().decode().strip()
        if not line:
            code = self.process.wait(5)
            raise BenchError(f"the benchmark sink exited with code {code} before listening")
        return line

    @property
    def pid(self) -> int:
        return self.process.pid

    def _call(self, method: str, path: str) -> dict:
        for attempt in (1, 2):  # the keep-alive connection may have been closed in between
            try:
                self._control.request(method, path)
                response = self._control.getresponse()
                return json.loads(response.read())
            except (http.client.HTTPException, ConnectionError):
                self._control.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stats(self) -> dict:
        return self._call("GET", "/_bench/stats")

    def up(self) -> None:
        self._call("POST", "/_bench/up")

    def record_latency(self) -> None:
        self._call("POST", "/_bench/latency")

    def latency(self) -> dict:
        """``count``, ``p50``, ``p90``, ``p99`` and ``max`` in ms of what was recorded."""
        return self._call("GET", "/_bench/latency")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if hasattr(self, "_control"):
            self._control.close()
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
