"""HTTP/1.1 on the wire, as narrowly as the connector speaks it (RFC 9112): a request goes
out as one buffer, one answer comes back. No sockets here: connection.py and direct.py
move the bytes, this module says what they mean.

The connector sends one kind of request (a POST with a ``Content-Length``) and waits for
its answer before the next, so what must be read right is the answer. ``AnswerReader``
reads one answer from bytes fed as they arrive, however they are split, each byte looked
at a bounded number of times: the blocking sender threads feed it from ``recv`` in a
loop (``read_answer``), the pipeline's thread feeds it whenever a socket is readable.

It reads what h11 reads (h11 is the oracle of tests/unit/sink/test_http11_oracle.py),
and differs only where docs/delivery.md lists it ("How answers are read"), each with its reason:

* The head decides. Once a complete, valid head has arrived, the answer is the server's
  word, whatever happens to its body. A body cut short (the server closed, reset, timed
  out, or broke the chunked coding) or over ``MAX_BODY`` makes the answer *incomplete*
  (RFC 9112 section 8), never an error: the status stands, the body is what came, and
  the connection is not used again. h11 raises instead.
* Transfer codings besides ``chunked`` are read as RFC 9112 section 6.3 says (h11
  refuses them): ``gzip, chunked`` is chunked; a list that does not end in ``chunked``
  lasts until the close.
* An answer with both ``Transfer-Encoding`` and ``Content-Length`` is read by the former
  (as h11 does), and its connection is not used again (RFC 9112 section 6.3: it may be a
  response-splitting attempt).
* Limits of our own: a head (or trailer section) of at most ``MAX_HEAD`` bytes whatever
  way it arrives, at most ``MAX_INTERIM`` interim (1xx) answers before the final one.

Whether the connection may carry the next request is part of the answer: only when the
server keeps it alive (HTTP/1.1 without ``Connection: close``), the body was framed, and
nothing arrived after the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import ClosedError, ProtocolError

MAX_HEAD = 65_536  # status line and header fields of one answer; likewise its trailer section
MAX_BODY = 4 * 1024 * 1024  # UserFlux answers 204; only an error page's first lines are used
MAX_INTERIM = 16  # 1xx answers before the final one
_RECV = 65_536

# The grammar as h11 reads it (h11/_abnf.py), which RFC 9110 and 9112 allow.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD_VCHAR = rb"[^\x00\s]"
_FIELD_CONTENT = _FIELD_VCHAR + rb"+(?:[ \t]+" + _FIELD_VCHAR + rb"+)*"
_HEADER_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _FIELD_CONTENT + rb")?[ \t]*")
_STATUS_LINE = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ((?:[ \t]|" + _FIELD_VCHAR + rb")*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*")
_TOKEN_ONLY = re.compile(_TOKEN)
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,20}")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_FOLD = re.compile(rb"[ \t]+")

# What the reader is waiting for.
_HEAD, _LENGTH, _CHUNK_SIZE_LINE, _CHUNK, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class Response:
    """One final answer. ``incomplete`` says why its body was cut short ("" when whole)."""

    __slots__ = ("status", "reason", "headers", "body", "reusable", "incomplete")

    def __init__(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        reusable: bool,
        incomplete: str = "",
    ):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.reusable = reusable  # the connection may carry the next request
        self.incomplete = incomplete

    def header(self, name: bytes) -> bytes | None:
        """The last value of the header ``name`` (lower case), or None."""
        found = None
        for key, value in self.headers:
            if key.lower() == name:
                found = value
        return found

    def __repr__(self) -> str:
        return (
            f"Response({self.status}, {self.reason!r}, {len(self.headers)} headers, {len(self.body)} bytes, "
            f"reusable={self.reusable}{', incomplete=' + repr(self.incomplete) if self.incomplete else ''})"
        )


def request_bytes(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The whole request in one buffer: one ``sendall``, one trip through the kernel.
    ``headers`` hold ``Content-Length`` among them."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if b"\r" in value or b"\n" in value:  # never split a header
            raise ValueError(f"header {name!r} holds a line break")
        parts += (name, b": ", value, b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


def read_answer(recv: Callable[[int], bytes], reader: AnswerReader | None = None) -> Response:
    """Read one answer with ``recv`` (a blocking socket's): until it is complete, or the
    server closes. Errors of ``recv`` pass through; ``reader.cut_short`` can then tell
    whether the head had arrived."""
    reader = reader or AnswerReader()
    while True:
        data = recv(_RECV)
        if not data:
            return reader.close()
        answer = reader.feed(data)
        if answer is not None:
            return answer


class AnswerReader:
    """Reads one answer from the bytes of a connection, fed as they arrive.

    ``feed(data)`` returns the ``Response`` once it is complete (or cut short by a limit),
    else None; ``close()`` is the server's close; ``cut_short(why)`` ends the reading for
    another reason (a timeout, a reset). ``ProtocolError`` when the bytes are not an
    answer. Once a response is returned, the reader is done.
    """

    __slots__ = (
        "_buffer",
        "_state",
        "_scanned",
        "_interim",
        "_status",
        "_reason",
        "_headers",
        "_keep_alive",
        "_body",
        "_remaining",
        "max_head",
        "max_body",
        "max_interim",
    )

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY, max_interim: int = MAX_INTERIM):
        self.max_head = max_head
        self.max_body = max_body
        self.max_interim = max_interim
        self._buffer = bytearray()
        self._state = _HEAD
        self._scanned = 0  # how far the buffer was searched for the end of a head or a line
        self._interim = 0
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._keep_alive = False
        self._body = bytearray()
        self._remaining = 0

    @property
    def head_complete(self) -> bool:
        """Whether the final answer's head has arrived (its status is known)."""
        return self._state != _HEAD and self._status >= 200

    def feed(self, data: bytes) -> Response | None:
        if self._state == _DONE:
            raise RuntimeError("the answer was read already")
        self._buffer += data
        return self._advance()

    def close(self) -> Response:
        """The server closed the connection (end of file)."""
        state = self._state
        if state == _UNTIL_CLOSE:
            return self._finish(framed=False)
        if state == _HEAD:
            raise ClosedError(
                f"the server closed the connection "
                f"{'in the middle of' if self._buffer or self._interim else 'before'} the answer"
            )
        if state == _DONE:
            raise RuntimeError("the answer was read already")
        return self._incomplete("the server closed the connection in the middle of the answer's body")

    def cut_short(self, why: str) -> Response | None:
        """No more bytes will come (``why``): the answer as far as it came when its head
        is complete, else None."""
        if self._state in (_HEAD, _DONE):
            return None
        return self._incomplete(why)

    # -- the states ------------------------------------------------------------------------

    def _advance(self) -> Response | None:
        buffer = self._buffer
        while True:
            state = self._state
            if state == _HEAD:
                lines = self._lines("the answer's head")
                if lines is None:
                    return None
                response = self._head(lines)
                if response is not None:
                    return response
            elif state == _LENGTH:
                if self._take():
                    return None
                return self._finish(framed=True)
            elif state == _CHUNK_SIZE_LINE:
                end = buffer.find(b"\r\n", max(0, self._scanned - 1))
                if end < 0:
                    self._scanned = len(buffer)
                    if len(buffer) > self.max_head:
                        return self._incomplete(f"a chunk's size line is longer than {self.max_head:,} bytes")
                    return None
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                self._scanned = 0
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    return self._incomplete(f"not a chunk size: {line[:40]!r}")
                size = int(match.group(1), 16)
                if size == 0:
                    self._state = _TRAILER
                elif len(self._body) + size > self.max_body:
                    return self._incomplete(f"the answer's body is longer than {self.max_body:,} bytes")
                else:
                    self._remaining = size
                    self._state = _CHUNK
            elif state == _CHUNK:
                if self._take():
                    return None
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if buffer[:2] != b"\r\n"[: len(buffer)]:
                    return self._incomplete("a chunk does not end with CRLF")
                if len(buffer) < 2:
                    return None
                del buffer[:2]
                self._state = _CHUNK_SIZE_LINE
            elif state == _TRAILER:
                try:
                    lines = self._lines("the trailer section")
                    if lines is None:
                        return None
                    _fields(lines)
                except ProtocolError as exc:
                    return self._incomplete(f"the trailer section: {exc}")
                return self._finish(framed=True)
            elif state == _UNTIL_CLOSE:
                if len(self._body) + len(buffer) > self.max_body:
                    return self._incomplete(f"the answer's body is longer than {self.max_body:,} bytes")
                self._body += buffer
                del buffer[:]
                return None
            else:
                raise RuntimeError("the answer was read already")

    def _take(self) -> int:
        """Move what is buffered of the body's next ``_remaining`` bytes into the body;
        returns how many are still to come."""
        buffer = self._buffer
        take = min(len(buffer), self._remaining)
        if take:
            self._body += buffer[:take]
            del buffer[:take]
            self._remaining -= take
        return self._remaining

    def _lines(self, what: str) -> list[bytes] | None:
        """The lines up to the first empty one (taken off the buffer), or None for more.
        Lines end in LF, a CR before it dropped (RFC 9112 section 2.2 lets a recipient take
        a bare LF as a line's end)."""
        buffer = self._buffer
        if buffer[:1] == b"\n" or buffer[:2] == b"\r\n":  # no lines at all
            del buffer[: 1 if buffer[:1] == b"\n" else 2]
            return []
        match = _BLANK_LINE.search(buffer, max(0, self._scanned - 2))
        if match is None:
            self._scanned = len(buffer)
            if len(buffer) > self.max_head:
                raise ProtocolError(f"{what} is longer than {self.max_head:,} bytes")
            return None
        end = match.end()
        if end > self.max_head:
            raise ProtocolError(f"{what} is longer than {self.max_head:,} bytes")
        lines = bytes(buffer[: match.start()]).split(b"\n")
        del buffer[:end]
        self._scanned = 0
        return [line[:-1] if line[-1:] == b"\r" else line for line in lines]

    def _head(self, lines: list[bytes]) -> Response | None:
        """Take a head; the final answer's sets how its body is read."""
        if not lines:
            raise ProtocolError("an empty line where the status line belongs")
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        version, status = match.group(1), int(match.group(2))
        headers = _fields(lines[1:])
        if status < 100:
            raise ProtocolError(f"not a status code: {status:03d}")
        if status < 200:
            if status == 101:
                raise ProtocolError("the server switched protocols, which was not asked for")
            self._interim += 1
            if self._interim > self.max_interim:
                raise ProtocolError(f"more than {self.max_interim} interim (1xx) answers")
            return None  # an interim answer: the final one follows
        self._status, self._reason, self._headers = status, match.group(3) or b"", headers
        connection = _tokens(headers, b"connection")
        self._keep_alive = b"close" not in connection and version >= b"1.1"
        if status == 204 or status == 304:
            return self._finish(framed=True)
        encodings = _tokens(headers, b"transfer-encoding")
        if encodings:
            if any(name.lower() == b"content-length" for name, _ in headers):
                self._keep_alive = False  # RFC 9112 6.3: maybe response splitting
            codings = [coding.split(b";", 1)[0].strip() for coding in encodings]
            if not all(_TOKEN_ONLY.fullmatch(coding) for coding in codings):
                raise ProtocolError(f"not a transfer coding: {b', '.join(encodings)[:80]!r}")
            if codings.count(b"chunked") > 1:
                raise ProtocolError("chunked applied more than once")
            self._state = _CHUNK_SIZE_LINE if codings[-1] == b"chunked" else _UNTIL_CLOSE
            self._scanned = 0
            return None
        length = _content_length(headers)
        if length is None:
            self._state = _UNTIL_CLOSE
            return None
        if length > self.max_body:
            return self._incomplete(f"the answer's body of {length:,} bytes is longer than {self.max_body:,}")
        self._remaining = length
        self._state = _LENGTH
        return None

    # -- the end ---------------------------------------------------------------------------

    def _finish(self, framed: bool) -> Response:
        """The answer is whole. Bytes after it were never asked for: the connection is not
        trusted again."""
        self._state = _DONE
        reusable = framed and self._keep_alive and not self._buffer
        return Response(self._status, self._reason, self._headers, bytes(self._body), reusable)

    def _incomplete(self, why: str) -> Response:
        self._state = _DONE
        return Response(self._status, self._reason, self._headers, bytes(self._body), False, why)


def _fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Header (or trailer) field lines, obsolete line folding unfolded (RFC 9112 5.2), and
    the framing fields checked as h11 checks them."""
    fields: list[tuple[bytes, bytes]] = []
    folded: bytes | None = None
    for line in lines:
        fold = _FOLD.match(line)
        if fold is not None:
            if folded is None:
                raise ProtocolError("a continuation line before the first header field")
            folded += b" " + line[fold.end() :]
            continue
        if folded is not None:
            fields.append(_field(folded))
        folded = line
    if folded is not None:
        fields.append(_field(folded))
    transfer_encoding = 0
    lengths: set[bytes] = set()
    for name, value in fields:
        lower = name.lower()
        if lower == b"content-length":
            values = {v.strip() for v in value.split(b",")}  # "3, 3" is 3 (RFC 9110 8.6)
            if len(values) != 1:
                raise ProtocolError(f"a Content-Length that frames nothing: {value[:40]!r}")
            lengths |= values
        elif lower == b"transfer-encoding":
            transfer_encoding += 1
            if not any(v.strip() for v in value.split(b",")):
                raise ProtocolError("an empty Transfer-Encoding")
    if lengths and (len(lengths) > 1 or _CONTENT_LENGTH.fullmatch(next(iter(lengths))) is None):
        raise ProtocolError(f"a Content-Length that frames nothing: {sorted(lengths)!r}")
    return fields


def _field(line: bytes) -> tuple[bytes, bytes]:
    match = _HEADER_FIELD.fullmatch(line)
    if match is None:
        raise ProtocolError(f"not a header field: {line[:80]!r}")
    return match.group(1), match.group(2) or b""


def _tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The comma-separated values of every ``name`` field, lower case, empty ones left out."""
    found: list[bytes] = []
    for key, value in headers:
        if key.lower() == name:
            found += [token for token in (v.strip() for v in value.lower().split(b",")) if token]
    return found


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value.split(b",", 1)[0].strip())  # checked by _fields
    return None
