"""The first request of every batch, sent from the pipeline's own thread without blocking it.

Why here and not on a sender thread: with the interpreter lock, every hand-off between the
pipeline's thread and a sender thread (the batch out, the answer back, each wake from a
socket call) is a trip through the lock, and those trips cost more than the request
itself once the request is lean (docs/benchmark.md, "Where the CPU goes"). So the
pipeline's thread keeps up to ``max_in_flight`` keep-alive connections, each carrying one
request at a time:

* ``submit`` queues a batch and starts it on an idle connection;
* ``pump`` (at every step of the pipeline, and while it waits) writes what is unsent,
  reads what arrived, and finishes the requests whose answer is complete or whose time
  (``request_timeout_s``, for the whole request) is up.

Opening a connection blocks (name resolution, connect, the TLS handshake), so it happens
on a thread of its own (``dialer``); the pipeline's thread never waits on the network.

Every answer is read by http11.py's ``AnswerReader`` as its bytes arrive, each byte
looked at once, within the same limits as the sender threads' reads; the answer, or its
absence, means what outcome.py says, as for any request, and is counted in the one place
(``outcome.record``). A 2xx completes the batch here. Any other outcome goes to the sender
pool with the batch, where sender.py takes it on from that answer: backoff, Retry-After,
splitting, giving up, exactly as for a request it sent itself. While the gate holds, or
no connection can be opened, batches go straight to the pool, which waits at the gate.
The pool's busy threads count against ``max_in_flight`` too.

Each destination (destination.py) has a lane of its own: its idle connections, its
batches waiting for one, its gate, its pool, and its ``max_in_flight`` (its open requests
and its pool's busy threads count against it). A batch takes its destination's lane, so a
destination whose gate holds (a ``Retry-After``, the shared backoff, its rate cap) or
whose address cannot be reached sends its batches to its own senders and holds back no
other. A destination behind a proxy sends every batch through its senders.

The connection rules are connection.py's: an idle connection is checked for unread bytes
before each reuse, a request is bounded by ``request_timeout_s`` in all, and a server that
answers before it has read the whole request (then closes) is heard: the socket is read
while the request is still being written.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .. import metrics
from ..batcher import Batch
from ..threads import daemon_thread
from . import outcome
from .connection import Connection
from .errors import ReadError, ReadTimeout, TransportError, WriteError, WriteTimeout
from .http11 import AnswerReader, Response
from .outcome import DELIVERED
from .request import encode_batch
from .sender import BatchResult
from .throttle import Gate, Ticket

log = logging.getLogger("connector.sink")

REDIAL_AFTER_S = 1.0  # after a connection could not be opened, batches go to the pool this long
_RECV = 65_536
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _Lane:
    """One destination's share of the direct path."""

    __slots__ = ("name", "route", "gate", "pool", "direct", "idle", "waiting", "open", "dialing", "redial_at")

    def __init__(self, destination: Any):
        self.name: str = destination.name
        self.route = destination.route
        self.gate: Gate = destination.gate
        self.pool = destination.pool  # SenderPool: submit(batch, tried), busy
        self.direct: bool = destination.direct  # False behind a proxy: every batch goes to the pool
        self.idle: list[Connection] = []
        self.waiting: deque[Batch] = deque()
        self.open = 0  # requests open on a connection
        self.dialing = 0  # connections being opened
        self.redial_at = 0.0  # after a connection could not be opened: the pool's, until then


class _Request:
    __slots__ = ("lane", "batch", "ticket", "unsent", "reader", "write_error", "started", "deadline")

    def __init__(self, lane: _Lane, batch: Batch, ticket: Ticket, data: bytes, started: float, deadline: float):
        self.lane = lane
        self.batch = batch
        self.ticket = ticket
        self.unsent = memoryview(data)
        self.reader = AnswerReader()
        self.write_error: TransportError | None = None  # writing failed: only an early answer can save it
        self.started = started
        self.deadline = deadline


class DirectSender:
    def __init__(
        self,
        destinations: Iterable[Any],
        completions: queue.Queue[BatchResult],
        slots: int,
        encode: Callable[[list[dict]], bytes] = encode_batch,
    ):
        """``destinations``: destination.py's (name, route, gate, pool, direct), one lane each;
        ``slots``: each destination's max_in_flight."""
        self._lanes = {destination.name: _Lane(destination) for destination in destinations}
        self._lane_list = list(self._lanes.values())
        self.completions = completions
        self.slots = slots
        self.encode = encode
        self._busy: dict[socket.socket, tuple[Connection, _Request]] = {}
        self._dialing = 0
        self._dialed: queue.SimpleQueue[tuple[_Lane, Connection | BaseException]] = queue.SimpleQueue()
        self._dial_work: queue.SimpleQueue[_Lane | None] = queue.SimpleQueue()
        self._dialer: Any = None
        self._closed = False

    @property
    def active(self) -> bool:
        """Whether ``pump`` has work: requests open, batches waiting, connections opening."""
        if self._busy or self._dialing:
            return True
        for lane in self._lane_list:
            if lane.waiting:
                return True
        return False

    @property
    def open(self) -> int:
        """Requests open on a connection."""
        return len(self._busy)

    # -- in ----------------------------------------------------------------------------------

    def submit(self, batch: Batch) -> None:
        lane = self._lanes[batch.destination]
        lane.waiting.append(batch)
        if not lane.idle and lane.open:
            self.pump(0.0)  # answers that came in free their connections
        self._start(lane)

    def _start(self, lane: _Lane) -> None:
        waiting, idle = lane.waiting, lane.idle
        while waiting:
            if self._closed or not lane.direct or time.monotonic() < lane.redial_at:
                self._to_pool(lane)
                return
            room = self.slots - lane.open - lane.pool.busy
            if room <= 0:
                return  # a request finishing makes room
            if not idle:
                self._dial(lane, min(room, len(waiting)) - lane.dialing)
                return
            connection = idle.pop()
            if not connection.usable():  # the reuse check: expired, closed, or bytes nobody asked for
                connection.close()
                continue
            batch = waiting.popleft()
            if not any(item.offsets.owned for item in batch.items):  # revoked while it waited
                idle.append(connection)
                self.completions.put(BatchResult(batch, abandoned=list(batch.items)))
                continue
            ticket = lane.gate.try_pass(len(batch.items))
            if ticket is None:  # the gate holds, or the rate cap says wait: the pool's senders wait at it
                idle.append(connection)
                waiting.appendleft(batch)
                self._to_pool(lane)
                return
            self._begin(lane, connection, batch, ticket)

    def _to_pool(self, lane: _Lane) -> None:
        while lane.waiting:
            lane.pool.submit(lane.waiting.popleft())

    def _begin(self, lane: _Lane, connection: Connection, batch: Batch, ticket: Ticket) -> None:
        try:
            body = self.encode([item.event for item in batch.items])
        except (ValueError, TypeError, RecursionError):
            lane.gate.cancel(ticket)
            lane.idle.append(connection)
            lane.pool.submit(batch)  # sender.py finds the event JSON cannot carry
            return
        route = lane.route
        data = route.request(body, batch.location_enrichment)
        metrics.batch_events.observe(len(batch.items))
        started = time.monotonic()
        request = _Request(lane, batch, ticket, data, started, started + route.timeout_s)
        connection.reusable = False  # until its answer says otherwise
        lane.open += 1
        self._busy[connection.sock] = (connection, request)
        self._write(connection, request)

    # -- connections -------------------------------------------------------------------------

    def _dial(self, lane: _Lane, count: int) -> None:
        if self._dialer is None:
            self._dialer = daemon_thread(self._dial_loop, "dialer")
            self._dialer.start()
        for _ in range(max(0, count)):
            self._dialing += 1
            lane.dialing += 1
            self._dial_work.put(lane)

    def _dial_loop(self) -> None:
        while (lane := self._dial_work.get()) is not None:
            route = lane.route
            try:
                connection = Connection.open(route.origin, route.ssl_context, route.timeout_s)
                connection.sock.setblocking(False)
                self._dialed.put((lane, connection))
            except BaseException as exc:  # told to the pipeline's thread, which decides
                self._dialed.put((lane, exc))

    def _collect_dialed(self) -> None:
        while self._dialing:
            try:
                lane, dialed = self._dialed.get_nowait()
            except queue.Empty:
                return
            self._dialing -= 1
            lane.dialing -= 1
            if isinstance(dialed, Connection):
                if self._closed:
                    dialed.close()
                else:
                    lane.idle.append(dialed)
            else:
                # The pool's senders connect, retry and back off on their own; these
                # batches go to them until a connection can be opened again.
                log.debug(
                    "could not open a connection to UserFlux (destination %s: %s); sending from the sender threads",
                    lane.name,
                    type(dialed).__name__,
                )
                lane.redial_at = time.monotonic() + REDIAL_AFTER_S

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
                readable.append(sock)  # an answer may come before the request is written in full
                if request.unsent and request.write_error is None:
                    writable.append(sock)
                if isinstance(sock, ssl.SSLSocket) and sock.pending():
                    wait_s = 0.0  # decrypted bytes already wait in the TLS layer
            ready_r, ready_w, _ = select.select(readable, writable, [], wait_s)
            for sock in ready_w:
                if sock in busy:
                    self._write(*busy[sock])
            for sock in ready_r:
                if sock in busy:
                    self._read(*busy[sock])
            if isinstance(readable[0], ssl.SSLSocket):
                for sock in [s for s in busy if isinstance(s, ssl.SSLSocket) and s.pending()]:
                    self._read(*busy[sock])  # read past what select saw
            if busy:
                now = time.monotonic()
                for connection, request in [entry for entry in busy.values() if entry[1].deadline <= now]:
                    self._expire(connection, request)
        for lane in self._lane_list:
            if lane.waiting:
                self._start(lane)

    def _write(self, connection: Connection, request: _Request) -> None:
        try:
            sent = connection.sock.send(request.unsent)
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            # The server may have answered and closed before reading it all (a 413): keep
            # reading; its answer, if it sent one, is the request's (_end).
            request.write_error = WriteError(f"sending the request: {exc.strerror or exc}")
            return
        request.unsent = request.unsent[sent:]

    def _read(self, connection: Connection, request: _Request) -> None:
        sock, reader = connection.sock, request.reader
        answer: Response | None = None
        try:
            while answer is None:
                data = sock.recv(_RECV)
                if not data:
                    self._end(connection, request, reader.close())
                    return
                answer = reader.feed(data)
                if answer is None and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    return
        except _WOULD_BLOCK:
            return
        except TransportError as exc:  # not an answer (http11.py), or closed before its head
            self._end(connection, request, error=exc)
            return
        except OSError as exc:  # reset
            why = f"reading the answer: {exc.strerror or exc}"
            answer = reader.cut_short(why)
            if answer is None:
                self._end(connection, request, error=ReadError(why))
                return
        self._end(connection, request, answer)

    def _expire(self, connection: Connection, request: _Request) -> None:
        """``request_timeout_s`` is up: the answer as far as it came, if its head did."""
        timeout_s = request.lane.route.timeout_s
        why = f"no complete answer within {timeout_s:g} s"
        answer = request.reader.cut_short(why)
        if answer is not None:
            self._end(connection, request, answer)
        elif request.unsent and request.write_error is None:
            self._end(
                connection,
                request,
                error=WriteTimeout(f"sending the request took longer than {timeout_s:g} s"),
            )
        else:
            self._end(connection, request, error=ReadTimeout(why))

    def _end(
        self,
        connection: Connection,
        request: _Request,
        answer: Response | None = None,
        error: TransportError | None = None,
    ) -> None:
        """The request is over: with an answer, or with ``error``."""
        del self._busy[connection.sock]
        lane = request.lane
        lane.open -= 1
        if answer is not None and request.unsent and 200 <= answer.status < 300:
            # Answered 2xx before it had the whole request: UserFlux cannot have stored it.
            error, answer = (
                WriteError(
                    f"{request.write_error or 'the request was not sent in full'}; the server "
                    f"answered {answer.status} before it had the whole request"
                ),
                None,
            )
        elif answer is None and error is not None and request.write_error is not None:
            error = request.write_error  # nothing was heard after the write failed: that is what happened
        if answer is not None and answer.reusable and not request.unsent:
            connection.used(answer)
            lane.idle.append(connection)
        else:
            connection.close()
        duration = time.monotonic() - request.started
        if answer is not None:
            result = outcome.of_response(answer, duration, lane.route.key)
        else:
            assert error is not None
            result = outcome.of_error(error, duration)
        held = outcome.record(lane.gate, request.ticket, result)
        batch = request.batch
        if result.kind == DELIVERED:
            self.completions.put(BatchResult(batch, delivered=list(batch.items), delivered_at=time.time()))
        else:
            lane.pool.submit(batch, (result, held))

    # -- out ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop: open requests are abandoned (their batches stay uncommitted)."""
        self._closed = True
        for connection, request in self._busy.values():
            request.lane.gate.cancel(request.ticket, sent=True)
            request.lane.open -= 1
            connection.close()
        self._busy.clear()
        for lane in self._lane_list:
            for connection in lane.idle:
                connection.close()
            lane.idle.clear()
        if self._dialer is not None:
            self._dial_work.put(None)
