"""The first request of every batch, sent from the pipeline's own thread without blocking it.

Why here and not on a sender thread: with the interpreter lock, every hand-off between the
pipeline's thread and a sender thread (the batch out, the answer back, each wake from a
socket call) is a trip through the lock, and those trips cost more than the request
itself once the request is lean (README, "Benchmark"). So the pipeline's thread keeps up
to ``max_in_flight`` keep-alive connections, each carrying one request at a time:

* ``submit`` queues a batch and starts it on an idle connection;
* ``pump`` (at every step of the pipeline, and while it waits) writes what is unsent,
  reads what arrived, and finishes the requests whose answer is complete or whose time
  (``request_timeout_s``, for the whole request) is up.

Opening a connection blocks (name resolution, connect, the TLS handshake), so it happens
on a thread of its own (``dialer``); the pipeline's thread never waits on the network.

A 2xx completes the batch here. Any other outcome (another status, a timeout, a broken
connection) is reported to the gate like any sender's answer, and the batch goes to the
sender pool with it, where sender.py takes it on from that answer: backoff, Retry-After,
splitting, giving up, exactly as for a request it sent itself. While the gate holds, or
no connection can be opened, batches go straight to the pool, which waits at the gate.
The pool's busy threads count against ``max_in_flight`` too.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import time
from collections import deque
from typing import Any, Callable

import httpx

from .. import metrics
from ..batcher import Batch
from ..threads import daemon_thread
from . import http11
from .client import DELIVERED, RETRY, Route, UserFluxClient
from .request import encode_batch
from .sender import BatchResult
from .throttle import Gate, Ticket
from .transport import Connection

log = logging.getLogger("connector.sink")

REDIAL_AFTER_S = 1.0  # after a connection could not be opened, batches go to the pool this long


class Incomplete(Exception):
    """The answer has not arrived in full yet."""


class _Request:
    __slots__ = ("batch", "ticket", "unsent", "received", "started", "deadline")

    def __init__(self, batch: Batch, ticket: Ticket, data: bytes, started: float, deadline: float):
        self.batch = batch
        self.ticket = ticket
        self.unsent = memoryview(data)
        self.received = b""
        self.started = started
        self.deadline = deadline


class DirectSender:
    def __init__(self, client: UserFluxClient, route: Route, gate: Gate, pool: Any,
                 completions: "queue.Queue[BatchResult]", slots: int,
                 encode: Callable[[list[dict]], bytes] = encode_batch):
        self.client = client
        self.route = route
        self.gate = gate
        self.pool = pool  # SenderPool: submit(batch, tried), busy
        self.completions = completions
        self.slots = slots
        self.encode = encode
        self._idle: list[Connection] = []
        self._busy: dict[socket.socket, tuple[Connection, _Request]] = {}
        self._waiting: deque[Batch] = deque()
        self._dialing = 0
        self._dialed: "queue.SimpleQueue[Connection | BaseException]" = queue.SimpleQueue()
        self._dial_work: "queue.SimpleQueue[bool]" = queue.SimpleQueue()
        self._dialer: Any = None
        self._redial_at = 0.0
        self._closed = False
        self._delivered = metrics.requests.labels(DELIVERED, "204")

    @property
    def active(self) -> bool:
        """Whether ``pump`` has work: requests open, batches waiting, connections opening."""
        return bool(self._busy or self._waiting or self._dialing)

    @property
    def open(self) -> int:
        """Requests open on a connection."""
        return len(self._busy)

    # -- in ----------------------------------------------------------------------------------

    def submit(self, batch: Batch) -> None:
        self._waiting.append(batch)
        if not self._idle and self._busy:
            self.pump(0.0)  # answers that came in free their connections
        self._start()

    def _start(self) -> None:
        waiting, idle = self._waiting, self._idle
        while waiting:
            if self._closed or time.monotonic() < self._redial_at:
                self._to_pool()
                return
            room = self.slots - len(self._busy) - self.pool.busy
            if room <= 0:
                return  # a request finishing makes room
            if not idle:
                self._dial(min(room, len(waiting)) - self._dialing)
                return
            connection = idle.pop()
            if not connection.usable():
                connection.close()
                continue
            batch = waiting.popleft()
            if not any(item.offsets.owned for item in batch.items):  # revoked while it waited
                idle.append(connection)
                self.completions.put(BatchResult(batch, abandoned=list(batch.items)))
                continue
            ticket = self.gate.try_pass()
            if ticket is None:  # the gate holds: the pool's senders wait at it
                idle.append(connection)
                waiting.appendleft(batch)
                self._to_pool()
                return
            self._begin(connection, batch, ticket)

    def _to_pool(self) -> None:
        while self._waiting:
            self.pool.submit(self._waiting.popleft())

    def _begin(self, connection: Connection, batch: Batch, ticket: Ticket) -> None:
        route = self.route
        try:
            body = self.encode([item.event for item in batch.items])
        except (ValueError, TypeError, RecursionError):
            self.gate.cancel(ticket)
            self._idle.append(connection)
            self.pool.submit(batch)  # sender.py finds the event JSON cannot carry
            return
        headers = route.headers + [(b"Content-Length", str(len(body)).encode("ascii"))]
        data = http11.request_bytes(b"POST", route.targets[batch.location_enrichment], headers, body)
        metrics.batch_events.observe(len(batch.items))
        started = time.monotonic()
        request = _Request(batch, ticket, data, started, started + route.timeout_s)
        self._busy[connection.sock] = (connection, request)
        self._write(connection, request)

    # -- connections -------------------------------------------------------------------------

    def _dial(self, count: int) -> None:
        if self._dialer is None:
            self._dialer = daemon_thread(self._dial_loop, "dialer")
            self._dialer.start()
        for _ in range(max(0, count)):
            self._dialing += 1
            self._dial_work.put(True)

    def _dial_loop(self) -> None:
        route = self.route
        while self._dial_work.get():
            try:
                connection = Connection.open(route.origin, route.ssl_context, route.timeout_s)
                connection.sock.setblocking(False)
                self._dialed.put(connection)
            except BaseException as exc:  # told to the pipeline's thread, which decides
                self._dialed.put(exc)

    def _collect_dialed(self) -> None:
        while self._dialing:
            try:
                dialed = self._dialed.get_nowait()
            except queue.Empty:
                return
            self._dialing -= 1
            if isinstance(dialed, Connection):
                if self._closed:
                    dialed.close()
                else:
                    self._idle.append(dialed)
            else:
                # The pool's senders connect, retry and back off on their own; these
                # batches go to them until a connection can be opened again.
                log.debug("could not open a connection to UserFlux (%s); sending from the sender threads",
                          type(dialed).__name__)
                self._redial_at = time.monotonic() + REDIAL_AFTER_S

    # -- progress ----------------------------------------------------------------------------

    def pump(self, wait_s: float) -> None:
        """Move every open request on; wait up to ``wait_s`` for something to happen."""
        if self._dialing:
            self._collect_dialed()
        busy = self._busy
        if busy:
            readable: list[Any] = []
            writable: list[Any] = []
            for sock, (_connection, request) in busy.items():
                if request.unsent:
                    writable.append(sock)
                elif isinstance(sock, ssl.SSLSocket) and sock.pending():
                    wait_s = 0.0  # decrypted bytes already wait in the TLS layer
                    readable.append(sock)
                else:
                    readable.append(sock)
            ready_r, ready_w, _ = select.select(readable, writable, [], wait_s)
            for sock in ready_w:
                connection, request = busy[sock]
                self._write(connection, request)
            for sock in ready_r:
                if sock in busy:
                    self._read(*busy[sock])
            if busy:
                now = time.monotonic()
                for connection, request in [entry for entry in busy.values() if entry[1].deadline <= now]:
                    self._fail(connection, request, httpx.ReadTimeout(
                        f"no answer within {self.route.timeout_s} s"))
        if self._waiting:
            self._start()

    def _write(self, connection: Connection, request: _Request) -> None:
        try:
            sent = connection.sock.send(request.unsent)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except OSError as exc:
            self._fail(connection, request, httpx.WriteError(str(exc)))
            return
        request.unsent = request.unsent[sent:]

    def _read(self, connection: Connection, request: _Request) -> None:
        sock = connection.sock
        closed = False
        try:
            while True:
                data = sock.recv(65_536)
                if not data:
                    closed = True
                    break
                request.received += data
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    break
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as exc:
            self._fail(connection, request, httpx.ReadError(str(exc)))
            return
        try:
            answer = http11.read_answer(_replay(request.received, closed))
        except Incomplete:
            return
        except http11.ProtocolError as exc:
            self._fail(connection, request, httpx.RemoteProtocolError(str(exc)))
            return
        self._finish(connection, request, answer)

    def _finish(self, connection: Connection, request: _Request, answer: http11.Answer) -> None:
        del self._busy[connection.sock]
        if answer.reusable and not request.unsent:
            connection.used()
            self._idle.append(connection)
        else:
            connection.close()
        duration = time.monotonic() - request.started
        batch = request.batch
        if 200 <= answer.status < 300:
            self.gate.report(request.ticket, False)
            (self._delivered if answer.status == 204 else
             metrics.requests.labels(DELIVERED, str(answer.status))).inc()
            metrics.request_duration.observe(duration)
            self.completions.put(BatchResult(batch, delivered=list(batch.items), delivered_at=time.time()))
            return
        try:
            response = httpx.Response(answer.status, headers=answer.headers, content=answer.body,
                                      extensions={"reason_phrase": answer.reason})
            response.read()
        except httpx.RequestError as exc:  # e.g. a body that claims gzip but is not
            self._hand_over(request, self.client.failed(exc, duration))
            return
        self._hand_over(request, self.client.answered(response, duration))

    def _fail(self, connection: Connection, request: _Request, exc: httpx.RequestError) -> None:
        del self._busy[connection.sock]
        connection.close()
        self._hand_over(request, self.client.failed(exc, time.monotonic() - request.started))

    def _hand_over(self, request: _Request, answer: Any) -> None:
        held = self.gate.report(request.ticket, answer.outcome == RETRY, answer.retry_after_s)
        metrics.requests.labels(answer.outcome, answer.code).inc()
        metrics.request_duration.observe(answer.duration_s)
        self.pool.submit(request.batch, (answer, held))

    # -- out ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop: open requests are abandoned (their batches stay uncommitted)."""
        self._closed = True
        for connection, request in self._busy.values():
            self.gate.cancel(request.ticket)
            connection.close()
        self._busy.clear()
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        if self._dialer is not None:
            self._dial_work.put(False)


def _replay(received: bytes, closed: bool) -> Callable[[int], bytes]:
    """A ``recv`` over what has arrived: all of it once, then the close, or ``Incomplete``."""
    pieces = [received] if received else []

    def recv(max_bytes: int) -> bytes:
        if pieces:
            return pieces.pop()
        if closed:
            return b""
        raise Incomplete

    return recv
