"""The HTTP boundary: send one request to UserFlux and say what the answer means.

httpx's exceptions and status codes are translated here, once, into an ``Answer``; no
other module knows about HTTP. Nothing here retries or decides about messages.

    2xx                     delivered
    408, 425, 429, 5xx,
    timeouts, connection    retry (Retry-After honoured)
    400, 413, 422           reject: the request is bad; the same body will fail again
    401, 403                auth: the key is wrong, revoked or not allowed
    anything else           fatal: a misconfiguration (wrong base_url: 404, redirects)
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Callable

import httpx

from .. import __version__
from ..config.model import Secret, TlsSettings
from .request import batch_params, batch_url
from .retry import parse_retry_after
from .tls import ssl_context
from .transport import KeepAliveTransport, NotAdmitted

DELIVERED, RETRY, REJECT, AUTH, FATAL = "delivered", "retry", "rejected", "auth", "fatal"

_REJECT = {400, 413, 422}
_AUTH = {401, 403}
_RETRY = {408, 425, 429}


@dataclass(frozen=True)
class Answer:
    outcome: str  # DELIVERED, RETRY, REJECT, AUTH or FATAL
    code: str  # the status code, or "timeout" / "connection"
    detail: str  # one line for logs and dead-letter reasons
    retry_after_s: float | None = None
    duration_s: float = 0.0


@dataclass(frozen=True)
class Route:
    origin: tuple[str, str, int | None]  # scheme, host, port
    targets: dict[bool, bytes]  # the request target, by location enrichment
    headers: list[tuple[bytes, bytes]]  # every header but Content-Length
    ssl_context: ssl.SSLContext
    timeout_s: float


def classify(status: int) -> str:
    if 200 <= status < 300:
        return DELIVERED
    if status in _REJECT:
        return REJECT
    if status in _AUTH:
        return AUTH
    if status in _RETRY or 500 <= status < 600:
        return RETRY
    return FATAL


def _certificate_refused(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    for _ in range(10):  # httpx wraps httpcore's error, which wraps ssl's
        if cause is None:
            return False
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class UserFluxClient:
    """Posts batches; thread-safe. Each sender thread gets a transport of its own (one
    connection, transport.py), so the hot path shares no connection-pool lock: with a
    pool shared by eight threads, a request cost twice the CPU. The parts of a request
    that never change (URLs, headers, timeouts) are built once, here."""

    def __init__(self, base_url: str, api_key: Secret, timeout_s: float, max_connections: int,
                 transport: httpx.BaseTransport | None = None, tls: TlsSettings | None = None):
        self.url = batch_url(base_url)  # for messages
        url = httpx.URL(self.url)
        self._urls = {flag: url.copy_merge_params(batch_params(flag)) for flag in (False, True)}
        self._key = api_key.reveal()  # redacted from error bodies a server might echo it in
        self._headers = httpx.Headers({
            "Host": url.netloc.decode("ascii"),
            "Authorization": f"Bearer {api_key.reveal()}",
            "Content-Type": "application/json",
            "User-Agent": f"userflux-connector/{__version__}",
            "Accept": "*/*",
        })
        self._timeouts = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        self._timeout_s = timeout_s
        self._ssl = ssl_context(tls) if tls is not None and (tls.ca_file or tls.client_cert_file) \
            else httpx.create_ssl_context()
        self._proxy = _environment_proxy(url)
        self._shared = transport  # tests hand in one transport for every thread
        self._local = threading.local()
        self._transports: list[httpx.BaseTransport] = []
        self._lock = threading.Lock()  # only taken when a thread makes its transport

    def route(self) -> "Route | None":
        """Where and how a batch is posted, for a sender that writes requests itself
        (direct.py); None when requests must go through a transport: a proxy's, or the
        one a test handed in."""
        if self._proxy is not None or self._shared is not None:
            return None
        url = self._urls[False]
        return Route(origin=(url.scheme, url.host, url.port),
                     targets={flag: u.raw_path for flag, u in self._urls.items()},
                     headers=list(self._headers.raw), ssl_context=self._ssl, timeout_s=self._timeout_s)

    def _transport(self) -> httpx.BaseTransport:
        if self._shared is not None:
            return self._shared
        transport = getattr(self._local, "transport", None)
        if transport is None:
            transport = KeepAliveTransport(self._ssl, self._proxy)
            self._local.transport = transport
            with self._lock:
                self._transports.append(transport)
        return transport

    def post_batch(self, body: bytes, location_enrichment: bool,
                   admit: Callable[[], bool] | None = None) -> Answer | None:
        """The answer; None when ``admit``, asked once the connection is open, said no (then
        nothing was sent). A proxy's transport, or one a test handed in, does not ask it."""
        started = time.monotonic()
        extensions = self._timeouts if admit is None else {**self._timeouts, "admit": admit}
        request = httpx.Request("POST", self._urls[location_enrichment], headers=self._headers, content=body,
                                extensions=extensions)
        try:
            response = self._transport().handle_request(request)
            try:
                response.read()
            finally:
                response.close()
        except NotAdmitted:
            return None
        except httpx.RequestError as exc:
            return self.failed(exc, time.monotonic() - started)
        return self.answered(response, time.monotonic() - started)

    def answered(self, response: httpx.Response, duration: float) -> Answer:
        """What an answer means (its content read)."""
        status = response.status_code
        outcome = classify(status)
        if outcome == DELIVERED:
            return Answer(outcome, str(status), f"HTTP {status}", None, duration)
        detail = f"HTTP {status} {response.reason_phrase}".rstrip()
        text = self._redact(response.text.strip().replace("\n", " "))
        if text:
            detail += f": {text[:300]}"
        if outcome == FATAL and 300 <= status < 400 and "location" in response.headers:
            detail += f" (redirect to {self._redact(response.headers['location'])})"
        return Answer(outcome, str(status), detail, parse_retry_after(response.headers.get("retry-after")), duration)

    @staticmethod
    def failed(exc: httpx.RequestError, duration: float) -> Answer:
        """What a request that got no usable answer means."""
        if isinstance(exc, httpx.TimeoutException):
            return Answer(RETRY, "timeout", f"no answer within the timeout ({type(exc).__name__})",
                          duration_s=duration)
        if isinstance(exc, httpx.TransportError):
            if _certificate_refused(exc):  # not transient: the configuration must change
                return Answer(FATAL, "tls", f"the server's TLS certificate was refused: {exc}", duration_s=duration)
            return Answer(RETRY, "connection", f"connection failed: {type(exc).__name__}: {exc}", duration_s=duration)
        # e.g. DecodingError: an answer came but cannot be read
        return Answer(RETRY, "connection", f"unreadable answer: {type(exc).__name__}: {exc}", duration_s=duration)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def close(self) -> None:
        with self._lock:
            transports, self._transports = self._transports, []
        for transport in transports + ([self._shared] if self._shared is not None else []):
            transport.close()


def _environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment asks for (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY), as
    httpx.Client would use it: the transports are made here, so this is read here, once."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy
