"""The delivery promise against a hostile server, over real sockets, on both paths a request
takes (a sender thread's blocking connection, and the pipeline thread's non-blocking one
in direct.py), over plain TCP and over TLS.

What is asserted is the promise itself, not how the code gets there:

* no batch counts as delivered unless its own answer said 2xx;
* a connection holding bytes nobody asked for is never used again;
* no request, and never the pipeline's thread, is held past ``request_timeout_s``;
* memory stays bounded whatever the server sends;
* a server that refuses the request before reading it all is heard (the batch is split,
  not retried forever).
"""

from __future__ import annotations

import queue
import threading
import time

import pytest

from connector.batcher import Batch
from connector.config.model import Secret, TlsSettings
from connector.sink import http11
from connector.sink.client import UserFluxClient, make_route
from connector.sink.destination import Destination
from connector.sink.direct import DirectSender
from connector.sink.outcome import DELIVERED, REJECT, RETRY
from connector.sink.request import encode_batch
from connector.sink.retry import RetryPolicy
from connector.sink.sender import BatchSender
from connector.sink.throttle import Gate
from tests.conftest import API_KEY
from tests.support.fakes import make_items
from tests.support.hostile_server import ANSWER_204, HostileServer, Peer, answer_each

FAST = RetryPolicy(initial_backoff_s=0.002, max_backoff_s=0.01)
TIMEOUT_S = 0.6
SLACK_S = 0.4  # scheduling on a busy 2-core machine


class ThreadPath:
    """A sender thread's requests: UserFluxClient.post_batch on its own connection."""

    name = "threads"

    def __init__(self, base_url: str, tls: TlsSettings | None, timeout_s: float):
        self.client = UserFluxClient(make_route(base_url, Secret(API_KEY), timeout_s, tls))

    def post(self, batch: Batch) -> tuple[str, str]:
        answer = self.client.post_batch(encode_batch([item.event for item in batch.items]), False)
        assert answer is not None
        return answer.kind, answer.code

    def close(self) -> None:
        self.client.close()


class FakePool:
    def __init__(self) -> None:
        self.submitted: list[tuple[Batch, object]] = []
        self.busy = 0

    def submit(self, batch: Batch, tried: object = None) -> None:
        self.submitted.append((batch, tried))


class DirectPath:
    """The pipeline thread's requests: DirectSender, pumped as the pipeline pumps it; the
    longest single pump is kept (the loop's thread must never be held)."""

    name = "direct"

    def __init__(self, base_url: str, tls: TlsSettings | None, timeout_s: float):
        self.pool = FakePool()
        self.completions: queue.Queue = queue.Queue()
        self.gate = Gate(FAST)
        client = UserFluxClient(make_route(base_url, Secret(API_KEY), timeout_s, tls))
        self.direct = DirectSender([Destination("default", client, self.gate, self.pool)], self.completions, slots=1)
        self.longest_pump = 0.0

    def post(self, batch: Batch) -> tuple[str, str]:
        # After failures in a row the gate holds every sender for a while, and batches go
        # to the pool unsent meanwhile; wait it out, as the pool's senders would.
        time.sleep(max(0.0, self.gate.until - time.monotonic()))
        before = len(self.pool.submitted)
        self.direct.submit(batch)
        deadline = time.monotonic() + 30
        while self.direct.active:
            assert time.monotonic() < deadline, "the request never ended"
            started = time.monotonic()
            self.direct.pump(0.01)
            self.longest_pump = max(self.longest_pump, time.monotonic() - started)
        if len(self.pool.submitted) > before:
            handed, tried = self.pool.submitted[-1]
            assert handed is batch
            if tried is None:
                return "unsent", ""  # no connection could be opened: the pool's to send
            answer, _held = tried
            return answer.kind, answer.code
        result = self.completions.get_nowait()
        assert result.batch is batch and result.delivered == batch.items
        return DELIVERED, "2xx"

    def close(self) -> None:
        self.direct.close()


@pytest.fixture(params=["plain", "tls"])
def tls(request, certs) -> TlsSettings | None:
    return TlsSettings(ca_file=str(certs.ca)) if request.param == "tls" else None


@pytest.fixture(params=[ThreadPath, DirectPath], ids=["threads", "direct"])
def make_path(request, tls, certs):
    made = []

    def make(*scripts, timeout_s: float = TIMEOUT_S):
        server = HostileServer(*scripts, tls=(str(certs.server_cert), str(certs.server_key)) if tls else None)
        path = request.param(server.base_url, tls, timeout_s)
        made.append((server, path))
        return server, path

    yield make
    for server, path in made:
        path.close()
        server.stop()
        if isinstance(path, DirectPath):
            assert path.longest_pump < 0.25, f"the pipeline's thread was held {path.longest_pump:.2f} s"


def batch(n: int = 2, size: int = 0) -> Batch:
    items = make_items(n)
    if size:
        for item in items:
            item.event["properties"] = {"blob": "x" * size}
    return Batch(False, time.monotonic(), items)


# -- 1. an answer is never read for the wrong request ----------------------------------------------


def stray_after_answer(stray: bytes, then_close: bool):
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(ANSWER_204)
        peer.rest(0.05)
        peer.send(stray)  # while the connection rests
        if then_close:
            peer.close()
            return
        if peer.read_request():  # only a client that reuses it gets here
            peer.send(ANSWER_204)
        peer.wait_closed()

    return script


@pytest.mark.parametrize(
    "stray, then_close",
    [
        (ANSWER_204, False),  # a stray 2xx: read for the next batch, it would count it as delivered
        (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"H", False),  # a single byte
    ],
)
def test_bytes_on_a_resting_connection_are_never_read_as_the_next_answer(make_path, stray, then_close):
    server, path = make_path(
        stray_after_answer(stray, then_close),
        answer_each(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
    )
    assert path.post(batch()) == (DELIVERED, "2xx" if path.name == "direct" else "204")
    time.sleep(0.2)
    # The next batch goes out on a new connection, whose answer is its own: 503, not delivered.
    assert path.post(batch()) == (RETRY, "503")
    assert server.connections == 2 and len(server.requests) == 2


def test_a_connection_is_reused_when_nothing_arrived_on_it(make_path):
    server, path = make_path(answer_each(ANSWER_204))
    for _ in range(3):
        assert path.post(batch())[0] == DELIVERED
        time.sleep(0.05)
    assert server.connections == 1


# -- 2. a refusal sent before the request was read is heard ----------------------------------------


def refuse_early(close: str):
    def script(peer: Peer) -> None:
        if not peer.read_head():
            return
        peer.send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
        peer.rest(0.05)
        peer.reset() if close == "reset" else peer.close()

    return script


@pytest.mark.parametrize("close", ["close", "reset"])
def test_a_413_sent_while_the_body_is_still_being_written_is_the_answer(make_path, close):
    server, path = make_path(refuse_early(close))
    assert path.post(batch(2, size=3_000_000)) == (REJECT, "413")


@pytest.mark.parametrize("close", ["close", "reset"])
def test_an_early_refusal_splits_the_batch_instead_of_retrying_it_forever(tls, certs, close):
    files = (str(certs.server_cert), str(certs.server_key)) if tls else None
    with HostileServer(refuse_early(close), tls=files) as server:
        client = UserFluxClient(make_route(server.base_url, Secret(API_KEY), TIMEOUT_S, tls))
        try:
            started = time.monotonic()
            result = BatchSender(client, RetryPolicy(0.002, 0.01, max_attempts=0), threading.Event()).send(
                batch(2, size=3_000_000)
            )
        finally:
            client.close()
    assert [item.event["name"] for item, _ in result.refused] == ["evt_0", "evt_1"]
    assert "413" in result.refused[0][1] and result.delivered == [] and result.failure is None
    assert server.connections == 3 and time.monotonic() - started < 10  # the batch, then each half


def test_a_2xx_before_the_request_was_written_in_full_is_not_believed(make_path):
    def script(peer: Peer) -> None:
        if peer.read_head():
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            peer.rest(0.05)
            peer.reset()

    server, path = make_path(script)
    assert path.post(batch(2, size=3_000_000)) == (RETRY, "connection")


# -- 3. however the answer arrives -----------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, expected",
    [
        (b"HTTP/1.1 204 No Content\r\nServer: slow\r\n\r\n", DELIVERED),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nslow", RETRY),
        (b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n", REJECT),
    ],
)
def test_an_answer_sent_a_byte_at_a_time(make_path, answer, expected):
    def script(peer: Peer) -> None:
        while peer.read_request():
            peer.send(answer, piece=1, pause_s=0.004)

    server, path = make_path(script, timeout_s=5.0)
    assert path.post(batch())[0] == expected
    assert path.post(batch())[0] == expected  # and the connection stays in step
    assert server.connections == 1


ANSWER_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
HEAD_END = ANSWER_200.index(b"\r\n\r\n") + 4


def test_a_server_that_closes_at_every_point_of_an_answer(make_path):
    cuts = list(range(len(ANSWER_200)))

    def script(peer: Peer) -> None:
        with peer.server.lock:
            cut = cuts.pop(0)
        if peer.read_request():
            peer.send(ANSWER_200[:cut])
            peer.close()

    server, path = make_path(script)
    for cut in range(len(ANSWER_200)):
        kind, code = path.post(batch(1))
        # Delivered only once the whole head said 200; the body is the server's business.
        assert kind == (DELIVERED if cut >= HEAD_END else RETRY), (cut, kind, code)
    assert server.connections == len(ANSWER_200)


def test_a_server_that_resets_in_the_middle_of_the_head(make_path):
    def script(peer: Peer) -> None:
        if peer.read_request():
            peer.send(b"HTTP/1.1 204 No Con")
            peer.rest(0.02)
            peer.reset()

    server, path = make_path(script)
    assert path.post(batch()) == (RETRY, "connection")


# -- 4. nothing is held past request_timeout_s -----------------------------------------------------


@pytest.mark.parametrize(
    "first, piece, pause_s",
    [
        (b"HTTP/1.1 200 OK\r\nX-Endless: ", b"a", 0.05),  # a head that never ends
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n", 0.08),  # interim answers, fewer than the limit on their number
        (b"HTTP/1.1 200 OK\r\n", b"", 0.0),  # half a head, then nothing
    ],
)
def test_an_answer_trickled_forever_ends_at_the_request_timeout(make_path, first, piece, pause_s):
    def script(peer: Peer) -> None:
        if peer.read_request():
            peer.send(first)
            if piece:
                peer.send_forever(piece, pause_s=pause_s, limit_bytes=10_000)
            peer.wait_closed()

    server, path = make_path(script)
    started = time.monotonic()
    assert path.post(batch()) == (RETRY, "timeout")
    assert time.monotonic() - started < TIMEOUT_S + SLACK_S


def test_a_2xx_whose_body_trickles_forever_is_delivered_at_the_timeout(make_path):
    def script(peer: Peer) -> None:
        if peer.read_request():
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            peer.send_forever(b".", pause_s=0.05, limit_bytes=10_000)

    server, path = make_path(script)
    started = time.monotonic()
    assert path.post(batch())[0] == DELIVERED  # the head said 200: UserFlux stored it
    assert time.monotonic() - started < TIMEOUT_S + SLACK_S


def test_a_server_that_never_answers(make_path):
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.wait_closed()

    server, path = make_path(script)
    started = time.monotonic()
    assert path.post(batch()) == (RETRY, "timeout")
    assert TIMEOUT_S - 0.05 <= time.monotonic() - started < TIMEOUT_S + SLACK_S


# -- 5. memory stays bounded -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, piece, expected",
    [
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", b"x" * 65_536, (RETRY, "502")),  # a body until the close
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"10000\r\n" + b"x" * 65_536 + b"\r\n",
            (DELIVERED, None),
        ),
        (b"HTTP/1.1 200 OK\r\n", b"X-Header: " + b"h" * 1000 + b"\r\n", (RETRY, "connection")),
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n", (RETRY, "connection")),
    ],
)
def test_an_endless_answer_is_cut_at_the_limits(make_path, head, piece, expected):
    def script(peer: Peer) -> None:
        if peer.read_request():
            peer.send(head)
            peer.send_forever(piece, limit_bytes=64 * 1024 * 1024)

    server, path = make_path(script, timeout_s=10.0)
    started = time.monotonic()
    kind, code = path.post(batch())
    assert kind == expected[0] and (expected[1] is None or code == expected[1])
    assert time.monotonic() - started < 5
    [peer] = server.peers
    # What the client took in, bounded by the reader's limit plus what the kernel buffers.
    assert peer.sent < http11.MAX_BODY + 16 * 1024 * 1024


# -- 6. one rule for both paths --------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, expected",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 8\r\n\r\nnot gzip", (DELIVERED, None)),
        (b"HTTP/1.1 502 Bad Gateway\r\nContent-Encoding: gzip\r\nContent-Length: 8\r\n\r\nnot gzip", (RETRY, "502")),
        (b"HTTP/1.1 200 OK\nContent-Length: 3, 3\n\nabc", (DELIVERED, None)),
        (b"HTTP/1.1 201 Created\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n", (DELIVERED, None)),
        (b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n", (REJECT, "413")),
        (b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", (RETRY, "connection")),
    ],
)
def test_both_paths_read_an_answer_the_same_way(make_path, answer, expected):
    server, path = make_path(answer_each(answer))
    kind, code = path.post(batch())
    assert kind == expected[0] and (expected[1] is None or code == expected[1])
