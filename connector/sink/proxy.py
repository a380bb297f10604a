"""Requests through an HTTP proxy (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, as httpx
reads them): httpcore's proxy pool carries them, since the proxy's CONNECT and TLS inside
TLS are its business. One pool of one connection per sender thread, like connection.py's;
httpcore's exceptions are translated into the sink's here, once, and its answer into an
http11.Response, so outcome.py reads an answer the same way whatever path it took.
httpcore checks an idle connection for unread bytes before reusing it, as connection.py
does. Behind a proxy, the gate's ``admit`` is not asked (httpcore connects inside its pool).
"""

from __future__ import annotations

import ssl
import urllib.request

import httpcore
import httpx

from .connection import KEEPALIVE_EXPIRY_S
from .errors import (
    CertificateRefused,
    ConnectError,
    ConnectTimeout,
    ProtocolError,
    ReadError,
    ReadTimeout,
    TransportError,
    WriteError,
    WriteTimeout,
)
from .http11 import Response

# httpcore's exceptions, most specific first.
_ERRORS: list[tuple[type[Exception], type[TransportError]]] = [
    (httpcore.ConnectTimeout, ConnectTimeout),
    (httpcore.PoolTimeout, ConnectTimeout),
    (httpcore.ReadTimeout, ReadTimeout),
    (httpcore.WriteTimeout, WriteTimeout),
    (httpcore.TimeoutException, ReadTimeout),
    (httpcore.ConnectError, ConnectError),
    (httpcore.ReadError, ReadError),
    (httpcore.WriteError, WriteError),
    (httpcore.ProxyError, ConnectError),
    (httpcore.RemoteProtocolError, ProtocolError),
    (httpcore.LocalProtocolError, ProtocolError),
    (httpcore.UnsupportedProtocol, ConnectError),
    (httpcore.NetworkError, ReadError),
    (httpcore.ProtocolError, ProtocolError),
]


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment asks for (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY), as
    httpx.Client would use it: read once, at start."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy


class ProxyConnection:
    """One sender thread's way through the proxy."""

    def __init__(self, proxy: str, ssl_context: ssl.SSLContext):
        url = httpx.URL(proxy)
        self._pool = httpcore.HTTPProxy(
            proxy_url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            proxy_auth=(url.username, url.password) if url.username else None,
            ssl_context=ssl_context,
            max_connections=1,
            max_keepalive_connections=1,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        )

    def exchange(self, url: httpx.URL, headers: list[tuple[bytes, bytes]], body: bytes, timeout_s: float) -> Response:
        request = httpcore.Request(
            method=b"POST",
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=headers,
            content=body,
            extensions={"timeout": {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}},
        )
        try:
            response = self._pool.handle_request(request)
            try:
                content = response.read()  # the answers are small: read at once
            finally:
                response.close()
        except Exception as exc:
            raise _translate(exc) from None
        reason = response.extensions.get("reason_phrase", b"")
        return Response(
            response.status,
            reason if isinstance(reason, bytes) else b"",
            list(response.headers),
            content,
            reusable=True,
        )

    def close(self) -> None:
        self._pool.close()


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, httpcore.ConnectError) and _certificate_refused(exc):
        return CertificateRefused(str(exc))
    for kind, target in _ERRORS:
        if isinstance(exc, kind):
            return target(str(exc) or type(exc).__name__)
    return exc  # not httpcore's: a bug, raised as it is


def _certificate_refused(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    for _ in range(10):  # httpcore wraps ssl's error
        if cause is None:
            return False
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
