"""connector/sink/client.py against the UserFlux stand-in on loopback."""

from __future__ import annotations

import gzip
import json
import socket
import time
from email.utils import formatdate

import httpx
import pytest

from connector.sink.outcome import AUTH, DELIVERED, FATAL, REJECT, RETRY, classify
from connector.sink.proxy import environment_proxy
from connector.sink.request import encode_batch
from tests.conftest import API_KEY
from tests.support.fakes import sample_event
from tests.support.hostile_server import HostileServer, Peer


def events(n: int = 2) -> list[dict]:
    return [sample_event(i) for i in range(n)]


def answering(answer):
    """A loopback server answering every request with ``answer(request bytes)``."""

    def script(peer: Peer) -> None:
        while True:
            request = peer.read_request()
            if not request or not peer.send(answer(request)):
                return

    return HostileServer(script)


def http_answer(status: int, reason: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parsed(raw: bytes) -> tuple[str, str, httpx.Headers, bytes]:
    """A request as the server read it: method, target, headers, body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    request_line, *fields = head.decode("latin-1").split("\r\n")
    method, target, version = request_line.split(" ")
    assert version == "HTTP/1.1"
    return method, target, httpx.Headers([tuple(f.split(": ", 1)) for f in fields]), body


def no_key_in(answer) -> bool:
    return API_KEY not in answer.detail and API_KEY[:12] not in answer.detail


# -- the request, exactly as UserFlux's SDKs send it ------------------------------------------


@pytest.mark.parametrize("enrich, expected", [(True, "true"), (False, "false")])
def test_request_matches_the_sdks(standin, make_client, enrich, expected):
    body = encode_batch(events(3))
    with answering(lambda request: http_answer(204, "No Content")) as recorder:
        answer = make_client(recorder.base_url + "/").post_batch(body, enrich)
    assert answer.kind == DELIVERED and answer.code == "204"
    [raw] = recorder.requests
    method, target, headers, content = parsed(raw)
    assert method == "POST"
    assert target == f"/event/ingest/batch?locationEnrichment={expected}"
    assert headers["host"] == f"127.0.0.1:{recorder.port}"
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body))
    assert headers.get_list("authorization") == [f"Bearer {API_KEY}"]
    assert not [name for name in headers if name.lower().startswith("x-")]  # no custom headers
    assert content == body
    # And the stand-in reads the same request as UserFlux would.
    assert make_client(standin.base_url + "/").post_batch(body, enrich).kind == DELIVERED
    [logged] = standin.requests()
    assert logged.query == {"locationEnrichment": expected}
    assert logged.authorization_ok is True
    [batch] = standin.batches()
    assert batch.location_enrichment is enrich
    assert batch.events == events(3)


def test_answer_carries_the_duration(standin, client):
    standin.set_delay(0.05)
    answer = client.post_batch(encode_batch(events(1)), False)
    assert answer.kind == DELIVERED
    assert 0.05 <= answer.duration_s < 2.0


# -- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, outcome",
    [
        (400, REJECT),
        (413, REJECT),
        (422, REJECT),
        (401, AUTH),
        (403, AUTH),
        (408, RETRY),
        (425, RETRY),
        (429, RETRY),
        (500, RETRY),
        (502, RETRY),
        (503, RETRY),
        (504, RETRY),
        (404, FATAL),
        (405, FATAL),
        (415, FATAL),
    ],
)
def test_status_classification_over_http(standin, client, status, outcome):
    standin.fail_next(1, status)
    answer = client.post_batch(encode_batch(events()), False)
    assert answer.kind == outcome
    assert answer.code == str(status)
    assert answer.detail.startswith(f"HTTP {status}")
    assert "injected fault" in answer.detail  # the error body, for the logs
    assert answer.retry_after_s is None
    assert no_key_in(answer)


@pytest.mark.parametrize(
    "status, outcome",
    [
        (200, DELIVERED),
        (201, DELIVERED),
        (204, DELIVERED),
        (299, DELIVERED),
        (301, FATAL),
        (302, FATAL),
        (304, FATAL),
        (307, FATAL),
        (308, FATAL),
        (100, FATAL),
        (404, FATAL),
        (409, FATAL),
        (418, FATAL),
        (451, FATAL),
        (599, RETRY),
        (511, RETRY),
    ],
)
def test_classify(status, outcome):
    assert classify(status) == outcome


def test_real_validation_refusal_is_a_reject(standin, client):
    bad = events(3)
    bad[1]["name"] = "has spaces"
    answer = client.post_batch(encode_batch(bad), False)
    assert answer.kind == REJECT and answer.code == "400"
    assert "event 1" in answer.detail
    assert standin.events() == []


def test_too_many_events_is_a_reject(standin, client):
    answer = client.post_batch(encode_batch(events(51)), False)
    assert answer.kind == REJECT
    assert "too many events" in answer.detail


def test_wrong_key_is_auth_and_the_key_is_not_in_the_detail(standin, make_client):
    wrong = "wrong-key-abcdefghijklmnop"
    answer = make_client(standin.base_url, key=wrong).post_batch(encode_batch(events()), False)
    assert answer.kind == AUTH and answer.code == "401"
    assert wrong not in answer.detail and no_key_in(answer)
    assert standin.requests()[0].authorization_ok is False


def test_wrong_base_url_path_is_fatal(standin, make_client):
    answer = make_client(standin.base_url + "/v2").post_batch(encode_batch(events()), False)
    assert answer.kind == FATAL and answer.code == "404"


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds(standin, client, status):
    standin.fail_next(1, status, retry_after="7")
    answer = client.post_batch(encode_batch(events()), False)
    assert answer.kind == RETRY
    assert answer.retry_after_s == 7.0


def test_retry_after_http_date(standin, client):
    standin.fail_next(1, 503, retry_after=formatdate(time.time() + 30, usegmt=True))
    answer = client.post_batch(encode_batch(events()), False)
    assert answer.kind == RETRY
    assert 27.0 <= answer.retry_after_s <= 31.0


def test_retry_after_garbage_is_ignored(standin, client):
    standin.fail_next(1, 429, retry_after="later please")
    answer = client.post_batch(encode_batch(events()), False)
    assert answer.kind == RETRY and answer.retry_after_s is None


def test_then_delivered_after_faults_clear(standin, client):
    standin.fail_next(1, 500)
    assert client.post_batch(encode_batch(events()), False).kind == RETRY
    assert client.post_batch(encode_batch(events()), False).kind == DELIVERED
    assert [r.status for r in standin.requests()] == [500, 204]


# -- no answer -------------------------------------------------------------------------------------


def test_timeout_is_retried(standin, make_client):
    standin.set_delay(0.6)
    started = time.monotonic()
    answer = make_client(standin.base_url, timeout_s=0.1).post_batch(encode_batch(events()), False)
    elapsed = time.monotonic() - started
    assert answer.kind == RETRY and answer.code == "timeout"
    assert elapsed < 0.5
    assert no_key_in(answer)


def test_dropped_connection_is_retried(standin, client):
    standin.drop_next(1)
    answer = client.post_batch(encode_batch(events()), False)
    assert answer.kind == RETRY and answer.code == "connection"
    assert [r.status for r in standin.requests()] == [0]
    assert no_key_in(answer)


def test_refused_connection_is_retried(make_client):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    answer = make_client(f"http://127.0.0.1:{port}", timeout_s=1.0).post_batch(encode_batch(events()), False)
    assert answer.kind == RETRY and answer.code == "connection"
    assert no_key_in(answer)


# -- the key never leaks through the answer --------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 500])
def test_a_server_echoing_the_key_does_not_leak_it_into_the_detail(make_client, status):
    def echo(request: bytes) -> bytes:
        token = parsed(request)[2]["authorization"]
        return http_answer(
            status, "Error", {"Content-Type": "application/json"}, json.dumps({"error": f"bad token {token}"}).encode()
        )

    with answering(echo) as server:
        answer = make_client(server.base_url).post_batch(encode_batch(events()), False)
    assert answer.code == str(status)
    assert "bad token" in answer.detail
    assert no_key_in(answer)


def test_redirect_is_fatal_and_names_the_target(make_client):
    redirect = http_answer(301, "Moved Permanently", {"Location": "https://elsewhere.example/event/ingest/batch"})
    with answering(lambda request: redirect) as server:
        answer = make_client(server.base_url).post_batch(encode_batch(events()), False)
    assert answer.kind == FATAL and answer.code == "301"
    assert "redirect to https://elsewhere.example/event/ingest/batch" in answer.detail


def test_error_body_is_one_short_line(make_client):
    long_error = http_answer(400, "Bad Request", {"Content-Type": "text/plain"}, b"line one\nline two " + b"x" * 1000)
    with answering(lambda request: long_error) as server:
        answer = make_client(server.base_url).post_batch(encode_batch(events()), False)
    assert "\n" not in answer.detail
    assert "line one line two" in answer.detail
    assert len(answer.detail) < 400
    json.dumps(answer.detail)  # usable as a dead-letter header value


@pytest.mark.parametrize("status, kind", [(502, RETRY), (413, REJECT), (200, DELIVERED)])
def test_a_body_that_does_not_decode_leaves_the_status_to_decide(make_client, status, kind):
    # e.g. a proxy answering with a body that claims gzip but is not: the status line still
    # says what happened (a 2xx retried would deliver the batch again; a 413 never split).
    garbled = http_answer(status, "Whatever", {"Content-Encoding": "gzip"}, b"not gzip at all")
    with answering(lambda request: garbled) as server:
        answer = make_client(server.base_url).post_batch(encode_batch(events()), False)
    assert (answer.kind, answer.code) == (kind, str(status))
    if kind != DELIVERED:
        assert "gzip body that does not decode" in answer.detail
    assert no_key_in(answer)


def test_a_gzip_error_body_is_decoded_for_the_detail(make_client):
    compressed = http_answer(400, "Bad Request", {"Content-Encoding": "gzip"}, gzip.compress(b"event 0: bad name"))
    with answering(lambda request: compressed) as server:
        answer = make_client(server.base_url).post_batch(encode_batch(events()), False)
    assert answer.kind == REJECT and "event 0: bad name" in answer.detail


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        ({"HTTPS_PROXY": "http://proxy.internal:3128"}, "http://proxy.internal:3128"),
        ({"https_proxy": "http://lower.internal:3128"}, "http://lower.internal:3128"),
        ({"ALL_PROXY": "http://all.internal:3128"}, "http://all.internal:3128"),
        ({"HTTP_PROXY": "http://only-http.internal:3128"}, None),  # the API is https
        ({"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": ".userflux.co"}, None),
    ],
)
def test_the_environment_s_proxy_is_honoured_as_httpx_would(monkeypatch, env, expected):
    for name in (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert environment_proxy(httpx.URL("https://integration-api.userflux.co/event/ingest/batch")) == expected
