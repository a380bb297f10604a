"""Each sender thread's connection (connection.py, through client.py): one keep-alive
connection, replaced when it cannot be used."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connector.sink import connection as connection_module
from connector.sink.client import UserFluxClient
from connector.sink.outcome import DELIVERED, RETRY
from tests.unit.sink.conftest import new_client


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
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
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
def client(server):
    c = new_client(server.url, timeout_s=5.0)
    yield c
    c.close()


def post(client: UserFluxClient, admit=None) -> str | None:
    """The outcome's kind; None when ``admit`` said no."""
    answer = client.post_batch(b'{"events":[]}', False, admit=admit)
    return None if answer is None else answer.kind


def test_requests_share_one_keep_alive_connection(server, client):
    assert [post(client) for _ in range(5)] == [DELIVERED] * 5
    assert len(set(server.ports)) == 1


def test_a_connection_the_server_closes_is_replaced_for_the_next_request(server, client):
    server.close_after = {2}
    assert [post(client) for _ in range(4)] == [DELIVERED] * 4
    first, second = server.ports[:2], server.ports[2:]
    assert len(set(first)) == 1 and len(set(second)) == 1 and set(first) != set(second)


def test_a_reset_fails_that_request_and_the_next_one_goes_out_on_a_new_connection(server, client):
    server.reset_on = {2}
    assert post(client) == DELIVERED
    answer = client.post_batch(b'{"events":[]}', False)  # the sender retries it
    assert answer is not None and (answer.kind, answer.code) == (RETRY, "connection")
    assert post(client) == DELIVERED
    assert server.ports[0] == server.ports[1] != server.ports[2]


def test_an_idle_connection_past_the_keep_alive_expiry_is_replaced(server, client, monkeypatch):
    monkeypatch.setattr(connection_module, "KEEPALIVE_EXPIRY_S", 0.05)
    post(client)
    time.sleep(0.1)
    post(client)
    assert server.ports[0] != server.ports[1]


def test_admit_is_asked_once_the_connection_is_open_and_a_no_sends_nothing(server, client):
    asked = []

    def admit() -> bool:
        asked.append(getattr(client._local, "connection", None) is not None)  # open when asked
        return len(asked) > 1

    assert post(client, admit) is None
    assert server.ports == []  # nothing was written
    assert post(client, admit) == DELIVERED
    assert asked == [True, True]
    assert len(server.ports) == 1  # and the connection opened for the refused one was kept
    assert post(client) == DELIVERED
    assert len(set(server.ports)) == 1
