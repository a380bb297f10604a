"""The benchmark's sink (tests/benchmark/sink.py), run as its own process on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from tests.benchmark.sink import FULL_CHECK_EVERY, SinkProcess

KEY = "bench-test-key"
PATH = "/event/ingest/batch?locationEnrichment=false"


def event(i: int = 0, **over) -> dict:
    return {
        "name": "page_view",
        "userId": f"u{i}",
        "timestamp": int(time.time() * 1000),
        "properties": {"i": i},
        **over,
    }


def body(events: list[dict]) -> bytes:
    return json.dumps({"events": events}, separators=(",", ":")).encode()


def raw_request(payload: bytes, key: str = KEY) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


def read_answers(sock: socket.socket, count: int, timeout_s: float = 5.0) -> list[int]:
    """The status codes of ``count`` answers read from ``sock``, in the order they came."""
    sock.settimeout(timeout_s)
    data, statuses = b"", []
    while len(statuses) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {statuses}"
            data += chunk
            continue
        head = data[:head_end].decode()
        length = next(
            (int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")), 0
        )
        if len(data) < head_end + 4 + length:
            data += sock.recv(65536)
            continue
        statuses.append(int(head.split(" ")[1]))
        data = data[head_end + 4 + length :]
    return statuses


@pytest.fixture(scope="module")
def sink():
    with SinkProcess(KEY) as process:
        yield process


@pytest.fixture(scope="module")
def client(sink):
    with httpx.Client(base_url=sink.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5) as c:
        yield c


def post(client: httpx.Client, payload: bytes, **headers: str) -> httpx.Response:
    return client.post(PATH, content=payload, headers={"Content-Type": "application/json", **headers})


def test_a_valid_batch_is_answered_204_and_its_events_counted(sink, client):
    before = sink.stats()
    answer = post(client, body([event(0), event(1, userId=None, anonymousId="a1"), event(2)]))
    assert answer.status_code == 204 and answer.content == b""
    after = sink.stats()
    assert after["events"] - before["events"] == 3
    assert after["requests"] - before["requests"] == 1


def test_a_wrong_key_is_refused_with_401_and_nothing_counted(sink, client):
    before = sink.stats()
    assert post(client, body([event()]), Authorization="Bearer other").status_code == 401
    after = sink.stats()
    assert after["events"] == before["events"]
    assert after["refused"]["401"] - before["refused"].get("401", 0) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b'{"batch":[{"timestamp":1}]}',
        body([]),
        body([{"name": "no_timestamp", "userId": "u"}]),
        body([event(i) for i in range(51)]),
    ],
    ids=["not-events", "empty", "no-timestamp", "51-events"],
)
def test_a_body_that_is_not_a_batch_of_1_to_50_events_is_refused_with_400(client, payload):
    assert post(client, payload).status_code == 400


def test_the_first_request_and_every_64th_are_checked_event_by_event():
    bad = body([event(0), event(1, name="page view")])
    with (
        SinkProcess(KEY) as sink,
        httpx.Client(base_url=sink.base_url, headers={"Authorization": f"Bearer {KEY}"}) as c,
    ):
        assert post(c, bad).status_code == 400  # the first: checked in full
        statuses = [post(c, bad).status_code for _ in range(FULL_CHECK_EVERY)]
        assert statuses[: FULL_CHECK_EVERY - 1] == [204] * (FULL_CHECK_EVERY - 1)  # the cheap check only
        assert statuses[-1] == 400
        assert sink.stats()["full_checks"] == 2


def test_down_answers_503_with_retry_after_until_it_is_told_to_come_up():
    with (
        SinkProcess(KEY, down=True, retry_after_s=2) as sink,
        httpx.Client(base_url=sink.base_url, headers={"Authorization": f"Bearer {KEY}"}) as c,
    ):
        answer = post(c, body([event()]))
        assert (answer.status_code, answer.headers["retry-after"]) == (503, "2")
        sink.up()
        assert post(c, body([event()])).status_code == 204
        stats = sink.stats()
        assert (stats["events"], stats["refused"], stats["down"]) == (1, {"503": 1}, False)
    assert sink.process.returncode == 0  # stopped by SIGTERM, cleanly


def test_a_delay_holds_each_answer_without_holding_other_connections_and_keeps_the_order():
    delay_s = 0.3
    with SinkProcess(KEY, delay_ms=delay_s * 1000) as sink:
        host, port = sink.address.rsplit(":", 1)
        durations: list[float] = []

        def one() -> None:
            with socket.create_connection((host, int(port))) as sock:
                started = time.monotonic()
                sock.sendall(raw_request(body([event()])))
                assert read_answers(sock, 1) == [204]
                durations.append(time.monotonic() - started)

        started = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(durations) == 6 and min(durations) >= delay_s
        assert time.monotonic() - started < 3 * delay_s  # together, not one after the other

        # Pipelined on one connection: answered in the order asked, the refused one included.
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                raw_request(body([event()]))
                + raw_request(body([event()]), key="wrong")
                + raw_request(body([event(), event()]))
            )
            assert read_answers(sock, 3) == [204, 401, 204]
        assert sink.stats()["events"] == 6 + 3


def test_a_request_arriving_in_pieces_is_read_whole(sink):
    host, port = sink.address.rsplit(":", 1)
    request = raw_request(body([event(i) for i in range(50)]))
    before = sink.stats()["events"]
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(request), 700):
            sock.sendall(request[start : start + 700])
            time.sleep(0.001)
        assert read_answers(sock, 1) == [204]
    assert sink.stats()["events"] - before == 50


def test_latency_is_recorded_when_asked_from_each_events_timestamp_to_the_answer(sink, client):
    post(client, body([event()]))  # before recording: not counted
    sink.record_latency()
    now_ms = int(time.time() * 1000)
    assert (
        post(
            client,
            body(
                [
                    event(0, timestamp=now_ms - 2_000),
                    event(1, timestamp=now_ms - 1_000),
                    event(2, timestamp=now_ms - 1_000),
                ]
            ),
        ).status_code
        == 204
    )
    latency = sink.latency()
    assert latency["count"] == sink.stats()["latency_recorded"] == 3
    assert 1_000 <= latency["p50"] < 1_500
    assert 2_000 <= latency["max"] < 2_500
