"""HTTP/1.1 on one connection, as narrowly as the connector speaks it: a request goes out
as one buffer, one answer comes back (RFC 9112).

The connector sends one kind of request (a POST with a ``Content-Length``) and waits for
its answer before the next, so what must be read right is the answer: the status line,
the header fields, and the body, framed by ``Transfer-Encoding: chunked``, by
``Content-Length``, or by the server closing the connection. Interim answers (1xx) are
skipped. Whether the connection can carry the next request is part of the answer.

What is not HTTP/1.1 as RFC 9112 frames it raises ``ProtocolError``: the transport turns
it into ``httpx.RemoteProtocolError``, which the sender retries. Socket errors (timeouts
included) pass through untouched: the transport knows whether it was writing or reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MAX_HEAD = 65_536  # status line and header fields of one answer
MAX_BODY = 4 * 1024 * 1024  # UserFlux answers 204; an error page bigger than this is not one
_RECV = 65_536
_HEX = b"0123456789abcdefABCDEF"


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 answer."""


class ClosedError(ProtocolError):
    """The server closed the connection before the answer was complete."""


@dataclass
class Answer:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reusable: bool  # the connection may carry the next request


def request_bytes(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The whole request in one buffer: one ``sendall``, one trip through the kernel.
    ``headers`` are httpx's (``Content-Length`` among them, set by ``httpx.Request``)."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if b"\r" in value or b"\n" in value:  # httpx refuses these too; never split a header
            raise ValueError(f"header {name!r} holds a line break")
        parts += (name, b": ", value, b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


def read_answer(recv: Callable[[int], bytes]) -> Answer:
    """Read one answer with ``recv`` (a socket's), skipping interim 1xx answers."""
    reader = _Reader(recv)
    while True:
        status, reason, headers, keep_alive = _head(reader)
        if status == 101:
            raise ProtocolError("the server switched protocols, which was not asked for")
        if status >= 200:
            break
    body, framed = _body(reader, status, headers)
    # Bytes after the answer were never asked for: the connection is not trusted again.
    return Answer(status, reason, headers, body, keep_alive and framed and not reader.buffer)


class _Reader:
    __slots__ = ("recv", "buffer")

    def __init__(self, recv: Callable[[int], bytes]):
        self.recv = recv
        self.buffer = b""

    def more(self, what: str) -> None:
        data = self.recv(_RECV)
        if not data:
            raise ClosedError(f"the server closed the connection {what}")
        self.buffer += data

    def until(self, marker: bytes, limit: int, what: str) -> bytes:
        """Everything up to ``marker`` (dropped), within ``limit`` bytes."""
        while True:
            end = self.buffer.find(marker)
            if end >= 0:
                found, self.buffer = self.buffer[:end], self.buffer[end + len(marker):]
                return found
            if len(self.buffer) > limit:
                raise ProtocolError(f"{what} is longer than {limit:,} bytes")
            self.more(f"in the middle of {what}" if self.buffer else f"before {what}")

    def exactly(self, size: int, what: str) -> bytes:
        while len(self.buffer) < size:
            self.more(f"in the middle of {what}")
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        while True:
            data = self.recv(_RECV)
            if not data:
                found, self.buffer = self.buffer, b""
                return found
            self.buffer += data
            if len(self.buffer) > MAX_BODY:
                raise ProtocolError(f"the answer's body is longer than {MAX_BODY:,} bytes")


def _head(reader: _Reader) -> tuple[int, bytes, list[tuple[bytes, bytes]], bool]:
    head = reader.until(b"\r\n\r\n", MAX_HEAD, "the answer")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    version = parts[0]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(parts) < 2 or len(parts[1]) != 3 \
            or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            raise ProtocolError(f"not a header field: {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    connection = b",".join(v for n, v in headers if n.lower() == b"connection").lower()
    tokens = {token.strip() for token in connection.split(b",")}
    keep_alive = b"close" not in tokens and (version == b"HTTP/1.1" or b"keep-alive" in tokens)
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers, keep_alive


def _body(reader: _Reader, status: int, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
    """The body, and whether its end was framed (rather than the connection's close)."""
    if status == 204 or status == 304:
        return b"", True
    encodings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    if encodings:
        if b",".join(encodings).lower().rsplit(b",", 1)[-1].strip() == b"chunked":
            return _chunked(reader), True
        return reader.rest(), False  # RFC 9112 6.3: read until the close
    lengths = {v for n, v in headers if n.lower() == b"content-length"}
    if not lengths:
        return reader.rest(), False
    if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
        raise ProtocolError(f"a Content-Length that frames nothing: {sorted(lengths)!r}")
    length = int(lengths.pop())
    if length > MAX_BODY:
        raise ProtocolError(f"the answer's body is longer than {MAX_BODY:,} bytes")
    return reader.exactly(length, "the answer's body"), True


def _chunked(reader: _Reader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = reader.until(b"\r\n", 1024, "a chunk's size")
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if not size_text or len(size_text) > 16 or size_text.strip(_HEX):  # int() takes "0x", "_", "-"
            raise ProtocolError(f"not a chunk size: {line[:40]!r}")
        size = int(size_text, 16)
        if size == 0:
            while reader.until(b"\r\n", MAX_HEAD, "the trailer"):  # trailer fields, then an empty line
                pass
            return b"".join(chunks)
        total += size
        if total > MAX_BODY:
            raise ProtocolError(f"the answer's body is longer than {MAX_BODY:,} bytes")
        chunks.append(reader.exactly(size, "a chunk"))
        if reader.exactly(2, "a chunk") != b"\r\n":
            raise ProtocolError("a chunk does not end with CRLF")
