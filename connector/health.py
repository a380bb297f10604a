"""The metrics and probe endpoints: /metrics, /healthz, /readyz.

/healthz (liveness) fails when restarting the process would help:

* the pipeline loop has not turned for ``loop_timeout_s``: something is stuck;
* or it is *stalled*: a message has been pending for ``stall_timeout_s`` and nothing was
  delivered, dead-lettered or committed for as long, while UserFlux is not answering with
  errors. No answer at all (requests hang or time out) counts as a stall.

An *outage* is told apart by UserFlux's answers: while it answers with errors that are
being retried (5xx, 429, ...) or a sender waits out its ``Retry-After``, the process is
healthy and a restart would only re-send; /healthz says ``outage`` with 200, and the
lag alerts speak for it.

While reading waits for the schema registry (registry_wait.py), /healthz answers 200 with
``registry_unavailable`` and what the registry did: a restart would not bring it back.

/readyz is ready once the consumer has its first assignment, until shutdown begins or
UserFlux refuses the key. Both answer a short JSON object saying why.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from .threads import daemon_thread

log = logging.getLogger("connector.health")

STARTING, READY, SHUTTING_DOWN = "starting", "ready", "shutting_down"
# UserFlux refused the key (401/403) or the address (404, 3xx): final until the exit.
KEY_REFUSED, ADDRESS_REFUSED = "key_refused", "address_refused"
# The schema registry refused the connector's credentials (401/403): final until the exit.
REGISTRY_REFUSED = "registry_refused"


class Status:
    """What the probes report. Plain attributes, written by the pipeline and sender
    threads and read by the server's: each write is atomic, and a probe needs no more."""

    def __init__(self, loop_timeout_s: float, stall_timeout_s: float, clock: Callable[[], float] = time.monotonic):
        self.loop_timeout_s = loop_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.clock = clock
        now = clock()
        self.last_beat = now
        self.last_progress = now
        self.last_error_answer: float | None = None  # UserFlux answered an error we retry
        self.retry_until = 0.0  # a sender waits, as UserFlux asked, until then
        self.pending = 0
        self.oldest_read_at: float | None = None  # when the oldest pending message was read
        self.state = STARTING
        self.detail = "waiting for the first partition assignment"
        self.assigned = 0
        self.registry_problem: str | None = None  # why reading waits for the schema registry

    # -- written by the pipeline and the senders -------------------------------------------

    def beat(self) -> None:
        self.last_beat = self.clock()

    def progress(self) -> None:
        """Something was delivered, dead-lettered or committed."""
        self.last_progress = self.clock()

    def error_answered(self, wait_s: float) -> None:
        """UserFlux answered with an error the senders retry after ``wait_s``."""
        now = self.clock()
        self.last_error_answer = now
        self.retry_until = max(self.retry_until, now + wait_s)

    def set_pending(self, pending: int, oldest_read_at: float | None) -> None:
        self.pending = pending
        self.oldest_read_at = oldest_read_at if pending else None

    def registry_unavailable(self, reason: str | None) -> None:
        """Reading waits for the schema registry, for ``reason``; None: it answered."""
        self.registry_problem = reason[:300] if reason else None

    def set_state(self, state: str, detail: str = "") -> None:
        if self.state not in (KEY_REFUSED, ADDRESS_REFUSED, REGISTRY_REFUSED):  # the refusal is the last word
            self.state, self.detail = state, detail

    # -- read by the probes ----------------------------------------------------------------

    def live(self) -> tuple[bool, dict[str, Any]]:
        now = self.clock()
        idle = now - self.last_beat
        quiet = now - self.last_progress
        oldest = now - self.oldest_read_at if self.pending and self.oldest_read_at is not None else 0.0
        body: dict[str, Any] = {
            "status": "ok",
            "pending": self.pending,
            "oldest_pending_s": round(oldest, 1),
            "last_progress_s": round(quiet, 1),
            "loop_idle_s": round(idle, 1),
        }
        if idle > self.loop_timeout_s:
            body["status"] = "loop_stopped"
            return False, body
        problem = self.registry_problem
        if problem is not None:
            body["status"] = "registry_unavailable"  # waiting for it; a restart would not help
            body["detail"] = problem
            return True, body
        if self._outage(now):
            body["status"] = "outage"  # UserFlux answers errors; retrying is all a restart would do
            return True, body
        if oldest >= self.stall_timeout_s and quiet >= self.stall_timeout_s:
            body["status"] = "stalled"
            return False, body
        return True, body

    def _outage(self, now: float) -> bool:
        if now < self.retry_until:
            return True
        answered = self.last_error_answer
        return answered is not None and answered > self.last_progress and now - answered < self.stall_timeout_s

    def ready(self) -> tuple[bool, dict[str, Any]]:
        body: dict[str, Any] = {"status": self.state}
        if self.state == READY:
            body["assigned_partitions"] = self.assigned
        elif self.detail:
            body["detail"] = self.detail
        return self.state == READY, body


class HealthServer:
    def __init__(self, host: str, port: int, status: Status):
        handler = _handler(status)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = daemon_thread(self.server.serve_forever, "health")

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("metrics and probes on port %d: /metrics /healthz /readyz", self.port)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(status: Status) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, body = status.live() if path == "/healthz" else status.ready()
                self._send(200 if ok else 503, (json.dumps(body) + "\n").encode(), "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            pass

    return Handler
