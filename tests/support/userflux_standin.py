"""A local stand-in for UserFlux's Integration API, for tests and the demo.

UserFlux (https://integration-api.userflux.co) cannot be reached from our machines, so
the test suite and ``make demo`` talk to this loopback HTTP server instead. It follows
the contract in ``userflux-api.md``:

* ``POST /event/ingest/batch`` with ``{"events": [...]}`` (1..50 events) and
  ``POST /event/ingest`` with one event, optional ``?locationEnrichment=true|false``;
* ``Authorization: Bearer <api_key>`` is required (401 otherwise);
* ``Content-Type: application/json`` is required (415 otherwise);
* every event is checked as strictly as UserFlux's SDKs do (400 otherwise, with a JSON
  body ``{"error": "...", "index": N}`` naming the first refused event);
* success is ``204 No Content``, and the accepted batch is recorded.

Tests can inspect what was accepted (``events()``, ``batches()``, ``requests()``,
``wait_for_events()``; every request is logged with when it was received and answered,
and the bearer key it came with) and inject faults (``fail_next``, ``fail_always``,
``fail_for``, ``reject_events``, ``set_delay``, ``hang``, ``drop_next``, ``reset_next``;
``heal``/``reset`` to clear them).

Several UserFlux projects, each with its own write key, are one stand-in accepting
several keys: ``add_key`` accepts another (until ``reset``), each request and accepted
batch records the ``key`` it came with, and ``fail_next``, ``fail_always`` and
``fail_for`` take ``key=`` to fault only the requests of that key (one project
throttled while the others are not).

When run as its own process (``python -m tests.support.userflux_standin --port 8080
--api-key KEY``), the same data is available without authentication on
``GET /_standin/events``, ``GET /_standin/batches``, ``GET /_standin/requests`` and
``POST /_standin/reset``, and every fault is a ``POST /_standin/<fault>`` with the
method's arguments as a JSON object (``StandInControl`` does that from Python).
Control requests bypass faults and are not recorded.

With ``tls=(certfile, keyfile)`` it serves HTTPS (``client_ca=`` also requires a
client certificate signed by that CA), for tests of certificate verification.

Only the standard library is used, so the stand-in runs anywhere the tests do.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["AcceptedBatch", "RequestLog", "StandInControl", "UserFluxStandIn", "main", "validate_event"]

BATCH_PATH = "/event/ingest/batch"
SINGLE_PATH = "/event/ingest"
CONTROL_PREFIX = "/_standin/"
MAX_EVENTS_PER_BATCH = 50
EVENT_KEYS = frozenset({"userId", "anonymousId", "name", "timestamp", "properties"})
FORBIDDEN_STRINGS = frozenset({"null", "undefined"})
# Epoch milliseconds: 10**11 ms is 1973-03-03, 10**14 ms is year 5138. Epoch seconds
# for any plausible date are below 10**11, microseconds are above 10**14.
MIN_TIMESTAMP_MS = 10**11
MAX_TIMESTAMP_MS = 10**14

# status 0 in a RequestLog means: the connection was closed (or reset, or left hanging)
# without any answer.
STATUS_DROPPED = 0
# Faults a separate process may set through POST /_standin/<name> (JSON arguments).
REMOTE_FAULTS = ("fail_next", "fail_always", "fail_for", "heal", "set_delay", "hang", "drop_next", "reset_next")


@dataclass
class AcceptedBatch:
    """One accepted (204) request: its events, the locationEnrichment flag and its path."""

    events: list[dict]
    location_enrichment: bool | None
    path: str
    key: str | None = field(default=None, compare=False)  # the bearer key it was accepted with


@dataclass
class RequestLog:
    """One received request (accepted or refused); control requests are not logged.

    ``status`` is the HTTP status answered, or 0 when the connection was dropped, reset
    or left hanging. ``event_count`` is the number of events in the body when it could
    be parsed that far (also for refused requests), else 0. ``error`` is the error
    message sent, or what happened instead of an answer.

    ``received_at`` is when the whole request had been read, on the monotonic clock
    (``time.monotonic()``; on Linux the same clock in every process of the machine),
    ``received_wall`` the same moment as ``time.time()``. ``answered_at`` is when the
    answer (or the drop, or the reset) went out, monotonic too; None while a hanging
    request has no answer. The times are not compared by ``==``.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int
    event_count: int
    authorization_ok: bool
    error: str | None = None
    received_at: float = field(default=0.0, compare=False)
    received_wall: float = field(default=0.0, compare=False)
    answered_at: float | None = field(default=None, compare=False)
    key: str | None = field(default=None, compare=False)  # the bearer key presented, if any


@dataclass
class _Faults:
    drop_next: int = 0
    reset_next: int = 0
    hang: bool = False
    fail_next: int = 0
    fail_next_status: int = 500
    fail_next_retry_after: str | None = None
    fail_always: tuple[int, str | None] | None = None
    fail_until: float = 0.0  # fail_for: the monotonic time it heals by itself
    fail_for: tuple[int, str | None] | None = None
    delay_s: float = 0.0


@dataclass
class _Answer:
    status: int
    error: str | None = None
    index: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _check_fault_status(status: int) -> int:
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"fault status must be an int in 400..599, got {status!r}")
    return status


def _is_valid_string(value: Any) -> bool:
    return isinstance(value, str) and value != "" and value not in FORBIDDEN_STRINGS


def validate_event(event: Any) -> str | None:
    """Return why UserFlux would refuse ``event``, or None if it is acceptable."""
    if not isinstance(event, dict):
        return f"event must be a JSON object, got {type(event).__name__}"
    unknown = sorted(set(event) - EVENT_KEYS)
    if unknown:
        return f"unknown field(s) {unknown}; allowed: {sorted(EVENT_KEYS)}"
    if "name" not in event:
        return "name is required"
    name = event["name"]
    if not isinstance(name, str):
        return f"name must be a string, got {type(name).__name__}"
    if not _is_valid_string(name):
        return f"name must be a non-empty string other than 'null'/'undefined', got {name!r}"
    if any(ch.isspace() for ch in name):
        return f"name must not contain whitespace, got {name!r}"
    for key in ("userId", "anonymousId"):
        if key in event and not isinstance(event[key], str):
            return f"{key} must be a string, got {type(event[key]).__name__}"
    if not (_is_valid_string(event.get("userId")) or _is_valid_string(event.get("anonymousId"))):
        return (
            "at least one of userId/anonymousId must be a non-empty string other than "
            f"'null'/'undefined' (userId={event.get('userId')!r}, "
            f"anonymousId={event.get('anonymousId')!r})"
        )
    if "timestamp" in event:
        ts = event["timestamp"]
        if isinstance(ts, bool) or not isinstance(ts, int):
            return f"timestamp must be an integer (epoch milliseconds), got {ts!r}"
        if not MIN_TIMESTAMP_MS <= ts <= MAX_TIMESTAMP_MS:
            hint = "epoch seconds?" if ts < MIN_TIMESTAMP_MS else "epoch microseconds?"
            return (
                f"timestamp must be epoch milliseconds between {MIN_TIMESTAMP_MS} and "
                f"{MAX_TIMESTAMP_MS}, got {ts} ({hint})"
            )
    if "properties" in event and not isinstance(event["properties"], dict):
        return f"properties must be a JSON object, got {type(event['properties']).__name__}"
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _count_events(path: str, body: bytes) -> tuple[Any, int]:
    """Parse ``body`` leniently, for logging: return (parsed or None, event count)."""
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        return None, 0
    if path == BATCH_PATH:
        if isinstance(doc, dict) and isinstance(doc.get("events"), list):
            return doc, len(doc["events"])
        return doc, 0
    return doc, 1 if isinstance(doc, dict) else 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: when more connections arrive at once than the
    # accept loop has taken, the kernel drops the SYN and the client resends it a second
    # later. A real server has a deep backlog; the stand-in must not add that second.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], standin: UserFluxStandIn, tls: ssl.SSLContext | None = None) -> None:
        self.standin = standin
        self.tls = tls
        self._connections: set[socket.socket] = set()
        self._resets: set[int] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can hang on reverse DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:  # type: ignore[override]
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def finish_request(self, request, client_address) -> None:  # type: ignore[override]
        # The TLS handshake runs here, in the request's own thread: a client that never
        # completes it cannot hold up the accept loop.
        if self.tls is not None:
            request = self.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def shutdown_request(self, request) -> None:  # type: ignore[override]
        with self._connections_lock:
            self._connections.discard(request)
            reset = request.fileno() in self._resets
            self._resets.discard(request.fileno())
        if reset:
            self.close_request(request)  # no shutdown(SHUT_WR) first: its FIN would come before the RST
            return
        super().shutdown_request(request)

    def reset_on_close(self, request) -> None:
        """Close this connection with a TCP reset: SO_LINGER with a zero timeout."""
        request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._connections_lock:
            self._resets.add(request.fileno())  # a TLS connection wraps the raw socket: same descriptor

    def close_connections(self) -> None:
        """Cut open (keep-alive) connections, so a stopped stand-in answers nothing."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # client went away, or stop() cut the connection
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "UserFluxStandIn/1.0"
    sys_version = ""
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
    # client's delayed ACK would stall every answer by ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silence the default per-request logging to stderr

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = lambda self: self._handle()

    # -- plumbing -----------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """Read exactly the request body; on a framing error answer 400 and return None."""
        te = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if te:
            if te != "chunked":
                self._send(_Answer(400, f"unsupported Transfer-Encoding {te!r}"), close=True)
                return None
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._send(_Answer(400, "malformed chunked body"), close=True)
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self._send(_Answer(400, f"invalid Content-Length {raw!r}"), close=True)
            return None
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            return None
        return data

    def _send(self, answer: _Answer, payload: Any = None, close: bool = False) -> None:
        body = b""
        if payload is not None:
            body = json.dumps(payload).encode("utf-8")
        elif answer.status >= 300:
            doc: dict[str, Any] = {"error": answer.error or "error"}
            if answer.index is not None:
                doc["index"] = answer.index
            body = json.dumps(doc).encode("utf-8")
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.status not in (204, 304):  # these must not carry Content-Length/body
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body and self.command != "HEAD" and answer.status not in (204, 304):
            self.wfile.write(body)
        self.wfile.flush()

    # -- request handling -----------------------------------------------------------

    def _handle(self) -> None:
        standin = self.server.standin
        body = self._read_body()
        if body is None:
            return
        received_at, received_wall = time.monotonic(), time.time()
        split = urlsplit(self.path)
        path = split.path
        if path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/"):
            self._control(path, body)
            return
        with standin._lock:
            standin._in_progress += 1
        try:
            self._answer(standin, path, split, body, received_at, received_wall)
        finally:
            with standin._lock:
                standin._in_progress -= 1

    def _answer(
        self, standin: UserFluxStandIn, path: str, split: Any, body: bytes, received_at: float, received_wall: float
    ) -> None:

        pairs = parse_qsl(split.query, keep_blank_values=True)
        query: dict[str, str] = {}
        for key, value in pairs:
            query.setdefault(key, value)
        auth_values = self.headers.get_all("Authorization") or []
        key = (
            auth_values[0][len("Bearer ") :] if len(auth_values) == 1 and auth_values[0].startswith("Bearer ") else None
        )
        auth_ok = key is not None and standin.accepts(key)
        doc, event_count = _count_events(path, body)

        def log(status: int, error: str | None, answered: bool = True) -> RequestLog:
            return RequestLog(
                method=self.command,
                path=path,
                query=dict(query),
                status=status,
                event_count=event_count,
                authorization_ok=auth_ok,
                error=error,
                received_at=received_at,
                received_wall=received_wall,
                answered_at=time.monotonic() if answered else None,
                key=key,
            )

        fault, delay_s, gen = standin._take_fault(key)
        if delay_s > 0:
            standin._stopping.wait(delay_s)

        if fault == "drop":
            standin._record(gen, log(STATUS_DROPPED, "connection dropped (injected fault)"))
            self.close_connection = True
            return
        if fault == "reset":
            standin._record(gen, log(STATUS_DROPPED, "connection reset (injected fault)"))
            self.server.reset_on_close(self.request)
            self.close_connection = True
            return
        if fault == "hang":
            entry = log(STATUS_DROPPED, "no answer: the stand-in hangs (injected fault)", answered=False)
            standin._record(gen, entry)
            while not standin._hang_released.wait(0.05) and not standin._stopping.is_set():
                pass  # until heal(), reset() or stop()
            with standin._lock:
                entry.answered_at = time.monotonic()  # the connection is closed now, unanswered
            self.close_connection = True
            return
        if fault is not None:
            status, retry_after = fault
            answer = _Answer(status, f"injected fault: HTTP {status}")
            if retry_after is not None:
                answer.headers["Retry-After"] = retry_after
            standin._record(gen, log(status, answer.error))
            self._send(answer)
            return

        answer, events, location = self._validate(path, pairs, auth_ok, body, doc)
        if answer is None:
            answer = standin._apply_reject_rules(events)
        if answer is None:
            standin._record(gen, log(204, None), AcceptedBatch(events, location, path, key))
            self._send(_Answer(204))
            return
        standin._record(gen, log(answer.status, answer.error))
        self._send(answer)

    def _validate(
        self,
        path: str,
        pairs: list[tuple[str, str]],
        auth_ok: bool,
        body: bytes,
        doc: Any,
    ) -> tuple[_Answer | None, list[dict], bool | None]:
        none: list[dict] = []
        if path not in (BATCH_PATH, SINGLE_PATH):
            return _Answer(404, f"no such endpoint: {path}"), none, None
        if self.command != "POST":
            return (
                _Answer(405, f"method {self.command} not allowed, use POST", headers={"Allow": "POST"}),
                none,
                None,
            )
        if not auth_ok:
            return _Answer(401, "missing or invalid bearer token"), none, None

        location: bool | None = None
        values = [v for k, v in pairs if k == "locationEnrichment"]
        if len(values) > 1:
            return _Answer(400, "locationEnrichment given more than once"), none, None
        if values:
            if values[0] not in ("true", "false"):
                return (
                    _Answer(400, f"locationEnrichment must be 'true' or 'false', got {values[0]!r}"),
                    none,
                    None,
                )
            location = values[0] == "true"

        content_type = (self.headers.get("Content-Type") or "").strip().lower()
        if not content_type.startswith("application/json"):
            return (
                _Answer(415, f"Content-Type must be application/json, got {content_type!r}"),
                none,
                None,
            )

        if doc is None:
            # _count_events could not parse it: say why, precisely.
            try:
                json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
            except UnicodeDecodeError as exc:
                return _Answer(400, f"body is not UTF-8: {exc}"), none, None
            except ValueError as exc:
                return _Answer(400, f"body is not valid JSON: {exc}"), none, None
            return _Answer(400, "body must not be JSON null"), none, None

        if path == BATCH_PATH:
            if not isinstance(doc, dict):
                return _Answer(400, 'body must be a JSON object {"events": [...]}'), none, None
            extra = sorted(set(doc) - {"events"})
            if extra:
                return _Answer(400, f"unknown top-level key(s) {extra}; only 'events' is allowed"), none, None
            events = doc.get("events")
            if not isinstance(events, list):
                return _Answer(400, "'events' must be a JSON array"), none, None
            if not events:
                return _Answer(400, "'events' must contain at least 1 event"), none, None
            if len(events) > MAX_EVENTS_PER_BATCH:
                return (
                    _Answer(
                        400,
                        f"too many events: {len(events)}; the cap is {MAX_EVENTS_PER_BATCH} events per request",
                    ),
                    none,
                    None,
                )
        else:
            events = [doc]

        for index, event in enumerate(events):
            reason = validate_event(event)
            if reason is not None:
                return _Answer(400, f"event {index}: {reason}", index=index), none, None
        return None, events, location

    def _control(self, path: str, body: bytes) -> None:
        standin = self.server.standin
        routes: dict[str, tuple[str, Callable[[], Any]]] = {
            "/_standin/events": ("GET", standin.events),
            "/_standin/batches": ("GET", lambda: [dataclasses.asdict(b) for b in standin.batches()]),
            "/_standin/requests": ("GET", lambda: [dataclasses.asdict(r) for r in standin.requests()]),
            "/_standin/reset": ("POST", lambda: (standin.reset(), {"reset": True})[1]),
        }
        for name in REMOTE_FAULTS:
            routes[CONTROL_PREFIX + name] = ("POST", lambda name=name: self._remote_fault(name, body))
        route = routes.get(path)
        if route is None:
            self._send(_Answer(404, f"no such control endpoint: {path}; known: {sorted(routes)}"))
            return
        method, action = route
        if self.command != method and not (method == "GET" and self.command == "HEAD"):
            self._send(_Answer(405, f"use {method} for {path}", headers={"Allow": method}))
            return
        try:
            payload = action()
        except (TypeError, ValueError) as exc:  # wrong arguments for the fault
            self._send(_Answer(400, f"{path}: {exc}"))
            return
        self._send(_Answer(200), payload=payload)

    def _remote_fault(self, name: str, body: bytes) -> dict:
        kwargs = json.loads(body.decode("utf-8")) if body.strip() else {}
        if not isinstance(kwargs, dict):
            raise ValueError("expected a JSON object of arguments")
        getattr(self.server.standin, name)(**kwargs)
        return {name: kwargs}


class UserFluxStandIn:
    """A loopback HTTP server that behaves like UserFlux's Integration API.

    Use as a context manager, or call start()/stop(). stop() then start() again serves
    on the same port (so a test can take "UserFlux" down and bring it back); recorded
    data survives that, reset() forgets it.
    """

    def __init__(
        self,
        api_key: str = "test-write-key",
        host: str = "127.0.0.1",
        port: int = 0,
        tls: tuple[str, str] | None = None,
        client_ca: str | None = None,
    ) -> None:
        self.api_key = api_key
        self._more_keys: set[str] = set()  # add_key(): the other projects' keys
        self.host = host
        self.port = port
        self._tls = _server_tls(tls, client_ca) if tls is not None else None
        # Set while no request should hang: hang() clears it, heal()/reset()/stop() set it.
        self._hang_released = threading.Event()
        self._hang_released.set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._batches: list[AcceptedBatch] = []
        self._events: list[dict] = []
        self._requests: list[RequestLog] = []
        self._faults = _Faults()
        self._key_faults: dict[str, _Faults] = {}  # fail_*(key=): only that key's requests
        self._reject_rules: list[Callable[[dict], bool]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # Bumped by reset(): a request that arrived before a reset (e.g. one held by
        # set_delay) is still answered but no longer recorded, so it cannot leak into
        # what the next test sees.
        self._generation = 0
        self._in_progress = 0  # requests received and not yet answered
        self._base_url: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> UserFluxStandIn:
        if self._server is not None:
            raise RuntimeError("stand-in already started")
        self._stopping.clear()
        server = _Server((self.host, self.port), self, self._tls)
        self.port = server.server_address[1]  # a restart reuses the same port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._base_url = f"{'https' if self._tls else 'http'}://{host}:{self.port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"userflux-standin-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wake handlers sleeping in set_delay() or hanging
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> UserFluxStandIn:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """e.g. "http://127.0.0.1:54321"; valid after start() (and still after stop())."""
        if self._base_url is None:
            raise RuntimeError("stand-in not started yet; call start() first")
        return self._base_url

    # -- what was received --------------------------------------------------------------

    def events(self) -> list[dict]:
        """Every event of every accepted (204) request, in arrival order (deep copies)."""
        with self._lock:
            return copy.deepcopy(self._events)

    def event_count(self) -> int:
        """How many events were accepted so far (cheap: nothing is copied)."""
        with self._lock:
            return len(self._events)

    def events_since(self, start: int) -> list[dict]:
        """The accepted events from the ``start``-th on (deep copies): a test that follows
        a large run reads only what is new, instead of copying everything each time."""
        with self._lock:
            return copy.deepcopy(self._events[start:])

    def batches(self) -> list[AcceptedBatch]:
        """Every accepted request, in arrival order (deep copies)."""
        with self._lock:
            return copy.deepcopy(self._batches)

    def in_progress(self) -> int:
        """Requests received and not answered yet: in flight, from the client's side."""
        with self._lock:
            return self._in_progress

    def requests(self) -> list[RequestLog]:
        """Every request received (accepted, refused or dropped), control ones excepted."""
        with self._lock:
            return copy.deepcopy(self._requests)

    def wait_for_events(self, count: int, timeout_s: float) -> list[dict]:
        """Block until at least ``count`` events were accepted; return all of them.

        Raises AssertionError, describing what arrived, when ``timeout_s`` passes first.
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self._events) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    last = self._requests[-10:]
                    summary = (
                        "; ".join(
                            f"{r.method} {r.path} -> {r.status or 'dropped'}" + (f" ({r.error})" if r.error else "")
                            for r in last
                        )
                        or "none"
                    )
                    raise AssertionError(
                        f"UserFlux stand-in: expected at least {count} accepted events within "
                        f"{timeout_s}s, got {len(self._events)} (in {len(self._batches)} accepted "
                        f"requests, {len(self._requests)} requests in total); last requests: {summary}"
                    )
                self._changed.wait(remaining)
            return copy.deepcopy(self._events)

    def add_key(self, key: str) -> None:
        """Accept ``key`` too (another project's write key), until reset()."""
        with self._lock:
            self._more_keys.add(key)

    def accepts(self, key: str) -> bool:
        with self._lock:
            return key == self.api_key or key in self._more_keys

    def reset(self) -> None:
        """Forget recorded data, faults, reject rules and the keys add_key() added."""
        with self._lock:
            self._batches.clear()
            self._events.clear()
            self._requests.clear()
            self._more_keys.clear()
            self._key_faults.clear()
            self._faults = _Faults()
            self._reject_rules.clear()
            self._generation += 1
            self._hang_released.set()
            self._changed.notify_all()

    # -- faults -----------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 500, retry_after: str | None = None, key: str | None = None) -> None:
        """Answer the next ``count`` requests (of ``key`` only, if given) with ``status``
        before any validation.

        Replaces any earlier fail_next that has not fired yet. Takes precedence over
        fail_always; drop_next takes precedence over both. A key's own faults come before
        the ones of every request.
        """
        _check_fault_status(status)
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            faults = self._faults_of(key)
            faults.fail_next = count
            faults.fail_next_status = status
            faults.fail_next_retry_after = None if retry_after is None else str(retry_after)

    def fail_always(self, status: int = 500, retry_after: str | None = None, key: str | None = None) -> None:
        """Answer every request (of ``key`` only, if given) with ``status`` (before any
        validation) until heal()."""
        _check_fault_status(status)
        with self._lock:
            self._faults_of(key).fail_always = (status, None if retry_after is None else str(retry_after))

    def fail_for(
        self, seconds: float, status: int = 503, retry_after: str | int | None = None, key: str | None = None
    ) -> None:
        """Answer every request (of ``key`` only, if given) with ``status`` (and
        ``Retry-After``, if given) for the next ``seconds``, then heal by itself: a 429/503
        storm. Like fail_always, it comes before any validation; fail_next and the
        drop/reset/hang faults win over it."""
        _check_fault_status(status)
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            faults = self._faults_of(key)
            faults.fail_for = (status, None if retry_after is None else str(retry_after))
            faults.fail_until = time.monotonic() + seconds

    def _faults_of(self, key: str | None) -> _Faults:
        """The faults every request meets, or those of ``key``'s requests (under the lock)."""
        if key is None:
            return self._faults
        return self._key_faults.setdefault(key, _Faults())

    def hang(self) -> None:
        """Read every request and never answer it, until heal(), reset() or stop(); the
        connection is then closed unanswered. Logged at once, with status 0."""
        with self._lock:
            self._faults.hang = True
            self._hang_released.clear()

    def reset_next(self, count: int) -> None:
        """Answer the next ``count`` requests with a TCP reset (RST), not a clean close."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._faults.reset_next = count

    def heal(self) -> None:
        """Clear every fault (fail_*, delay, hang, drop, reset), a key's own too; reject rules stay."""
        with self._lock:
            self._faults = _Faults()
            self._key_faults.clear()
            self._hang_released.set()

    def reject_events(self, predicate: Callable[[dict], bool]) -> None:
        """Refuse (400) any request holding an event for which ``predicate`` is true.

        Rules add up; only reset() removes them. They run after the normal validation.
        """
        with self._lock:
            self._reject_rules.append(predicate)

    def set_delay(self, seconds: float) -> None:
        """Sleep ``seconds`` before answering (or dropping) each request."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._faults.delay_s = float(seconds)

    def drop_next(self, count: int) -> None:
        """Close the connection of the next ``count`` requests without any answer."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._faults.drop_next = count

    # -- used by the handler -------------------------------------------------------------

    def _take_fault(self, key: str | None = None) -> tuple[Any, float, int]:
        """Decide (and consume) the fault for one arriving request, presenting ``key``:
        that key's own faults first, then those of every request.

        Returns (fault, delay_s, generation); fault is "hang", "drop", "reset",
        (status, retry_after) or None.
        """
        with self._lock:
            gen = self._generation
            own = self._key_faults.get(key) if key is not None else None
            if own is not None:
                fault = self._consume(own)
                if fault is not None:
                    return fault, own.delay_s, gen
            fault = self._consume(self._faults)
            return fault, 0.0 if fault == "hang" else self._faults.delay_s, gen

    @staticmethod
    def _consume(f: _Faults) -> Any:
        if f.hang:
            return "hang"
        if f.drop_next > 0:
            f.drop_next -= 1
            return "drop"
        if f.reset_next > 0:
            f.reset_next -= 1
            return "reset"
        if f.fail_next > 0:
            f.fail_next -= 1
            return (f.fail_next_status, f.fail_next_retry_after)
        if f.fail_for is not None and time.monotonic() < f.fail_until:
            return f.fail_for
        return f.fail_always

    def _apply_reject_rules(self, events: list[dict]) -> _Answer | None:
        with self._lock:
            rules = list(self._reject_rules)
        for index, event in enumerate(events):
            for rule in rules:
                try:
                    refused = rule(copy.deepcopy(event))
                except Exception as exc:  # a broken test predicate: make it visible
                    return _Answer(500, f"stand-in reject rule raised {exc!r} on event {index}", index=index)
                if refused:
                    return _Answer(400, f"event {index}: refused by a reject rule (injected)", index=index)
        return None

    def _record(self, generation: int, entry: RequestLog, batch: AcceptedBatch | None = None) -> None:
        with self._changed:
            if generation != self._generation:
                return  # arrived before a reset()
            self._requests.append(entry)
            if batch is not None:
                self._batches.append(batch)
                self._events.extend(batch.events)
            self._changed.notify_all()


def _server_tls(tls: tuple[str, str], client_ca: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class StandInControl:
    """Drives a stand-in that runs as its own process, through its control endpoints:
    ``StandInControl(url).fail_for(5, status=429, retry_after=2)``, ``.requests()``..."""

    def __init__(self, base_url: str, timeout_s: float = 5.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context  # for an HTTPS stand-in: one that trusts its CA

    def _call(self, method: str, name: str, arguments: dict | None = None) -> Any:
        data = json.dumps(arguments).encode() if arguments is not None else None
        request = urllib.request.Request(f"{self.base_url}{CONTROL_PREFIX}{name}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.ssl_context) as response:
            return json.loads(response.read() or b"null")

    def events(self) -> list[dict]:
        return self._call("GET", "events")

    def requests(self) -> list[RequestLog]:
        return [RequestLog(**entry) for entry in self._call("GET", "requests")]

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in REMOTE_FAULTS:
            raise AttributeError(name)
        return lambda **arguments: self._call("POST", name, arguments)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.userflux_standin",
        description="Serve a local stand-in for UserFlux's Integration API.",
    )
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    parser.add_argument("--api-key", default="test-write-key", help="the accepted bearer key")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (needs --tls-key)")
    parser.add_argument("--tls-key", help="the certificate's PEM private key")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    standin = UserFluxStandIn(api_key=args.api_key, host=args.host, port=args.port, tls=tls).start()
    print(f"userflux stand-in listening on {standin.base_url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
