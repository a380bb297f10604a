"""What reading an answer costs: http11.py's reader against h11, and the reuse check.

    python -m tests.benchmark.answers [--runs R] [--answers N]      (make bench-answers)

Three figures, each the median over ``--runs`` of N repetitions, in microseconds of CPU
(``time.thread_time``) per answer or per check:

- ``ours``: ``AnswerReader`` reading the answer UserFlux sends (204, no body, the headers
  a balancer adds), fed as one piece, as a socket read delivers it;
- ``h11``: an ``h11.Connection`` in the client role reading the same bytes after the same
  POST, as httpcore drives it (``receive_data``, ``next_event`` until ``EndOfMessage``,
  ``start_next_cycle``);
- ``reuse check``: ``Connection.usable()`` on a resting keep-alive connection to a
  loopback server, plain TCP and TLS (one ``select`` with no wait, and for TLS a look at
  the decrypted bytes waiting).

docs/delivery.md, "How answers are read", quotes the last run.
"""

from __future__ import annotations

import argparse
import pathlib
import socket
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import h11

from connector.sink.connection import Connection
from connector.sink.http11 import AnswerReader

ANSWER = (
    b"HTTP/1.1 204 No Content\r\nDate: Mon, 07 Dec 2026 21:00:00 GMT\r\nServer: envoy\r\n"
    b"x-envoy-upstream-service-time: 3\r\nVia: 1.1 google\r\n\r\n"
)


def ours() -> None:
    AnswerReader().feed(ANSWER)


def h11_reads() -> Callable[[], None]:
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target="/event/ingest/batch",
        headers=[("Host", "integration-api.userflux.co"), ("Content-Length", "2")],
    )

    def read() -> None:
        connection.send(request)
        connection.send(h11.Data(data=b"{}"))
        connection.send(h11.EndOfMessage())
        connection.receive_data(ANSWER)
        while not isinstance(connection.next_event(), h11.EndOfMessage):
            pass
        connection.start_next_cycle()

    return read


def per_call_us(work: Callable[[], None], count: int) -> float:
    started = time.thread_time()
    for _ in range(count):
        work()
    return (time.thread_time() - started) / count * 1e6


def resting_connection(tls: bool, files: tuple[str, str] | None) -> tuple[Connection, Callable[[], None]]:
    """A keep-alive connection to a loopback server that says nothing while it rests."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        sock, _ = listener.accept()
        if tls and files is not None:
            server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server.load_cert_chain(*files)
            sock = server.wrap_socket(sock, server_side=True)
        accepted.append(sock)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = Connection.open(("https" if tls else "http", "127.0.0.1", port), context, 5.0)
    thread.join(5)
    connection.usable()  # a TLS 1.3 server's session tickets are read here, once

    def close() -> None:
        connection.close()
        for sock in accepted:
            sock.close()
        listener.close()

    return connection, close


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.answers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each (default %(default)s)")
    parser.add_argument("--answers", type=int, default=20_000, help="repetitions per run (default %(default)s)")
    args = parser.parse_args(argv)
    from tests.support.certs import make_certs

    with tempfile.TemporaryDirectory() as folder:
        certs = make_certs(pathlib.Path(folder))
        plain, close_plain = resting_connection(False, None)
        tls, close_tls = resting_connection(True, (str(certs.server_cert), str(certs.server_key)))
        try:
            assert plain.usable() and tls.usable(), "a resting connection must be usable"
            works = {
                "ours": ours,
                "h11": h11_reads(),
                "reuse check, plain": plain.usable,
                "reuse check, TLS": tls.usable,
            }
            figures: dict[str, list[float]] = {name: [] for name in works}
            for _ in range(args.runs):  # interleaved, so the machine's drift spreads evenly
                for name, work in works.items():
                    figures[name].append(per_call_us(work, args.answers))
        finally:
            close_plain()
            close_tls()
    for name, values in figures.items():
        print(f"{name:<20} {statistics.median(values):7.2f} us  (runs: {', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
