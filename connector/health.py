"""The metrics and probe endpoints: /metrics, /healthz, /readyz.

/healthz answers 200 while the pipeline loop keeps turning (a stuck loop fails the
liveness probe); /readyz answers 200 once the consumer has joined its group and while it
is not shutting down.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger("connector.health")


class Status:
    """What the probes report; written by the pipeline thread, read by the server."""

    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic):
        self.stall_after_s = stall_after_s
        self.clock = clock
        self.last_beat = clock()
        self.ready = False
        self.reason = "starting: waiting for the first partition assignment"

    def beat(self) -> None:
        self.last_beat = self.clock()

    def live(self) -> tuple[bool, str]:
        idle = self.clock() - self.last_beat
        if idle > self.stall_after_s:
            return False, f"the pipeline loop has not turned for {idle:.0f}s"
        return True, "ok"


class HealthServer:
    def __init__(self, host: str, port: int, status: Status):
        handler = _handler(status)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        log.info("metrics and probes on port %d: /metrics /healthz /readyz", self.port)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(status: Status) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, why = status.live()
                self._send(200 if ok else 503, (why + "\n").encode())
            elif path == "/readyz":
                self._send(200 if status.ready else 503, ((status.reason if not status.ready else "ok") + "\n").encode())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - probes every few seconds are noise
            pass

    return Handler
