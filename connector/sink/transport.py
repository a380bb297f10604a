"""Each sender's HTTP transport: one keep-alive connection, as few trips through the GIL
as one request can take.

It is an ``httpx.BaseTransport`` (httpx's extension point for transports) on httpcore
(httpx's own engine), so the client speaks httpx: requests, responses and exceptions
are httpx's. What differs is the network stream under the connection. httpx's stream
sets the socket timeout before every call, polls the socket before reusing it, and
writes the headers and the body apart; each of those system calls releases the GIL and
takes it back, and with the main loop busy mapping messages every take waits. Measured
beside a busy thread, a request cost 645 us of CPU through httpx's stream and 300 us
through this one, which sends the request in one ``sendall``, sets the timeout only
when it changes, and polls an idle connection only after it has rested a second.

Without a proxy the transport holds its one httpcore connection itself rather than
through httpcore's connection pool, whose request queue, lock and bookkeeping cost
about a sixth of a request's CPU (343 against 284 us, one thread posting to the
benchmark's sink) and buy nothing for a single connection. What the pool did that
matters is kept: a connection that is closed, has expired or was closed by the server
is replaced before the request, and one that turns out unavailable
(``ConnectionNotAvailable``) is replaced and the request tried once more on the new one.

With a proxy, httpcore's proxy pool and httpx's own stream are used (the proxy's CONNECT
and TLS-in-TLS are their business); the connection is still the sender's own.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from typing import Any, Iterable

import httpcore
import httpx

KEEPALIVE_EXPIRY_S = 5.0  # as httpx's default: an idle connection is replaced after this
_REST_S = 1.0  # an idle connection is polled for a close by the server after this long

# httpcore's exceptions as httpx raises them (the most specific match wins).
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


class KeepAliveTransport(httpx.BaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext, proxy: str | None = None):
        self._ssl_context = ssl_context
        self._backend = LeanBackend()
        self._connection: httpcore.HTTPConnection | None = None
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
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = self._pool.handle_request(core) if self._pool is not None else self._send(core)
            try:
                content = response.read()  # the answers are small: read at once
            finally:
                response.close()
        except httpcore.TimeoutException as exc:
            raise _translate(exc) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError,
                httpcore.UnsupportedProtocol) as exc:
            raise _translate(exc) from exc
        return httpx.Response(status_code=response.status, headers=response.headers, content=content,
                              extensions=response.extensions, request=request)

    def _send(self, request: httpcore.Request) -> httpcore.Response:
        """The request on this sender's one connection, replaced first if it cannot be used."""
        for attempt in (1, 2):
            connection = self._connection
            if connection is None or connection.is_closed() or connection.has_expired() \
                    or not connection.can_handle_request(request.url.origin):
                if connection is not None:
                    connection.close()
                connection = self._connection = httpcore.HTTPConnection(
                    request.url.origin, ssl_context=self._ssl_context, keepalive_expiry=KEEPALIVE_EXPIRY_S,
                    network_backend=self._backend)
            try:
                return connection.handle_request(request)
            except httpcore.ConnectionNotAvailable:
                # Closed between the check and the request: a new connection, once.
                connection.close()
                self._connection = None
        raise httpcore.ConnectError("no connection to UserFlux could take the request")  # retried

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


class LeanBackend(httpcore.NetworkBackend):
    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        source = None if local_address is None else (local_address, 0)
        try:
            sock = socket.create_connection((host, port), timeout, source_address=source)
        except socket.timeout as exc:
            raise httpcore.ConnectTimeout(exc) from exc
        except OSError as exc:
            raise httpcore.ConnectError(exc) from exc
        for option in socket_options or ():
            sock.setsockopt(*option)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return LeanStream(sock, timeout)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("the connector does not connect to unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class LeanStream(httpcore.NetworkStream):
    """A socket whose writes wait for the next read: a request leaves in one sendall."""

    def __init__(self, sock: socket.socket, timeout: float | None):
        self._sock = sock
        self._timeout = timeout  # what the socket is set to now
        self._unsent: list[bytes] = []
        self._used_at = time.monotonic()

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._unsent.append(buffer)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._unsent:
            data = b"".join(self._unsent)
            self._unsent.clear()
            self._settimeout(timeout)
            try:
                self._sock.sendall(data)
            except socket.timeout as exc:
                raise httpcore.WriteTimeout(exc) from exc
            except OSError as exc:
                raise httpcore.WriteError(exc) from exc
        self._settimeout(timeout)
        try:
            data = self._sock.recv(max_bytes)
        except socket.timeout as exc:
            raise httpcore.ReadTimeout(exc) from exc
        except OSError as exc:
            raise httpcore.ReadError(exc) from exc
        self._used_at = time.monotonic()
        return data

    def _settimeout(self, timeout: float | None) -> None:
        if timeout != self._timeout:  # a system call (and a trip through the GIL) otherwise
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        self._settimeout(timeout)
        try:
            wrapped = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except socket.timeout as exc:
            raise httpcore.ConnectTimeout(exc) from exc
        except OSError as exc:  # ssl.SSLError included: a refused certificate among them
            self._sock.close()
            raise httpcore.ConnectError(exc) from exc
        return LeanStream(wrapped, self._timeout)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":  # only readable when idle if the server closed it
            if time.monotonic() - self._used_at < _REST_S:
                return False
            readable, _, _ = select.select([self._sock], [], [], 0)
            return bool(readable)
        return None
