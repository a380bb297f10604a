"""One keep-alive connection to UserFlux: a socket (TLS or not), opened, checked before
each reuse, and, for the sender threads, one blocking request and its answer at a time.

A request that fails is never sent again here: the sender decides (a reset after the body
went out may have been delivered), and the next request goes out on a new connection.

**The reuse check.** A connection carries the next request only when the last answer
allowed it (http11.py), it has rested less than ``KEEPALIVE_EXPIRY_S``, and nothing has
arrived on it since: bytes on a resting connection were never asked for (a stray answer,
a 408 that a server or balancer sends before it closes an idle connection, the close
itself), and read as the next request's answer they would count a batch UserFlux never
stored as delivered. It costs one ``select`` with no wait (about a microsecond) per
request, as httpcore's check does. Over TLS, decrypted bytes already waiting in the TLS
layer count too, and when the socket is readable a non-blocking read tells the TLS
protocol's own records (session tickets after the handshake, which a fresh connection
often holds) from an answer. What no check can see is a byte that arrives between the
check and the request: no HTTP/1.1 client can.

**Bounds.** ``request_timeout_s`` bounds each request from its first byte written to its
answer read in full, however slowly the server trickles it; opening the connection (TCP
and the TLS handshake) has the same bound on its own. The answer's size is bounded by
http11.py's limits.

**Early answers.** A server may answer before it has read the whole request (a 413 for a
body too large) and close. When writing fails, what the server already sent is read, and
a non-2xx answer found there is the request's answer; a 2xx that came before the request
was written in full is not believed (UserFlux cannot have stored what it did not get):
the write error stands, and the sender retries.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Callable

from .errors import (
    CertificateRefused,
    ConnectError,
    ConnectTimeout,
    NotAdmitted,
    ReadError,
    ReadTimeout,
    TransportError,
    WriteError,
    WriteTimeout,
)
from .http11 import AnswerReader, Response, read_answer

KEEPALIVE_EXPIRY_S = 5.0  # as httpx's default: a connection idle longer is replaced

Origin = tuple[str, str, int | None]  # scheme, host, port


class Connection:
    """One socket to one origin."""

    __slots__ = ("origin", "sock", "reusable", "_used_at", "_timeout")

    def __init__(self, origin: Origin, sock: socket.socket):
        self.origin = origin
        self.sock = sock
        self.reusable = True  # the last answer allowed another request
        self._used_at = time.monotonic()
        self._timeout = sock.gettimeout()

    @classmethod
    def open(cls, origin: Origin, ssl_context: ssl.SSLContext, timeout_s: float) -> Connection:
        """Connect (and shake hands, for https) within ``timeout_s``."""
        scheme, host, port = origin
        address = (host, port or (443 if scheme == "https" else 80))
        try:
            sock = socket.create_connection(address, timeout_s)
        except TimeoutError:
            raise ConnectTimeout(f"connecting to {host}:{address[1]} took longer than {timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectError(f"connecting to {host}:{address[1]}: {_why(exc)}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except TimeoutError:
            sock.close()
            raise ConnectTimeout(f"the TLS handshake with {host} took longer than {timeout_s:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            # The reason (CERTIFICATE_VERIFY_FAILED) is what people search for; the message says which check.
            why = f"{exc.reason} ({exc.verify_message})" if exc.verify_message else str(exc.reason or exc)
            raise CertificateRefused(f"{host}: {why}") from None
        except OSError as exc:  # ssl.SSLError among them
            sock.close()
            raise ConnectError(f"the TLS handshake with {host}: {_why(exc)}") from None
        return cls(origin, sock)

    def usable(self) -> bool:
        """Whether the connection may carry the next request: the reuse check (above)."""
        if not self.reusable or time.monotonic() - self._used_at > KEEPALIVE_EXPIRY_S:
            return False
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        try:
            readable, _, _ = select.select((sock,), (), (), 0)
        except (OSError, ValueError):  # closed under us
            return False
        if not readable:
            return True
        # Over TLS the bytes may be the protocol's own: the session tickets a TLS 1.3 server
        # sends after the handshake, a key update. A read consumes those and returns nothing.
        return isinstance(sock, ssl.SSLSocket) and self._only_tls_records(sock)

    def _only_tls_records(self, sock: ssl.SSLSocket) -> bool:
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            sock.recv(1)  # data: bytes nobody asked for; b"": the server closed
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return not sock.pending()
        except OSError:
            return False
        finally:
            sock.settimeout(timeout)
        return False

    def used(self, answer: Response) -> None:
        """An answer came in full: whether the connection may go on, and its rest starts now."""
        self.reusable = answer.reusable
        self._used_at = time.monotonic()

    def exchange(self, data: bytes, timeout_s: float, admit: Callable[[], bool] | None = None) -> Response:
        """Send one request and read its answer, blocking, within ``timeout_s``. ``admit``
        is asked before anything is written; NotAdmitted if it says no."""
        if admit is not None and not admit():
            raise NotAdmitted
        sock = self.sock
        self.reusable = False  # until an answer says otherwise
        deadline = time.monotonic() + timeout_s
        self._settimeout(timeout_s)
        try:
            sock.sendall(data)
        except TimeoutError:
            return self._after_write_error(
                WriteTimeout(f"sending the request took longer than {timeout_s:g} s"), deadline
            )
        except OSError as exc:
            return self._after_write_error(WriteError(f"sending the request: {_why(exc)}"), deadline)
        reader = AnswerReader()
        answer = self._read(reader, deadline, timeout_s)
        self.used(answer)
        return answer

    def _read(self, reader: AnswerReader, deadline: float, timeout_s: float) -> Response:
        sock = self.sock

        def recv(size: int) -> bytes:
            self._settimeout(max(0.0, deadline - time.monotonic()))
            return sock.recv(size)

        try:
            return read_answer(recv, reader)
        except TimeoutError:
            why = f"no complete answer within {timeout_s:g} s"
            answer = reader.cut_short(why)
            if answer is None:
                raise ReadTimeout(why) from None
            return answer
        except OSError as exc:
            why = f"reading the answer: {_why(exc)}"
            answer = reader.cut_short(why)
            if answer is None:
                raise ReadError(why) from None
            return answer

    def _after_write_error(self, error: TransportError, deadline: float) -> Response:
        """The request could not be written in full: read an answer the server may have
        sent before it stopped reading; the error stands unless it is a non-2xx."""
        self.reusable = False
        try:
            answer = self._read(AnswerReader(), max(deadline, time.monotonic()), 0.0)
        except TransportError:
            raise error from None
        if 200 <= answer.status < 300:
            raise WriteError(f"{error}; the server answered {answer.status} before it had the whole request") from None
        answer.reusable = False
        return answer

    def _settimeout(self, timeout: float) -> None:
        if timeout != self._timeout:
            self.sock.settimeout(timeout)
            self._timeout = timeout

    def close(self) -> None:
        self.reusable = False
        try:
            self.sock.close()
        except OSError:
            pass


def _why(exc: OSError) -> str:
    """An OSError in words, without the noise of its repr."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc) or type(exc).__name__
