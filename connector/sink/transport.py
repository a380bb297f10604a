"""Each sender's HTTP transport: one keep-alive connection, and as little work per request
as HTTP/1.1 allows.

It is an ``httpx.BaseTransport`` (httpx's extension point for transports), so the client
speaks httpx: requests, responses and exceptions are httpx's, and httpx decodes the
answer's content. Under it, without a proxy, the connection is a plain socket and the
protocol is http11.py: the request leaves in one ``sendall``, the answer is read with as
few ``recv`` calls as it arrives in. Measured posting the benchmark's 50-event body to its
sink on loopback (CPU of the posting thread per request, medians of 5): httpcore's HTTP/1.1
(h11) on the connector's own network stream 203 us, http.client's parser 121 us, this 85
us. Much of the difference is h11's and the email package's pure-Python parsing of a
two-line answer, and the GIL round trips of its separate writes and reads.

What a connection pool did that matters is kept: a connection that has rested longer than
the keep-alive expiry, that the server closed while it rested, or that the server said
it would close, is replaced before the next request. A request that fails is not tried
again here (a reset after the body went out may have been delivered): it fails with
httpx's exception, the sender retries it after its backoff, and the next request goes out
on a new connection.

A request may carry an ``admit`` extension, asked once the connection is open and before
anything is written: opening one can take seconds (SYN resends, a TLS handshake far away),
and the sender's leave to send may have lapsed meanwhile (sender.py). When it says no,
``NotAdmitted`` is raised and nothing was sent; the connection is kept.

With a proxy, httpcore's proxy pool and httpx's own stream are used (the proxy's CONNECT
and TLS-in-TLS are their business); the connection is still the sender's own, and
``admit`` is not asked.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from typing import Any

import httpcore
import httpx

from . import http11

KEEPALIVE_EXPIRY_S = 5.0  # as httpx's default: an idle connection is replaced after this
_REST_S = 1.0  # an idle connection is polled for a close by the server after this long

# httpcore's exceptions as httpx raises them (the most specific match wins); the proxy path.
_EXCEPTIONS: dict[type[Exception], type[Exception]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
}


class NotAdmitted(Exception):
    """The request's ``admit`` said no once the connection was open: nothing was sent."""


class KeepAliveTransport(httpx.BaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext, proxy: str | None = None):
        self._ssl_context = ssl_context
        self._connection: Connection | None = None
        self._pool: httpcore.ConnectionPool | None = None
        if proxy is not None:
            limits: dict[str, Any] = {"max_connections": 1, "max_keepalive_connections": 1,
                                      "keepalive_expiry": KEEPALIVE_EXPIRY_S}
            url = httpx.URL(proxy)
            self._pool = httpcore.HTTPProxy(
                proxy_url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port,
                                       target=url.raw_path),
                proxy_auth=(url.username, url.password) if url.username else None,
                ssl_context=ssl_context, **limits)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._pool is not None:
            return self._via_proxy(request)
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"the connector does not speak {url.scheme!r}")
        timeouts = request.extensions.get("timeout", {})
        data = http11.request_bytes(request.method.encode("ascii"), url.raw_path, request.headers.raw,
                                    request.read())
        connection = self._connect(url, timeouts.get("connect"))
        admit = request.extensions.get("admit")
        if admit is not None and not admit():
            raise NotAdmitted
        try:
            answer = connection.exchange(data, timeouts.get("write"), timeouts.get("read"))
        finally:
            if not connection.reusable:
                connection.close()
                self._connection = None
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body, request=request,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason})

    def _connect(self, url: httpx.URL, timeout: float | None) -> "Connection":
        """This sender's connection to ``url``'s origin, replaced first if it cannot be used."""
        origin = (url.scheme, url.host, url.port)
        connection = self._connection
        if connection is not None and (connection.origin != origin or not connection.usable()):
            connection.close()
            connection = self._connection = None
        if connection is None:
            connection = self._connection = Connection.open(origin, self._ssl_context, timeout)
        return connection

    def _via_proxy(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        assert self._pool is not None
        try:
            response = self._pool.handle_request(core)
            try:
                content = response.read()  # the answers are small: read at once
            finally:
                response.close()
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError,
                httpcore.UnsupportedProtocol) as exc:
            raise _translate(exc) from exc
        return httpx.Response(status_code=response.status, headers=response.headers, content=content,
                              extensions=response.extensions, request=request)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _translate(exc: Exception) -> Exception:
    for kind in type(exc).__mro__:
        target = _EXCEPTIONS.get(kind)
        if target is not None:
            return target(str(exc))
    return httpx.TransportError(str(exc))


class Connection:
    """One socket (TLS or not) to one origin, with the timeout it is set to remembered: setting
    it is a system call, and a trip through the GIL, that most requests need not make."""

    def __init__(self, origin: tuple[str, str, int | None], sock: socket.socket, timeout: float | None):
        self.origin = origin
        self.reusable = True
        self.sock = sock
        self._timeout = timeout
        self._used_at = time.monotonic()

    @classmethod
    def open(cls, origin: tuple[str, str, int | None], ssl_context: ssl.SSLContext,
             timeout: float | None) -> "Connection":
        scheme, host, port = origin
        address = (host, port or (443 if scheme == "https" else 80))
        try:
            sock = socket.create_connection(address, timeout)
        except socket.timeout as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{address[1]} took longer than {timeout} s") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except socket.timeout as exc:
            sock.close()
            raise httpx.ConnectTimeout(f"the TLS handshake with {host} took longer than {timeout} s") from exc
        except OSError as exc:  # ssl.SSLError included: a refused certificate among them (client.py)
            sock.close()
            raise httpx.ConnectError(str(exc)) from exc
        return cls(origin, sock, timeout)

    def usable(self) -> bool:
        """Not rested past the keep-alive expiry, and not closed by the server while it rested
        (only polled after a rest: a server does not close a connection it just answered on)."""
        rested = time.monotonic() - self._used_at
        if rested > KEEPALIVE_EXPIRY_S:
            return False
        if rested < _REST_S:
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable

    def exchange(self, data: bytes, write_timeout: float | None, read_timeout: float | None) -> http11.Answer:
        sock = self.sock
        self.reusable = False  # until an answer says otherwise
        self._settimeout(write_timeout)
        try:
            sock.sendall(data)
        except socket.timeout as exc:
            raise httpx.WriteTimeout(f"sending the request took longer than {write_timeout} s") from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc)) from exc
        self._settimeout(read_timeout)
        try:
            answer = http11.read_answer(sock.recv)
        except socket.timeout as exc:
            raise httpx.ReadTimeout(f"no answer within {read_timeout} s") from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc)) from exc
        except http11.ProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        self.reusable = answer.reusable
        self.used()
        return answer

    def used(self) -> None:
        """An answer came in full: the connection's rest starts now."""
        self._used_at = time.monotonic()

    def _settimeout(self, timeout: float | None) -> None:
        if timeout != self._timeout:
            self.sock.settimeout(timeout)
            self._timeout = timeout

    def close(self) -> None:
        self.sock.close()
