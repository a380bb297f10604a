"""Where and how a batch is posted, and posting it from a sender thread.

``Route`` is everything about a request that never changes (the address, the request
target by location enrichment, the headers, TLS, the timeout), built once at start. The
pipeline's thread writes requests along it itself (direct.py); ``UserFluxClient.post_batch``
sends one from a sender thread, on that thread's own keep-alive connection
(connection.py) or through the environment's proxy (proxy.py), and says what the answer
means (outcome.py). Nothing here retries or decides about messages.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from .. import __version__
from ..config.model import Secret, TlsSettings
from . import outcome
from .connection import Connection, Origin
from .errors import NotAdmitted, TransportError
from .http11 import request_bytes
from .outcome import Outcome
from .proxy import ProxyConnection, environment_proxy
from .request import batch_params, batch_url
from .tls import ssl_context


@dataclass(frozen=True)
class Route:
    url: str  # the batch endpoint, for messages
    origin: Origin
    targets: dict[bool, bytes]  # the request target, by location enrichment
    headers: list[tuple[bytes, bytes]]  # every header but Content-Length
    ssl_context: ssl.SSLContext
    timeout_s: float
    key: str  # redacted from any detail a server's answer may echo it in

    def request(self, body: bytes, location_enrichment: bool) -> bytes:
        """The request's bytes: one buffer, ready to write."""
        return request_bytes(
            b"POST",
            self.targets[location_enrichment],
            self.headers + [(b"Content-Length", str(len(body)).encode("ascii"))],
            body,
        )


def make_route(base_url: str, api_key: Secret, timeout_s: float, tls: TlsSettings | None = None) -> Route:
    url = httpx.URL(batch_url(base_url))
    targets = {flag: url.copy_merge_params(batch_params(flag)).raw_path for flag in (False, True)}
    headers = [
        (b"Host", url.netloc),
        (b"Authorization", f"Bearer {api_key.reveal()}".encode("latin-1")),
        (b"Content-Type", b"application/json"),
        (b"User-Agent", f"userflux-connector/{__version__}".encode("ascii")),
        (b"Accept", b"*/*"),
    ]
    # Without TLS settings of its own, the context httpx would make (certifi's CAs, or
    # SSL_CERT_FILE / SSL_CERT_DIR from the environment).
    context = (
        ssl_context(tls) if tls is not None and (tls.ca_file or tls.client_cert_file) else httpx.create_ssl_context()
    )
    return Route(
        url=str(url),
        origin=(url.scheme, url.host, url.port),
        targets=targets,
        headers=headers,
        ssl_context=context,
        timeout_s=timeout_s,
        key=api_key.reveal(),
    )


class UserFluxClient:
    """Posts batches from the sender threads; thread-safe. Each thread has a connection of
    its own, so the hot path shares no pool's lock (a pool shared by eight threads cost
    twice the CPU a request)."""

    def __init__(self, route: Route):
        self.route = route
        self.url = route.url
        self.proxy = environment_proxy(httpx.URL(route.url))  # None: the pipeline may write requests itself
        self._local = threading.local()
        self._opened: list[Connection | ProxyConnection] = []
        self._lock = threading.Lock()  # only taken when a thread opens a connection

    def post_batch(
        self, body: bytes, location_enrichment: bool, admit: Callable[[], bool] | None = None
    ) -> Outcome | None:
        """What UserFlux's answer means; None when ``admit``, asked once the connection is
        open, said no (then nothing was sent). Behind a proxy ``admit`` is not asked."""
        route = self.route
        started = time.monotonic()
        try:
            if self.proxy is not None:
                url = httpx.URL(route.url).copy_merge_params(batch_params(location_enrichment))
                headers = route.headers + [(b"Content-Length", str(len(body)).encode("ascii"))]
                response = self._proxy().exchange(url, headers, body, route.timeout_s)
            else:
                data = route.request(body, location_enrichment)
                response = self._connection().exchange(data, route.timeout_s, admit)
        except NotAdmitted:
            return None
        except TransportError as exc:
            self._drop()
            return outcome.of_error(exc, time.monotonic() - started)
        if not response.reusable:
            self._drop()
        return outcome.of_response(response, time.monotonic() - started, route.key)

    def _connection(self) -> Connection:
        """This thread's connection, replaced first when it may not carry another request."""
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is not None and not connection.usable():
            connection.close()
            connection = None
        if connection is None:
            connection = Connection.open(self.route.origin, self.route.ssl_context, self.route.timeout_s)
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def _proxy(self) -> ProxyConnection:
        proxy: ProxyConnection | None = getattr(self._local, "proxy", None)
        if proxy is None:
            assert self.proxy is not None
            proxy = self._local.proxy = ProxyConnection(self.proxy, self.route.ssl_context)
            with self._lock:
                self._opened.append(proxy)
        return proxy

    def _drop(self) -> None:
        """After a failure or an answer that ends the connection: the next request opens a new one."""
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()
