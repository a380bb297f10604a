"""Each sender's transport: one keep-alive connection, replaced when it cannot be used."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from connector.sink import transport as transport_module
from connector.sink.transport import KeepAliveTransport, NotAdmitted


class Server:
    """A loopback HTTP/1.1 server that records which client connection each request came on."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.close_after: set[int] = set()  # answer these requests (1-based) with Connection: close
        self.reset_on: set[int] = set()  # drop the connection instead of answering these
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                server.ports.append(self.client_address[1])
                n = len(server.ports)
                if n in server.reset_on:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.close_connection = True
                    return
                self.send_response(204)
                if n in server.close_after:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/event/ingest/batch"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def transport():
    t = KeepAliveTransport(httpx.create_ssl_context())
    yield t
    t.close()


def post(transport: KeepAliveTransport, url: str, **extensions) -> httpx.Response:
    request = httpx.Request("POST", url, content=b'{"events":[]}',
                            extensions={"timeout": httpx.Timeout(5.0).as_dict(), **extensions})
    return transport.handle_request(request)


def test_requests_share_one_keep_alive_connection(server, transport):
    assert [post(transport, server.url).status_code for _ in range(5)] == [204] * 5
    assert len(set(server.ports)) == 1


def test_a_connection_the_server_closes_is_replaced_for_the_next_request(server, transport):
    server.close_after = {2}
    assert [post(transport, server.url).status_code for _ in range(4)] == [204] * 4
    first, second = server.ports[:2], server.ports[2:]
    assert len(set(first)) == 1 and len(set(second)) == 1 and set(first) != set(second)


def test_a_reset_fails_that_request_and_the_next_one_goes_out_on_a_new_connection(server, transport):
    server.reset_on = {2}
    assert post(transport, server.url).status_code == 204
    with pytest.raises(httpx.TransportError):  # the sender retries it (client.py: "connection")
        post(transport, server.url)
    assert post(transport, server.url).status_code == 204
    assert server.ports[0] == server.ports[1] != server.ports[2]


def test_an_idle_connection_past_the_keep_alive_expiry_is_replaced(server, monkeypatch):
    monkeypatch.setattr(transport_module, "KEEPALIVE_EXPIRY_S", 0.05)
    transport = KeepAliveTransport(httpx.create_ssl_context())
    try:
        post(transport, server.url)
        time.sleep(0.1)
        post(transport, server.url)
    finally:
        transport.close()
    assert server.ports[0] != server.ports[1]


def test_admit_is_asked_once_the_connection_is_open_and_a_no_sends_nothing(server, transport):
    asked = []

    def admit() -> bool:
        asked.append(transport._connection is not None)  # the connection is open when asked
        return len(asked) > 1

    with pytest.raises(NotAdmitted):
        post(transport, server.url, admit=admit)
    assert server.ports == []  # nothing was written
    assert post(transport, server.url, admit=admit).status_code == 204
    assert asked == [True, True]
    assert len(server.ports) == 1  # and the connection opened for the refused one was kept
    assert post(transport, server.url).status_code == 204
    assert len(set(server.ports)) == 1
