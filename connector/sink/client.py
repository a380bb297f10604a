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
import time
from dataclasses import dataclass

import httpx

from .. import __version__
from ..config.model import Secret, TlsSettings
from .request import batch_params, batch_url
from .retry import parse_retry_after
from .tls import ssl_context

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
    """Thread-safe: one connection pool shared by every sender thread."""

    def __init__(self, base_url: str, api_key: Secret, timeout_s: float, max_connections: int,
                 transport: httpx.BaseTransport | None = None, tls: TlsSettings | None = None):
        self.url = batch_url(base_url)
        self._key = api_key.reveal()  # redacted from error bodies a server might echo it in
        self._client = httpx.Client(
            headers={
                "Authorization": f"Bearer {api_key.reveal()}",
                "Content-Type": "application/json",
                "User-Agent": f"userflux-connector/{__version__}",
            },
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,
            transport=transport,
            verify=ssl_context(tls) if tls is not None and (tls.ca_file or tls.client_cert_file) else True,
        )

    def post_batch(self, body: bytes, location_enrichment: bool) -> Answer:
        started = time.monotonic()
        try:
            response = self._client.post(self.url, params=batch_params(location_enrichment), content=body)
        except httpx.TimeoutException as exc:
            return Answer(RETRY, "timeout", f"no answer within the timeout ({type(exc).__name__})",
                          duration_s=time.monotonic() - started)
        except httpx.TransportError as exc:
            if _certificate_refused(exc):  # not transient: the configuration must change
                return Answer(FATAL, "tls", f"the server's TLS certificate was refused: {exc}",
                              duration_s=time.monotonic() - started)
            return Answer(RETRY, "connection", f"connection failed: {type(exc).__name__}: {exc}",
                          duration_s=time.monotonic() - started)
        except httpx.RequestError as exc:  # e.g. DecodingError: an answer came but cannot be read
            return Answer(RETRY, "connection", f"unreadable answer: {type(exc).__name__}: {exc}",
                          duration_s=time.monotonic() - started)
        duration = time.monotonic() - started
        status = response.status_code
        outcome = classify(status)
        detail = f"HTTP {status} {response.reason_phrase}".rstrip()
        if outcome != DELIVERED:
            text = self._redact(response.text.strip().replace("\n", " "))
            if text:
                detail += f": {text[:300]}"
            if outcome == FATAL and 300 <= status < 400 and "location" in response.headers:
                detail += f" (redirect to {self._redact(response.headers['location'])})"
        return Answer(outcome, str(status), detail, parse_retry_after(response.headers.get("retry-after")), duration)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def close(self) -> None:
        self._client.close()
