"""http11.py's reader against h11, the library it replaces, on generated answers.

Hypothesis writes answer byte streams (every framing: Content-Length, chunked with
extensions and trailers, close-delimited; interim answers; keep-alive and close; valid
and malformed heads; bare LF line ends and folded lines; bytes after the answer; the
stream cut short or closed anywhere; random byte damage), cuts them into random pieces,
and feeds the same pieces to an ``h11.Connection`` in the client role (after a POST, as
the connector sends) and to our reader, both ways the connector reads: ``read_answer``
over a ``recv`` (the sender threads) and ``AnswerReader.feed`` (the pipeline's thread).

They must agree on the outcome, except for the deliberate differences listed in
docs/delivery.md ("How answers are read") and in http11.py's docstring, each checked here for what it is:

* **the head decides**: where h11 raises after the final answer's head arrived (the body
  cut short or its chunked coding broken), ours returns that answer, marked incomplete,
  its connection not reused; and when the stream simply stops there, ours can give the
  answer as far as it came (``cut_short``);
* **transfer codings besides chunked**: h11 refuses every ``Transfer-Encoding`` but a
  lone ``chunked``; ours reads what RFC 9112 6.3 says (checked by the unit tests), so
  h11 is no oracle for those streams and they are only checked to end in an answer or a
  ProtocolError;
* **Transfer-Encoding with Content-Length**: read the same, but ours does not reuse the
  connection.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connector.sink.errors import TransportError
from connector.sink.http11 import MAX_HEAD, AnswerReader, Response, read_answer

# -- what each side made of the bytes ------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # "answer": complete; "cut": the head came, not the rest; "error"; "more": nothing final yet
    status: int = 0
    reason: bytes = b""
    headers: tuple = ()
    body: bytes = b""
    reusable: bool = False


def _normal_headers(headers) -> tuple:
    """Headers compared without the framing fields h11 rewrites (duplicate Content-Length
    lines merged, Transfer-Encoding lower-cased): the bodies compare the framing."""
    return tuple(
        (name.lower(), bytes(value))
        for name, value in headers
        if name.lower() not in (b"content-length", b"transfer-encoding")
    )


def h11_reads(pieces: list[bytes], closes: bool) -> Outcome:
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    connection.send(
        h11.Request(
            method="POST",
            target="/event/ingest/batch",
            headers=[("Host", "integration-api.userflux.co"), ("Content-Length", "2")],
        )
    )
    connection.send(h11.Data(data=b"{}"))
    connection.send(h11.EndOfMessage())
    response: h11.Response | None = None
    body = b""
    try:
        for piece in pieces + ([b""] if closes else []):
            connection.receive_data(piece)
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    break
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    assert response is not None
                    leftover, closed = connection.trailing_data
                    reusable = connection.their_state is h11.DONE and not leftover and not closed
                    return Outcome(
                        "answer",
                        response.status_code,
                        bytes(response.reason),
                        _normal_headers(response.headers.raw_items()),
                        body,
                        reusable,
                    )
                else:  # ConnectionClosed before the end: h11 raised instead, above
                    raise AssertionError(f"unexpected {event!r}")
    except h11.RemoteProtocolError:
        if response is None:
            return Outcome("error")
        return Outcome(
            "cut", response.status_code, bytes(response.reason), _normal_headers(response.headers.raw_items()), body
        )
    if response is None:
        return Outcome("more")
    return Outcome(
        "cut", response.status_code, bytes(response.reason), _normal_headers(response.headers.raw_items()), body
    )


def _ours(answer: Response | None) -> Outcome:
    if answer is None:
        return Outcome("more")
    kind = "cut" if answer.incomplete else "answer"
    return Outcome(kind, answer.status, answer.reason, _normal_headers(answer.headers), answer.body, answer.reusable)


def ours_fed(pieces: list[bytes], closes: bool) -> Outcome:
    """The pipeline thread's way: bytes fed as they come, then the close or nothing more."""
    reader = AnswerReader()
    try:
        for piece in pieces:
            answer = reader.feed(piece)
            if answer is not None:
                return _ours(answer)
        return _ours(reader.close() if closes else reader.cut_short("no more bytes"))
    except TransportError:
        return Outcome("error")


class _Stopped(Exception):
    """The stream ended without a close: a blocking recv would time out."""


def ours_blocking(pieces: list[bytes], closes: bool) -> Outcome:
    """The sender threads' way: ``read_answer`` over a recv."""
    queue = list(pieces)
    reader = AnswerReader()

    def recv(size: int) -> bytes:
        if queue:
            return queue.pop(0)
        if closes:
            return b""
        raise _Stopped

    try:
        return _ours(read_answer(recv, reader))
    except _Stopped:
        return _ours(reader.cut_short("timed out"))
    except TransportError:
        return Outcome("error")


# -- the comparison --------------------------------------------------------------------------------


def _final_head(raw: bytes) -> list[bytes]:
    """The lines of the final answer's head, roughly (for choosing how to compare)."""
    rest = raw
    while True:
        cut = min((i for i in (rest.find(b"\n\n"), rest.find(b"\n\r\n")) if i >= 0), default=len(rest))
        lines = []
        for line in rest[:cut].replace(b"\r", b"").split(b"\n"):
            if line[:1] in (b" ", b"\t") and lines:
                lines[-1] += b" " + line.strip()  # unfold
            else:
                lines.append(line)
        if not lines[0][9:10] == b"1" or cut == len(rest):
            return lines
        rest = rest[cut:].lstrip(b"\r\n")


def _fields_named(raw: bytes, name: bytes) -> list[bytes]:
    return [
        line.split(b":", 1)[1].strip().lower() for line in _final_head(raw)[1:] if line.lower().startswith(name + b":")
    ]


def _other_codings(raw: bytes) -> bool:
    """Whether a head of the stream carries a Transfer-Encoding other than a lone chunked
    (where h11 is no oracle: it refuses them all)."""
    if any(
        line.lower().startswith(b"transfer-encoding:") and line.split(b":", 1)[1].strip().lower() != b"chunked"
        for line in raw.replace(b"\r", b"").split(b"\n")
    ):
        return True
    return _fields_named(raw, b"transfer-encoding") not in ([], [b"chunked"])


def _both_framings(raw: bytes) -> bool:
    return bool(_fields_named(raw, b"transfer-encoding")) and bool(_fields_named(raw, b"content-length"))


def check(raw: bytes, cuts: list[int], closes: bool) -> None:
    pieces, rest = [], raw
    for cut in cuts:
        if not rest:
            break
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    fed, blocking = ours_fed(pieces, closes), ours_blocking(pieces, closes)
    assert fed == blocking, "the two ways of reading disagree"
    if _other_codings(raw):
        assert fed.kind in ("answer", "cut", "error", "more")
        return
    expected = h11_reads(pieces, closes)
    if expected.kind == "answer" and _both_framings(raw):
        expected.reusable = False  # deliberate: RFC 9112 6.3, maybe response splitting
    if expected.kind == "cut":
        # Deliberate: the head decides. h11 raised (or waits) after the head; ours keeps
        # the answer, marked incomplete, its connection ended. The body so far agrees.
        assert fed.kind == "cut", (expected, fed)
        assert (fed.status, fed.reason, fed.headers, fed.reusable) == (
            expected.status,
            expected.reason,
            expected.headers,
            False,
        )
        assert expected.body.startswith(fed.body) or fed.body.startswith(expected.body)
        return
    assert fed == expected


# -- the answers ---------------------------------------------------------------------------------

_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~"
_VALUE_BYTES = [bytes([b]) for b in range(256)]
_FRIENDLY_VALUE = b"abcdefgh0123456789 ,;=/-_.\t"


def _eol(draw) -> bytes:
    return draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))


@st.composite
def header_value(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # anything at all, control bytes and high bytes among them
        return b"".join(draw(st.lists(st.sampled_from(_VALUE_BYTES), max_size=12)))
    return bytes(draw(st.lists(st.sampled_from(list(_FRIENDLY_VALUE)), max_size=20)))


@st.composite
def header_line(draw) -> bytes:
    eol = _eol(draw)
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return b" folded continuation" + eol  # obs-fold (an error when it is the first)
    if kind == 1:
        name = draw(st.sampled_from([b"", b"Bad Name", b"X-Space ", b"\x00", b"X:Y"]))
    else:
        name = draw(st.text(_TOKEN_CHARS, min_size=1, max_size=12)).encode()
    separator = draw(st.sampled_from([b": ", b":", b":\t", b" : "])) if kind != 2 else b""
    return name + separator + draw(header_value()) + eol


@st.composite
def head(draw, status: int, framing: list[bytes]) -> bytes:
    eol = _eol(draw)
    version = draw(
        st.sampled_from(
            [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1", b"HTTP/1.12", b"http/1.1"]
        )
    )
    status_text = draw(st.sampled_from([b"%03d" % status] * 6 + [b"%d" % status, b"2O4", b"%04d" % status]))
    reason = draw(
        st.sampled_from(
            [b" OK", b" No Content", b"", b" ", b" Odd\treason", b" \x80\xff", b" bad\x00", b" two  spaces "]
        )
    )
    lines = [version + b" " + status_text + reason + eol]
    extra = draw(st.lists(header_line(), max_size=4))
    connection = draw(
        st.sampled_from(
            [
                [],
                [],
                [b"Connection: close"],
                [b"Connection: keep-alive"],
                [b"Connection: Keep-Alive, CLOSE"],
                [b"connection: upgrade"],
            ]
        )
    )
    fields = framing + connection
    for field in fields:
        extra.insert(draw(st.integers(0, len(extra))), field + eol)
    return b"".join(lines + extra) + _eol(draw)


@st.composite
def chunked_body(draw, body: bytes) -> bytes:
    out, rest = [], body
    while rest:
        size = draw(st.integers(1, max(1, len(rest))))
        chunk, rest = rest[:size], rest[size:]
        size_text = draw(st.sampled_from(["%x", "%X", "%03x", "%x "])) % len(chunk)
        ext = draw(st.sampled_from([b"", b"", b";name=value", b";x", b'; q="a b"']))
        out.append(size_text.encode() + ext + b"\r\n" + chunk + b"\r\n")
    last = draw(st.sampled_from([b"0\r\n", b"000\r\n", b"0;end\r\n"]))
    trailer = draw(
        st.sampled_from(
            [
                b"\r\n",
                b"\r\n",
                b"X-Trailer: 1\r\n\r\n",
                b"X-Trailer: 1\n\n",
                b"Bad trailer\r\n\r\n",
                b"Content-Length: 5\r\n\r\n",
            ]
        )
    )
    return b"".join(out) + last + trailer


@st.composite
def final_answer(draw) -> bytes:
    status = draw(st.sampled_from([200, 201, 204, 204, 204, 304, 400, 401, 404, 413, 429, 500, 503, 99, 101, 999]))
    body = draw(st.binary(max_size=300))
    framing_kind = draw(
        st.sampled_from(
            ["length", "length", "chunked", "chunked", "close", "length-bad", "length-repeat", "codings", "both"]
        )
    )
    if framing_kind == "length":
        framing, data = [b"Content-Length: %d" % len(body)], body
    elif framing_kind == "length-repeat":
        framing, data = (
            [draw(st.sampled_from([b"Content-Length: %d, %d", b"Content-Length:%d ,%d"])) % (len(body), len(body))],
            body,
        )
    elif framing_kind == "length-bad":
        wrong = draw(st.sampled_from([b"-1", b"abc", b"", b"1, 2", b"+3", b"99999999999999999999999"]))
        framing, data = [b"Content-Length: " + wrong], body
    elif framing_kind == "chunked":
        framing, data = (
            [draw(st.sampled_from([b"Transfer-Encoding: chunked", b"transfer-encoding: Chunked"]))],
            draw(chunked_body(body)),
        )
    elif framing_kind == "codings":
        framing = [
            draw(
                st.sampled_from(
                    [
                        b"Transfer-Encoding: gzip, chunked",
                        b"Transfer-Encoding: gzip",
                        b"Transfer-Encoding: chunked, chunked",
                        b"Transfer-Encoding: ",
                    ]
                )
            )
        ]
        data = draw(chunked_body(body))
    elif framing_kind == "both":
        framing, data = [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"], draw(chunked_body(body))
    else:
        framing, data = [], body
    return draw(head(status, framing)) + data


@st.composite
def answer_stream(draw) -> bytes:
    interim = draw(
        st.lists(
            st.sampled_from(
                [
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n",
                    b"HTTP/1.1 102 Processing\n\n",
                ]
            ),
            max_size=3,
        )
    )
    raw = b"".join(interim) + draw(final_answer())
    after = draw(st.sampled_from([b"", b"", b"", b"HTTP/1.1 204 No Content\r\n\r\n", b"x"]))
    raw += after
    damage = draw(st.integers(0, 5))
    if damage == 0 and raw:  # one byte changed, dropped or added anywhere
        at = draw(st.integers(0, len(raw) - 1))
        how = draw(st.sampled_from(["change", "drop", "add"]))
        byte = draw(st.sampled_from(_VALUE_BYTES))
        raw = raw[:at] + (byte if how != "drop" else b"") + raw[at + (0 if how == "add" else 1) :]
    elif damage == 1 and raw:  # the stream stops anywhere
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer_stream(), st.lists(st.integers(min_value=1, max_value=64), max_size=40), st.booleans())
@example(b"HTTP/1.1 204 No Content\r\n\r\n", [], False)
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", [3], True)
@example(b"HTTP/1.1 200 OK\nContent-Length: 3, 3\n\nabc", [1] * 40, False)
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX: 1\r\n\r\n", [5], False)
def test_our_reader_agrees_with_h11(raw, cuts, closes):
    check(raw, cuts, closes)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 204 No Content\r\nDate: Wed, 03 Dec 2026 21:00:00 GMT\r\nServer: envoy\r\n\r\n",
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n\r\n<html>gone</html>",
    ],
)
@pytest.mark.parametrize("closes", [True, False])
def test_answers_a_real_server_sends_agree_byte_by_byte(raw, closes):
    check(raw, [1] * len(raw), closes)


def test_the_oracle_itself_tells_answers_apart():
    # The comparison must be able to fail: h11 and ours read these differently from each other.
    assert h11_reads([b"HTTP/1.1 204 No Content\r\n\r\n"], False) != h11_reads(
        [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], False
    )
