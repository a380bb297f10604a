"""What an answer, or the lack of one, means for a batch: the one place where HTTP becomes
a decision, for every path a request takes (sender.py's threads, direct.py, a proxy).

    2xx                         delivered: UserFlux stored the batch, whatever the body
    408, 425, 429, 5xx          retry (Retry-After honoured)
    400, 413, 422               rejected: the request is bad; the same body fails again
    401, 403                    auth: the key is wrong, revoked or not allowed
    anything else               fatal: a misconfiguration (wrong base_url: 404, redirects)
    a timeout                   retry, code "timeout"
    no usable answer            retry, code "connection" (refused, reset, closed, not HTTP)
    a refused TLS certificate   fatal, code "tls"

The status line decides. Once an answer's head is complete its body only adds to the
detail, so a body cut short, compressed or undecodable never turns a 2xx into a retry
(which would deliver the batch again) or a 413 into a retry (which would never split it).

``record`` is the one place an outcome is counted: told to the gate, and to the metrics.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from .. import metrics
from .errors import CertificateRefused, Timeout, TransportError
from .http11 import Response
from .retry import parse_retry_after
from .throttle import Gate, Ticket

DELIVERED, RETRY, REJECT, AUTH, FATAL = "delivered", "retry", "rejected", "auth", "fatal"

_REJECT = {400, 413, 422}
_AUTH = {401, 403}
_RETRY = {408, 425, 429}
_DETAIL_CHARS = 300  # of an error body, in the detail


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # DELIVERED, RETRY, REJECT, AUTH or FATAL
    code: str  # the status code, or "timeout", "connection" or "tls"
    detail: str  # one line for logs and dead-letter reasons; never the key
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


def of_response(response: Response, duration_s: float, key: str = "") -> Outcome:
    """What an answer means. ``key`` is redacted from the detail (a server may echo it)."""
    status = response.status
    kind = classify(status)
    if kind == DELIVERED:
        return Outcome(kind, str(status), f"HTTP {status}", None, duration_s)
    detail = f"HTTP {status} {response.reason.decode('latin-1')}".rstrip()
    text = _redact(" ".join(_text(response).split()), key)
    if text:
        detail += f": {text[:_DETAIL_CHARS]}"
    if response.incomplete:
        detail += f" (the body was cut short: {response.incomplete})"
    location = response.header(b"location")
    if kind == FATAL and 300 <= status < 400 and location is not None:
        detail += f" (redirect to {_redact(location.decode('latin-1'), key)})"
    retry_after = response.header(b"retry-after")
    return Outcome(
        kind,
        str(status),
        detail,
        parse_retry_after(retry_after.decode("latin-1")) if retry_after is not None else None,
        duration_s,
    )


def of_error(error: TransportError, duration_s: float) -> Outcome:
    """What a request that got no usable answer means."""
    if isinstance(error, Timeout):
        return Outcome(RETRY, "timeout", f"no answer within the timeout: {error}", duration_s=duration_s)
    if isinstance(error, CertificateRefused):  # not transient: the configuration must change
        return Outcome(FATAL, "tls", f"the server's TLS certificate was refused: {error}", duration_s=duration_s)
    return Outcome(RETRY, "connection", f"connection failed: {type(error).__name__}: {error}", duration_s=duration_s)


def record(gate: Gate, ticket: Ticket, outcome: Outcome) -> float:
    """Count a request's outcome: the gate (Retry-After, UserFlux failing) and the metrics,
    under the gate's destination. Returns how long the gate now holds every sender of that
    destination (0: open)."""
    held = gate.report(ticket, outcome.kind == RETRY, outcome.retry_after_s)
    key = (outcome.kind, outcome.code, gate.destination)
    counters = _requests.get(key)
    if counters is None:
        counters = _requests[key] = (
            metrics.requests.labels(*key),
            metrics.request_duration.labels(gate.destination),
        )
    counters[0].inc()
    counters[1].observe(outcome.duration_s)
    return held


# The label lookups, once per kind of outcome and destination.
_requests: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def _text(response: Response) -> str:
    """The body as text, for the detail: decoded as its Content-Encoding says, where the
    standard library can; what cannot be decoded is named instead."""
    body = response.body
    if not body:
        return ""
    coding = (response.header(b"content-encoding") or b"").strip().lower()
    if coding in (b"gzip", b"x-gzip", b"deflate"):
        try:
            wbits = 16 + zlib.MAX_WBITS if coding != b"deflate" else zlib.MAX_WBITS
            body = zlib.decompressobj(wbits).decompress(body, 64 * 1024)
        except zlib.error:
            if coding != b"deflate":
                return f"(a {coding.decode('latin-1')} body that does not decode)"
            try:  # servers send raw deflate as "deflate" too
                body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, 64 * 1024)
            except zlib.error:
                return "(a deflate body that does not decode)"
    elif coding not in (b"", b"identity"):
        return f"(a {coding.decode('latin-1')[:20]} body)"
    return body[:4096].decode("utf-8", "replace")


def _redact(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text
