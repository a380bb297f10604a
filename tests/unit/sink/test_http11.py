"""connector/sink/http11.py: one request out, one answer in, framed as RFC 9112 says.

Every case here is fed both ways the connector reads: whole, through ``read_answer`` (the
sender threads' blocking reads), and a byte at a time into an ``AnswerReader`` (the
pipeline thread's reads as bytes arrive). test_http11_oracle.py checks the reader against
h11 on generated answers.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.sink import http11
from connector.sink.errors import ClosedError, ProtocolError
from connector.sink.http11 import AnswerReader, Response, read_answer, request_bytes


def recv_from(*pieces: bytes):
    """A socket's recv handing out ``pieces`` one per call, then b"" (the server closed)."""
    queue = list(pieces)

    def recv(max_bytes: int) -> bytes:
        assert max_bytes > 0
        return queue.pop(0) if queue else b""

    return recv


def bytewise(raw: bytes, closes: bool = True, **limits) -> Response:
    """``raw`` fed a byte at a time, then the close (if the answer needs it)."""
    reader = AnswerReader(**limits)
    for i in range(len(raw)):
        answer = reader.feed(raw[i : i + 1])
        if answer is not None:
            return answer
    if closes:
        return reader.close()
    raise AssertionError("the answer is not complete")


def answer_of(*pieces: bytes, **limits) -> Response:
    """The answer read both ways; they must agree."""
    try:
        whole = read_answer(recv_from(*pieces), AnswerReader(**limits))
    except ProtocolError as exc:
        with pytest.raises(type(exc)):
            bytewise(b"".join(pieces), **limits)
        raise
    split = bytewise(b"".join(pieces), **limits)
    assert (split.status, split.reason, split.headers, split.body, split.reusable, bool(split.incomplete)) == (
        whole.status,
        whole.reason,
        whole.headers,
        whole.body,
        whole.reusable,
        bool(whole.incomplete),
    )
    return whole


# -- the request ---------------------------------------------------------------------------------


def test_the_request_is_one_buffer_head_then_body():
    data = request_bytes(
        b"POST",
        b"/event/ingest/batch?locationEnrichment=false",
        [(b"Host", b"api.example"), (b"Content-Length", b"2")],
        b"{}",
    )
    assert data == (
        b"POST /event/ingest/batch?locationEnrichment=false HTTP/1.1\r\n"
        b"Host: api.example\r\nContent-Length: 2\r\n\r\n{}"
    )


@pytest.mark.parametrize("value", [b"a\r\nX-Injected: 1", b"a\nb", b"a\rb"])
def test_a_header_value_with_a_line_break_is_refused(value):
    with pytest.raises(ValueError, match="line break"):
        request_bytes(b"POST", b"/", [(b"X-Value", value)], b"")


# -- framing -------------------------------------------------------------------------------------


def test_204_has_no_body_and_keeps_the_connection():
    answer = answer_of(b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n")
    assert (answer.status, answer.reason, answer.body, answer.reusable) == (204, b"No Content", b"", True)
    assert answer.headers == [(b"Date", b"x")] and answer.incomplete == ""


def test_content_length_frames_the_body():
    answer = answer_of(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 3\r\n\r\n", b"abc")
    assert answer.body == b"abc" and answer.reusable


def test_a_chunked_body_with_extensions_and_a_trailer():
    answer = answer_of(
        b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n4;name=value\r\nwiki\r\n",
        b"5 \r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n",
    )
    assert answer.body == b"wikipedia" and answer.reusable


def test_other_transfer_codings_before_chunked_are_read_as_chunked():
    # RFC 9112 6.1 (h11 refuses these): the body stays gzip-coded; only its framing matters here.
    answer = answer_of(
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
    )
    assert answer.body == b"ab" and answer.reusable


def test_transfer_codings_not_ending_in_chunked_last_until_the_close():
    answer = answer_of(b"HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", b"2\r\nab")
    assert answer.body == b"2\r\nab" and not answer.reusable and answer.incomplete == ""


def test_a_body_without_framing_lasts_until_the_close():
    answer = answer_of(b"HTTP/1.1 502 Bad Gateway\r\n\r\nproxy ", b"says no")
    assert answer.body == b"proxy says no" and not answer.reusable


def test_interim_answers_are_skipped():
    answer = answer_of(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    )
    assert answer.status == 204 and answer.headers == [] and answer.reusable


def test_a_status_line_without_a_reason():
    assert (answer_of(b"HTTP/1.1 204\r\n\r\n").status, answer_of(b"HTTP/1.1 204\r\n\r\n").reason) == (204, b"")


# -- what RFC 9112 lets a client accept, and h11 reads -------------------------------------------


def test_bare_lf_line_endings():
    answer = answer_of(b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nok")
    assert (answer.status, answer.body, answer.headers[1], answer.reusable) == (200, b"ok", (b"X-A", b"b"), True)


def test_an_obsolete_folded_header_line_is_unfolded():
    answer = answer_of(
        b"HTTP/1.1 429 Too Many\r\nRetry-After: \r\n  7\r\nX-Note: a\r\n\tb c\r\nContent-Length: 0\r\n\r\n"
    )
    assert answer.header(b"retry-after") == b"7" and answer.header(b"x-note") == b"a b c"


@pytest.mark.parametrize("lengths", [[b"3, 3"], [b"3", b"3"], [b"003"], [b" 3 ,3"]])
def test_a_content_length_repeating_one_value(lengths):
    head = b"".join(b"Content-Length: " + value + b"\r\n" for value in lengths)
    answer = answer_of(b"HTTP/1.1 200 OK\r\n" + head + b"\r\nabc")
    assert answer.body == b"abc" and answer.reusable


def test_http_1_0_is_never_reused_even_when_it_says_keep_alive():
    # As h11: keep-alive is HTTP/1.1's; reusing less is never wrong.
    assert not answer_of(b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n").reusable


def test_an_answer_with_both_transfer_encoding_and_content_length_is_read_chunked_and_not_reused():
    answer = answer_of(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    assert answer.body == b"ok" and not answer.reusable and answer.incomplete == ""


# -- whether the connection carries the next request ---------------------------------------------


@pytest.mark.parametrize(
    "head, reusable",
    [
        (b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.1 204 No Content\r\nConnection: keep-alive, Close\r\n\r\n", False),
        (b"HTTP/1.0 204 No Content\r\n\r\n", False),
        (b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", False),  # bytes nobody asked for
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
    ],
)
def test_the_connection_is_reused_only_when_the_answer_allows(head, reusable):
    assert read_answer(recv_from(head)).reusable is reusable


# -- the head decides: a body cut short leaves the answer incomplete, not unread ------------------


@pytest.mark.parametrize(
    "raw, body, why",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b"abc", "closed the connection in the middle"),
        (b"HTTP/1.1 413 Too Large\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", b"ab", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", b"", "not a chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n", b"", "not a chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", b"", "not a chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", b"abc", "does not end with CRLF"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nbad trailer\r\n\r\n",
            b"a",
            "the trailer section",
        ),
    ],
)
def test_a_body_cut_short_keeps_the_status_and_ends_the_connection(raw, body, why):
    answer = answer_of(raw)
    assert answer.status in (200, 413) and answer.body == body and not answer.reusable
    assert why in answer.incomplete


def test_cut_short_before_the_head_is_nothing_and_after_it_the_answer_so_far():
    reader = AnswerReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-") is None
    assert reader.cut_short("timed out") is None
    reader = AnswerReader()
    assert reader.feed(b"HTTP/1.1 503 Busy\r\nContent-Length: 9\r\n\r\nbus") is None
    assert reader.head_complete
    answer = reader.cut_short("timed out")
    assert (answer.status, answer.body, answer.incomplete, answer.reusable) == (503, b"bus", "timed out", False)


# -- what is not an answer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pieces, message",
    [
        ((), "closed the connection before the answer"),
        ((b"HTTP/1.1 204 No Con",), "closed the connection in the middle of the answer"),
        ((b"HTTP/1.1 100 Continue\r\n\r\n",), "closed the connection in the middle of the answer"),
    ],
)
def test_a_close_before_the_head_is_complete(pieces, message):
    with pytest.raises(ClosedError, match=message):
        read_answer(recv_from(*pieces))


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/2 204\r\n\r\n",
        b"HTTP/1.1 2O4 No Content\r\n\r\n",
        b"HTTP/1.1 099 Below Interim\r\n\r\n",
        b"HTTP/1.1 000 Zero\r\n\r\n",
        b"\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nName : value\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n folded onto the status line\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nX-Nul: a\x00b\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nX-Cr: a\rb\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
    ],
)
def test_what_is_not_http_1_1_is_a_protocol_error(raw):
    with pytest.raises(ProtocolError):
        answer_of(raw)


# -- limits --------------------------------------------------------------------------------------


def test_an_endless_head_is_refused_without_reading_it_all():
    calls = []

    def recv(max_bytes: int) -> bytes:
        calls.append(max_bytes)
        return b"X-Endless: " + b"a" * 8_000 + b"\r\n"

    with pytest.raises(ProtocolError, match="longer than"):
        read_answer(recv)
    assert len(calls) < 20


def test_a_head_over_the_limit_is_refused_however_it_arrives():
    raw = b"HTTP/1.1 204 No Content\r\nX-Big: " + b"a" * 200 + b"\r\n\r\n"
    with pytest.raises(ProtocolError, match="longer than 100"):
        answer_of(raw, max_head=100)


def test_endless_interim_answers_are_refused():
    with pytest.raises(ProtocolError, match="interim"):
        answer_of(b"HTTP/1.1 100 Continue\r\n\r\n" * 4 + b"HTTP/1.1 204 No Content\r\n\r\n", max_interim=3)
    assert (
        answer_of(b"HTTP/1.1 100 Continue\r\n\r\n" * 3 + b"HTTP/1.1 204 No Content\r\n\r\n", max_interim=3).status
        == 204
    )


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n" + b"a" * 50 + b"\r\n33\r\n",
    ],
)
def test_a_body_over_the_limit_is_not_read_and_the_answer_stands(head):
    reader = AnswerReader(max_body=100)
    answer = reader.feed(head)
    assert answer is not None and answer.status == 200 and not answer.reusable
    assert "longer than" in answer.incomplete and len(answer.body) <= 100


def test_a_body_without_framing_over_the_limit_stops_the_reading():
    reader = AnswerReader(max_body=100)
    assert reader.feed(b"HTTP/1.1 502 Bad Gateway\r\n\r\n" + b"x" * 60) is None
    answer = reader.feed(b"x" * 60)
    assert answer is not None and answer.status == 502 and len(answer.body) == 60
    assert "longer than" in answer.incomplete


def test_an_endless_trailer_section_ends_the_answer():
    reader = AnswerReader(max_head=100)
    assert reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n") is None
    answer = reader.feed(b"X-Trailer: " + b"t" * 200)
    assert answer is not None and answer.status == 200 and "trailer section" in answer.incomplete


def test_a_long_answer_in_small_pieces_is_read_in_linear_time():
    # The pipeline's thread reads as bytes arrive: each byte must be looked at a bounded
    # number of times (it was reparsed whole at every piece, quadratic in the answer).
    import time

    def feed_time(size: int) -> float:
        head = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n" % size
        reader = AnswerReader()
        reader.feed(head)
        piece = b"x" * 64
        started = time.perf_counter()
        for _ in range(size // 64):
            reader.feed(piece)
        return time.perf_counter() - started

    small, large = min(feed_time(256 * 1024) for _ in range(3)), min(feed_time(2 * 1024 * 1024) for _ in range(3))
    assert large < small * 8 * 3  # 8 times the bytes: about 8 times the time, far from 64


# -- however the bytes are split -----------------------------------------------------------------

_ANSWERS = [
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 11\r\n\r\nslow down\r\n",
    b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n1\r\n!\r\n0\r\n\r\n",
    b"HTTP/1.1 503 Busy\nRetry-After:\n 2\ncontent-length: 0\n\n",
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
    whole, split = read_answer(recv_from(raw)), read_answer(recv_from(*pieces))
    assert (split.status, split.headers, split.body, split.reusable) == (
        whole.status,
        whole.headers,
        whole.body,
        whole.reusable,
    )
    assert whole.reusable


def test_limits_are_the_documented_ones():
    assert (http11.MAX_HEAD, http11.MAX_BODY, http11.MAX_INTERIM) == (65_536, 4 * 1024 * 1024, 16)
