"""Tests of the local UserFlux stand-in itself (tests/support/userflux_standin.py)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY as KEY
from tests.support.fakes import TS
from tests.support.kafka_tools import wait_until
from tests.support.userflux_standin import AcceptedBatch, RequestLog, StandInControl, UserFluxStandIn

AUTH = {"Authorization": f"Bearer {KEY}"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def ev(i: int = 0, **over) -> dict:
    event = {"userId": f"u{i}", "name": "page_view", "timestamp": TS + i, "properties": {"i": i}}
    event.update(over)
    return event


@pytest.fixture(scope="module")
def shared_client(standin_server):
    # One client for the module: building an httpx.Client (TLS context) costs ~50 ms.
    with httpx.Client(base_url=standin_server.base_url, headers=AUTH, timeout=2.0) as c:
        yield c


@pytest.fixture
def client(standin, shared_client):
    return shared_client


def post_batch(client: httpx.Client, events, **kw) -> httpx.Response:
    params = kw.pop("params", {"locationEnrichment": "false"})
    return client.post("/event/ingest/batch", params=params, json={"events": events}, **kw)


# -- the happy path --------------------------------------------------------------------


def test_valid_batch_is_accepted_and_recorded(standin, client):
    r = post_batch(client, [ev(0), ev(1, anonymousId="a1")], params={"locationEnrichment": "true"})
    assert r.status_code == 204
    assert r.content == b""
    assert standin.events() == [ev(0), ev(1, anonymousId="a1")]
    assert standin.batches() == [
        AcceptedBatch(events=[ev(0), ev(1, anonymousId="a1")], location_enrichment=True, path="/event/ingest/batch")
    ]
    [log] = standin.requests()
    assert log == RequestLog(
        method="POST",
        path="/event/ingest/batch",
        query={"locationEnrichment": "true"},
        status=204,
        event_count=2,
        authorization_ok=True,
        error=None,
    )


def test_location_enrichment_false_and_absent(standin, client):
    assert post_batch(client, [ev(0)], params={"locationEnrichment": "false"}).status_code == 204
    assert post_batch(client, [ev(1)], params={}).status_code == 204
    assert [b.location_enrichment for b in standin.batches()] == [False, None]


def test_single_event_endpoint(standin, client):
    r = client.post("/event/ingest", json=ev(7, userId="x"))
    assert r.status_code == 204
    assert standin.batches()[0].path == "/event/ingest"
    assert standin.events()[0]["userId"] == "x"


def test_chunked_body_is_read(standin, client):
    body = json.dumps({"events": [ev(0), ev(1)]}).encode()
    r = client.post(
        "/event/ingest/batch",
        content=iter([body[:10], body[10:]]),  # an iterator makes httpx send it chunked
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 204
    assert standin.events() == [ev(0), ev(1)]
    assert post_batch(client, [ev(2)]).status_code == 204  # connection still in sync


def test_snapshots_are_copies(standin, client):
    post_batch(client, [ev(0)])
    standin.events()[0]["name"] = "mutated"
    standin.batches()[0].events.clear()
    assert standin.events() == [ev(0)]


def test_keep_alive_connection_is_reused_across_answers(standin):
    host, port = standin.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    body = json.dumps({"events": [ev(0)]})
    headers = {**AUTH, "Content-Type": "application/json"}
    statuses = []
    sock = None
    for bad in (False, True, False):
        conn.request("POST", "/event/ingest/batch", body="{" if bad else body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
        assert not resp.will_close
        sock = sock or conn.sock
        assert conn.sock is sock  # same TCP connection every time
    conn.close()
    assert statuses == [204, 400, 204]


# -- refusals --------------------------------------------------------------------------


def test_wrong_key_is_401(standin, client):
    r = post_batch(client, [ev(0)], headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert "error" in r.json()
    assert standin.events() == []
    assert standin.requests()[-1].authorization_ok is False


def test_missing_authorization_is_401(standin):
    r = httpx.post(f"{standin.base_url}/event/ingest/batch", json={"events": [ev(0)]})
    assert r.status_code == 401


def test_51_events_is_400_naming_the_cap(standin, client):
    r = post_batch(client, [ev(i) for i in range(51)])
    assert r.status_code == 400
    assert "50" in r.json()["error"]
    assert standin.requests()[-1].event_count == 51
    assert post_batch(client, [ev(i) for i in range(50)]).status_code == 204
    assert len(standin.events()) == 50


@pytest.mark.parametrize(
    "path, method, status",
    [
        ("/event/ingest/batches", "POST", 404),
        ("/", "GET", 404),
        ("/event/ingest/batch", "GET", 405),
        ("/event/ingest", "PUT", 405),
    ],
)
def test_wrong_path_or_method(client, path, method, status):
    assert client.request(method, path, json={"events": [ev(0)]}).status_code == status


@pytest.mark.parametrize(
    "content, params, headers, status",
    [
        ('{"events": []}', {"locationEnrichment": "yes"}, {"Content-Type": "application/json"}, 400),
        (json.dumps({"events": [ev(0)]}), {}, {"Content-Type": "text/plain"}, 415),
        ("not json", {}, {"Content-Type": "application/json"}, 400),
        ('{"events": [{"userId": "u", "name": "x", "timestamp": NaN}]}', {}, {"Content-Type": "application/json"}, 400),
        ("[]", {}, {"Content-Type": "application/json"}, 400),
        ('{"events": []}', {}, {"Content-Type": "application/json"}, 400),
        ('{"events": {}}', {}, {"Content-Type": "application/json"}, 400),
        (json.dumps({"events": [ev(0)], "extra": 1}), {}, {"Content-Type": "application/json"}, 400),
    ],
    ids=[
        "bad-locationEnrichment",
        "content-type",
        "not-json",
        "nan",
        "array-body",
        "empty",
        "events-not-list",
        "extra-key",
    ],
)
def test_bad_request_shapes(standin, client, content, params, headers, status):
    r = client.post("/event/ingest/batch", content=content, params=params, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]
    assert standin.events() == []
    assert standin.requests()[-1].status == status


BAD_EVENTS = {
    "not-object": "page_view",
    "unknown-key": ev(1, userID="typo"),
    "no-name": {"userId": "u"},
    "name-not-string": ev(1, name=5),
    "name-empty": ev(1, name=""),
    "name-whitespace": ev(1, name="page view"),
    "name-null-string": ev(1, name="null"),
    "name-undefined-string": ev(1, name="undefined"),
    "no-ids": {"name": "x", "timestamp": TS},
    "ids-empty": ev(1, userId="", anonymousId=""),
    "ids-null-string": ev(1, userId="null", anonymousId="undefined"),
    "userId-not-string": ev(1, userId=12),
    "userId-json-null": ev(1, userId=None, anonymousId="a"),
    "anonymousId-not-string": ev(1, anonymousId=["a"]),
    "timestamp-float": ev(1, timestamp=1690111645853.5),
    "timestamp-whole-float": ev(1, timestamp=1690111645853.0),
    "timestamp-bool": ev(1, timestamp=True),
    "timestamp-string": ev(1, timestamp=str(TS)),
    "timestamp-seconds": ev(1, timestamp=1690111645),
    "timestamp-microseconds": ev(1, timestamp=1690111645853000),
    "properties-list": ev(1, properties=[1, 2]),
    "properties-null": ev(1, properties=None),
}


@pytest.mark.parametrize("bad", list(BAD_EVENTS.values()), ids=list(BAD_EVENTS))
def test_bad_event_is_400_naming_its_index(standin, client, bad):
    r = post_batch(client, [ev(0), ev(1), bad, ev(3)])
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["index"] == 2
    assert "event 2" in body["error"]
    assert standin.events() == []


@pytest.mark.parametrize("bad", [BAD_EVENTS["name-whitespace"], BAD_EVENTS["timestamp-seconds"]])
def test_bad_single_event_is_400(standin, client, bad):
    r = client.post("/event/ingest", json=bad)
    assert r.status_code == 400
    assert r.json()["index"] == 0


def test_minimal_events_are_valid(standin, client):
    events = [{"anonymousId": "a", "name": "x"}, {"userId": "u", "anonymousId": "", "name": "camelCase"}]
    assert post_batch(client, events).status_code == 204
    assert standin.events() == events


# -- faults ----------------------------------------------------------------------------


def test_fail_next_429_with_retry_after_then_ok(standin, client):
    standin.fail_next(1, status=429, retry_after="3")
    r = post_batch(client, [ev(0)])
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "3"
    assert standin.events() == []
    r = post_batch(client, [ev(0)])
    assert r.status_code == 204
    assert "Retry-After" not in r.headers
    assert [q.status for q in standin.requests()] == [429, 204]
    assert standin.events() == [ev(0)]


def test_fail_next_applies_before_validation(standin, client):
    standin.fail_next(2, status=503)
    assert post_batch(client, [ev(0)], headers={"Authorization": "Bearer wrong"}).status_code == 503
    assert client.get("/nowhere").status_code == 503
    assert client.get("/nowhere").status_code == 404


def test_fail_always_until_heal(standin, client):
    standin.fail_always(503, retry_after="1")
    statuses = [post_batch(client, [ev(i)]).status_code for i in range(3)]
    assert statuses == [503, 503, 503]
    assert standin.requests()[0].event_count == 1
    standin.heal()
    assert post_batch(client, [ev(9)]).status_code == 204
    assert standin.events() == [ev(9)]


def test_heal_keeps_reject_rules_but_reset_clears_them(standin, client):
    standin.reject_events(lambda e: e["userId"] == "u1")
    standin.heal()
    assert post_batch(client, [ev(1)]).status_code == 400
    standin.reset()
    assert post_batch(client, [ev(1)]).status_code == 204
    assert standin.requests()[0].status == 204  # reset forgot the earlier 400


def test_reject_events_refuses_the_whole_request(standin, client):
    standin.reject_events(lambda e: e.get("properties", {}).get("i") == 3)
    r = post_batch(client, [ev(i) for i in range(5)])
    assert r.status_code == 400
    assert r.json()["index"] == 3
    assert standin.events() == []
    assert post_batch(client, [ev(0), ev(4)]).status_code == 204
    assert len(standin.events()) == 2


def test_drop_next_closes_without_answer(standin, client):
    standin.drop_next(1)
    with pytest.raises(httpx.TransportError):
        post_batch(client, [ev(0)])
    assert post_batch(client, [ev(0)]).status_code == 204
    assert [r.status for r in standin.requests()] == [0, 204]
    assert standin.requests()[0].event_count == 1
    assert standin.events() == [ev(0)]


def test_set_delay_slows_answers(standin, client):
    post_batch(client, [ev(0)])  # warm the connection
    standin.set_delay(0.2)
    t0 = time.monotonic()
    assert post_batch(client, [ev(1)]).status_code == 204
    assert time.monotonic() - t0 >= 0.2
    standin.heal()
    t0 = time.monotonic()
    assert post_batch(client, [ev(2)]).status_code == 204
    assert time.monotonic() - t0 < 0.15


def test_delay_makes_client_time_out_and_reset_forgets_it(standin, client):
    standin.set_delay(0.2)
    with pytest.raises(httpx.ReadTimeout):
        post_batch(client, [ev(0)], timeout=0.05)
    standin.reset()  # the delayed request is still in flight...
    time.sleep(0.25)
    assert standin.requests() == []  # ...and is not recorded after the reset
    assert standin.events() == []


def test_fault_status_is_checked(standin):
    with pytest.raises(ValueError):
        standin.fail_next(1, status=204)
    with pytest.raises(ValueError):
        standin.fail_always(status=700)


# -- waiting, control endpoints, lifecycle --------------------------------------------


def test_wait_for_events_returns_when_enough_arrive(standin, client):
    post_batch(client, [ev(0), ev(1)])
    assert len(standin.wait_for_events(2, timeout_s=1)) == 2


def test_wait_for_events_times_out_with_helpful_message(standin, client):
    post_batch(client, [ev(0)])
    post_batch(client, [ev(1)], headers={"Authorization": "Bearer wrong"})
    t0 = time.monotonic()
    with pytest.raises(AssertionError) as info:
        standin.wait_for_events(3, timeout_s=0.2)
    assert 0.2 <= time.monotonic() - t0 < 1.5
    msg = str(info.value)
    assert "got 1" in msg
    assert "401" in msg and "204" in msg


def test_control_endpoints(standin, client):
    post_batch(client, [ev(0)], params={"locationEnrichment": "true"})
    post_batch(client, [ev(1)], headers={"Authorization": "Bearer wrong"})
    standin.fail_always(500)  # control requests bypass faults and auth
    plain = httpx.Client(base_url=standin.base_url, timeout=2)
    with plain:
        assert plain.get("/_standin/events").json() == [ev(0)]
        reqs = plain.get("/_standin/requests").json()
        assert [r["status"] for r in reqs] == [204, 401]
        assert reqs[0]["query"] == {"locationEnrichment": "true"}
        assert plain.get("/_standin/batches").json()[0]["location_enrichment"] is True
        assert plain.get("/_standin/reset").status_code == 405
        assert plain.post("/_standin/reset").status_code == 200
        assert plain.get("/_standin/events").json() == []
        assert plain.get("/_standin/nope").status_code == 404
    assert standin.requests() == []  # control requests are not recorded
    assert post_batch(client, [ev(2)]).status_code == 204  # reset also cleared the fault


def test_stop_then_start_serves_on_the_same_port():
    s = UserFluxStandIn(api_key=KEY).start()
    url = s.base_url
    with httpx.Client(base_url=url, headers=AUTH, timeout=1) as c:
        assert post_batch(c, [ev(0)]).status_code == 204
        s.stop()
        with pytest.raises(httpx.TransportError):
            post_batch(c, [ev(1)])
        s.start()
        try:
            assert s.base_url == url
            assert post_batch(c, [ev(2)]).status_code == 204
            assert [e["userId"] for e in s.events()] == ["u0", "u2"]
        finally:
            s.stop()


def test_base_url_before_start_raises():
    with pytest.raises(RuntimeError):
        _ = UserFluxStandIn().base_url


# -- times, storms, hangs, resets ----------------------------------------------------------


def test_every_request_records_when_it_was_received_and_answered(standin, client):
    standin.set_delay(0.1)
    before, before_wall = time.monotonic(), time.time()
    assert post_batch(client, [ev(0)]).status_code == 204
    after = time.monotonic()
    [entry] = standin.requests()
    assert before <= entry.received_at <= entry.answered_at <= after
    assert entry.answered_at - entry.received_at >= 0.1  # the delay lies between the two
    assert before_wall <= entry.received_wall <= time.time()


def test_fail_for_is_a_storm_that_heals_by_itself(standin, client):
    standin.fail_for(0.5, status=429, retry_after=2)
    started = time.monotonic()
    answers = []
    while time.monotonic() - started < 2.0 and (not answers or answers[-1].status_code != 204):
        answers.append(post_batch(client, [ev(len(answers))]))
        time.sleep(0.05)
    assert {r.status_code for r in answers[:-1]} == {429}
    assert all(r.headers["Retry-After"] == "2" for r in answers[:-1])
    assert answers[-1].status_code == 204 and len(answers) >= 3
    assert 0.45 <= standin.requests()[-1].received_at - started < 1.5
    assert [e["userId"] for e in standin.events()] == [f"u{len(answers) - 1}"]


def test_fail_for_loses_to_fail_next_and_heal_ends_it(standin, client):
    standin.fail_for(60, status=503)
    standin.fail_next(1, status=500)
    assert post_batch(client, [ev(0)]).status_code == 500
    assert post_batch(client, [ev(0)]).status_code == 503
    standin.heal()
    assert post_batch(client, [ev(0)]).status_code == 204


# -- several projects: one stand-in, several keys --------------------------------------


def test_added_keys_are_accepted_and_each_request_records_its_key(standin, client):
    other = "another-project-key"
    assert post_batch(client, [ev(0)], headers={"Authorization": f"Bearer {other}"}).status_code == 401
    standin.add_key(other)
    assert post_batch(client, [ev(1)], headers={"Authorization": f"Bearer {other}"}).status_code == 204
    assert post_batch(client, [ev(2)]).status_code == 204
    assert [(r.status, r.key) for r in standin.requests()] == [(401, other), (204, other), (204, KEY)]
    assert [(b.key, b.events[0]["userId"]) for b in standin.batches()] == [(other, "u1"), (KEY, "u2")]
    standin.reset()  # forgets the added key
    assert post_batch(client, [ev(3)], headers={"Authorization": f"Bearer {other}"}).status_code == 401


def test_a_keys_own_faults_leave_the_other_keys_alone(standin, client):
    other = "another-project-key"
    standin.add_key(other)
    standin.fail_for(60, status=429, retry_after=3, key=other)
    standin.fail_next(1, status=500, key=KEY)
    theirs = post_batch(client, [ev(0)], headers={"Authorization": f"Bearer {other}"})
    assert theirs.status_code == 429 and theirs.headers["Retry-After"] == "3"
    assert post_batch(client, [ev(1)]).status_code == 500  # its own fail_next
    assert post_batch(client, [ev(2)]).status_code == 204  # then nothing: the other key's storm is not its
    standin.heal()
    assert post_batch(client, [ev(3)], headers={"Authorization": f"Bearer {other}"}).status_code == 204


def test_many_connections_at_once_are_queued_not_dropped(standin):
    # While the accept loop is busy (held here), new connections wait in the listen
    # backlog. Python's default backlog of 5 would drop the rest: their connect is then
    # retried a second later, which delays a request the connector sent on time.
    with standin._server._connections_lock:
        socks = [socket.create_connection((standin.host, standin.port), timeout=0.5) for _ in range(32)]
    for sock in socks:
        sock.close()


def test_hang_never_answers_until_healed(standin, client):
    standin.hang()
    with pytest.raises(httpx.ReadTimeout):
        post_batch(client, [ev(0)], timeout=0.3)
    [entry] = standin.requests()
    assert entry.status == 0 and entry.answered_at is None and entry.event_count == 1
    with httpx.Client(base_url=standin.base_url, headers=AUTH, timeout=5) as patient:
        started = time.monotonic()
        other = patient.build_request("POST", "/event/ingest/batch", json={"events": [ev(1)]})
        standin_heals_in(standin, 0.3)
        with pytest.raises(httpx.RemoteProtocolError):  # closed unanswered once healed
            patient.send(other)
        assert 0.25 <= time.monotonic() - started < 3
    # The first request's handler wakes at the heal too, on its own thread: give it a moment.
    wait_until(
        lambda: all(r.answered_at is not None for r in standin.requests()),
        2.0,
        "every hanging request to be closed once healed",
        interval_s=0.01,
    )
    assert post_batch(client, [ev(2)]).status_code == 204
    assert standin.events() == [ev(2)]


def standin_heals_in(standin: UserFluxStandIn, seconds: float) -> None:
    import threading

    threading.Timer(seconds, standin.heal).start()


def test_reset_next_sends_a_tcp_reset_not_a_clean_close(standin):
    host, port = standin.base_url.removeprefix("http://").split(":")
    body = json.dumps({"events": [ev(0)]}).encode()
    request = (
        f"POST /event/ingest/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    def answer_to_raw_request() -> bytes | type:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(request)
            try:
                return sock.recv(65536)
            except ConnectionResetError:
                return ConnectionResetError

    standin.drop_next(1)
    assert answer_to_raw_request() == b""  # a clean close: end of file
    standin.reset_next(1)
    assert answer_to_raw_request() is ConnectionResetError
    assert answer_to_raw_request().startswith(b"HTTP/1.1 204")
    assert [(r.status, r.error) for r in standin.requests()] == [
        (0, "connection dropped (injected fault)"),
        (0, "connection reset (injected fault)"),
        (204, None),
    ]


def test_fault_arguments_are_checked(standin):
    with pytest.raises(ValueError):
        standin.fail_for(-1)
    with pytest.raises(ValueError):
        standin.fail_for(1, status=200)
    with pytest.raises(ValueError):
        standin.reset_next(-1)


# -- HTTPS ---------------------------------------------------------------------------------


def test_https_with_a_certificate_made_for_the_test(certs):
    with UserFluxStandIn(api_key=KEY, tls=(str(certs.server_cert), str(certs.server_key))) as server:
        assert server.base_url.startswith("https://127.0.0.1:")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.post(f"{server.base_url}/event/ingest/batch", json={"events": [ev(0)]}, headers=AUTH)
        r = httpx.post(
            f"{server.base_url}/event/ingest/batch",
            json={"events": [ev(0)]},
            headers=AUTH,
            verify=ssl.create_default_context(cafile=str(certs.ca)),
        )
        assert r.status_code == 204
        assert server.events() == [ev(0)]


def test_https_can_require_a_client_certificate(certs):
    tls = (str(certs.server_cert), str(certs.server_key))
    with UserFluxStandIn(api_key=KEY, tls=tls, client_ca=str(certs.ca)) as server:
        context = ssl.create_default_context(cafile=str(certs.ca))
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{server.base_url}/event/ingest/batch", json={"events": [ev(0)]}, headers=AUTH, verify=context)
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        r = httpx.post(f"{server.base_url}/event/ingest/batch", json={"events": [ev(1)]}, headers=AUTH, verify=context)
        assert r.status_code == 204
        assert server.events() == [ev(1)]


def test_a_client_that_never_finishes_the_handshake_does_not_block_others(certs):
    with UserFluxStandIn(api_key=KEY, tls=(str(certs.server_cert), str(certs.server_key))) as server:
        host, port = server.base_url.removeprefix("https://").split(":")
        with socket.create_connection((host, int(port)), timeout=2):  # connected, silent
            r = httpx.post(
                f"{server.base_url}/event/ingest/batch",
                json={"events": [ev(0)]},
                headers=AUTH,
                verify=ssl.create_default_context(cafile=str(certs.ca)),
                timeout=2,
            )
            assert r.status_code == 204


@contextlib.contextmanager
def standin_process(api_key: str, *extra: str):
    """The stand-in as its own process; yields (process, the line it printed)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.userflux_standin", "--port", "0", "--api-key", api_key, *extra],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc, proc.stdout.readline().strip()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_main_runs_as_a_process_until_sigterm():
    with standin_process("k1") as (proc, line):
        assert line.startswith("userflux stand-in listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        r = httpx.post(
            f"{url}/event/ingest/batch?locationEnrichment=false",
            json={"events": [ev(0)]},
            headers={"Authorization": "Bearer k1"},
        )
        assert r.status_code == 204
        assert httpx.get(f"{url}/_standin/events").json() == [ev(0)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


def test_faults_can_be_driven_from_another_process():
    with standin_process("k2") as (_proc, line):
        url = line.rsplit(" ", 1)[1]
        control = StandInControl(url)
        auth = {"Authorization": "Bearer k2"}
        with httpx.Client(base_url=url, headers=auth, timeout=2) as c:
            control.fail_for(seconds=30, status=503, retry_after=1)
            r = post_batch(c, [ev(0)])
            assert (r.status_code, r.headers["Retry-After"]) == (503, "1")
            control.heal()
            control.hang()
            with pytest.raises(httpx.ReadTimeout):
                post_batch(c, [ev(1)], timeout=0.3)
            control.heal()
            control.reset_next(count=1)
            with pytest.raises(httpx.TransportError):
                post_batch(c, [ev(2)])
            assert post_batch(c, [ev(3)]).status_code == 204
        requests = control.requests()
        assert [r.status for r in requests] == [503, 0, 0, 204]
        now = time.monotonic()  # the same clock as the stand-in process's
        assert all(now - 30 < r.received_at <= r.answered_at <= now for r in requests)
        assert control.events() == [ev(3)]
        with pytest.raises(urllib.error.HTTPError) as info:
            control.fail_for(seconds=1, status=200)
        assert info.value.code == 400
        with pytest.raises(AttributeError):
            control.no_such_fault()
        control.reset()
        assert control.requests() == []


def test_the_process_serves_https_when_given_a_certificate(certs):
    with standin_process("k3", "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)) as (_, line):
        url = line.rsplit(" ", 1)[1]
        assert url.startswith("https://127.0.0.1:")
        r = httpx.post(
            f"{url}/event/ingest/batch",
            json={"events": [ev(0)]},
            headers={"Authorization": "Bearer k3"},
            verify=ssl.create_default_context(cafile=str(certs.ca)),
        )
        assert r.status_code == 204
        control = StandInControl(url, ssl_context=ssl.create_default_context(cafile=str(certs.ca)))
        assert control.events() == [ev(0)]
