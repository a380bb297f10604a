"""connector/sink/http11.py: one request out, one answer in, framed as RFC 9112 says."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.sink import http11
from connector.sink.http11 import ClosedError, ProtocolError, read_answer, request_bytes


def recv_from(*pieces: bytes):
    """A socket's recv handing out ``pieces`` one per call, then b"" (the server closed)."""
    queue = list(pieces)

    def recv(max_bytes: int) -> bytes:
        assert max_bytes > 0
        return queue.pop(0) if queue else b""

    return recv


def answer_of(*pieces: bytes) -> http11.Answer:
    return read_answer(recv_from(*pieces))


# -- the request ---------------------------------------------------------------------------------


def test_the_request_is_one_buffer_head_then_body():
    data = request_bytes(b"POST", b"/event/ingest/batch?locationEnrichment=false",
                         [(b"Host", b"api.example"), (b"Content-Length", b"2")], b"{}")
    assert data == (b"POST /event/ingest/batch?locationEnrichment=false HTTP/1.1\r\n"
                    b"Host: api.example\r\nContent-Length: 2\r\n\r\n{}")


@pytest.mark.parametrize("value", [b"a\r\nX-Injected: 1", b"a\nb", b"a\rb"])
def test_a_header_value_with_a_line_break_is_refused(value):
    with pytest.raises(ValueError, match="line break"):
        request_bytes(b"POST", b"/", [(b"X-Value", value)], b"")


# -- framing -------------------------------------------------------------------------------------


def test_204_has_no_body_and_keeps_the_connection():
    answer = answer_of(b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n")
    assert (answer.status, answer.reason, answer.body, answer.reusable) == (204, b"No Content", b"", True)
    assert answer.headers == [(b"Date", b"x")]


def test_an_answer_arriving_a_byte_at_a_time():
    raw = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nhello"
    answer = answer_of(*(raw[i:i + 1] for i in range(len(raw))))
    assert (answer.status, answer.body, answer.reusable) == (400, b"hello", True)


def test_content_length_frames_the_body():
    answer = answer_of(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 3\r\n\r\n", b"abc")
    assert answer.body == b"abc" and answer.reusable


def test_a_chunked_body_with_extensions_and_a_trailer():
    answer = answer_of(b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                       b"4;name=value\r\nwiki\r\n", b"5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert answer.body == b"wikipedia" and answer.reusable


def test_a_body_without_framing_lasts_until_the_close():
    answer = answer_of(b"HTTP/1.1 502 Bad Gateway\r\n\r\nproxy ", b"says no")
    assert answer.body == b"proxy says no" and not answer.reusable


def test_interim_answers_are_skipped():
    answer = answer_of(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
                       b"HTTP/1.1 204 No Content\r\n\r\n")
    assert answer.status == 204 and answer.headers == [] and answer.reusable


def test_a_status_line_without_a_reason():
    answer = answer_of(b"HTTP/1.1 204\r\n\r\n")
    assert (answer.status, answer.reason) == (204, b"")


# -- whether the connection carries the next request ---------------------------------------------


@pytest.mark.parametrize("head, reusable", [
    (b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", False),
    (b"HTTP/1.1 204 No Content\r\nConnection: keep-alive, Close\r\n\r\n", False),
    (b"HTTP/1.0 204 No Content\r\n\r\n", False),
    (b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n", True),
    (b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", False),  # bytes nobody asked for
])
def test_the_connection_is_reused_only_when_the_answer_allows(head, reusable):
    assert answer_of(head).reusable is reusable


# -- what is not an answer -----------------------------------------------------------------------


@pytest.mark.parametrize("pieces, message", [
    ((), "closed the connection before the answer"),
    ((b"HTTP/1.1 204 No Con",), "closed the connection in the middle of the answer"),
    ((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",), "in the middle of the answer's body"),
    ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",), "in the middle of a chunk"),
])
def test_a_close_before_the_answer_is_complete(pieces, message):
    with pytest.raises(ClosedError, match=message):
        answer_of(*pieces)


@pytest.mark.parametrize("raw", [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/2 204\r\n\r\n",
    b"HTTP/1.1 2O4 No Content\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nName : value\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
])
def test_what_is_not_http_1_1_is_a_protocol_error(raw):
    with pytest.raises(ProtocolError):
        answer_of(raw)


def test_an_endless_head_is_refused_without_reading_it_all():
    calls = []

    def recv(max_bytes: int) -> bytes:
        calls.append(max_bytes)
        return b"X-Endless: " + b"a" * 8_000 + b"\r\n"

    with pytest.raises(ProtocolError, match="longer than"):
        read_answer(recv)
    assert len(calls) < 20


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (http11.MAX_BODY + 1),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (http11.MAX_BODY + 1),
])
def test_a_body_bigger_than_the_limit_is_refused_before_it_is_read(head):
    with pytest.raises(ProtocolError, match="longer than"):
        answer_of(head)


def test_a_body_without_framing_bigger_than_the_limit_is_refused():
    piece = b"x" * 65_536
    with pytest.raises(ProtocolError, match="longer than"):
        answer_of(b"HTTP/1.1 502 Bad Gateway\r\n\r\n", *([piece] * (http11.MAX_BODY // len(piece) + 2)))


# -- however the bytes are split -----------------------------------------------------------------

_ANSWERS = [
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 11\r\n\r\nslow down\r\n",
    b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n1\r\n!\r\n0\r\n\r\n",
]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_ANSWERS), st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_any_split_of_an_answer_reads_the_same(raw, cuts):
    pieces, rest = [], raw
    for cut in cuts:
        if not rest:
            break
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    whole, split = answer_of(raw), answer_of(*pieces)
    assert (split.status, split.headers, split.body, split.reusable) == \
        (whole.status, whole.headers, whole.body, whole.reusable)
    assert whole.reusable
