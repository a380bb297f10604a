"""A loopback server that answers the way a broken or hostile server, balancer or proxy
would: from a script per connection, byte by byte if asked, closing or resetting at any
point, sending what nobody asked for while a connection rests.

Each accepted connection runs the next script given to ``HostileServer`` (the last one
repeats), on a thread of its own, with a ``Peer`` to act through. Over TLS with
``tls=(certfile, keyfile)``. Only the standard library is used.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

Script = Callable[["Peer"], None]

ANSWER_204 = b"HTTP/1.1 204 No Content\r\n\r\n"


class Peer:
    """The server's side of one connection."""

    def __init__(self, sock: socket.socket, server: HostileServer):
        self.sock = sock
        self.server = server
        self._buffer = b""
        self.sent = 0  # bytes written to the client

    def _fill(self, enough: Callable[[], bool]) -> bool:
        """Read until ``enough()``; False if the client closed (or went quiet) first."""
        while not enough():
            try:
                data = self.sock.recv(65_536)
            except (TimeoutError, OSError):
                return False
            if not data:
                return False
            self._buffer += data
        return True

    def read_head(self, timeout_s: float = 5.0) -> bytes:
        """The request's head (through the empty line), b"" if the client closed first."""
        self.sock.settimeout(timeout_s)
        if not self._fill(lambda: b"\r\n\r\n" in self._buffer):
            return b""
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n"

    def read_request(self, timeout_s: float = 5.0) -> bytes:
        """A whole request (head and its Content-Length body); recorded. b"" if the client
        closed first."""
        head = self.read_head(timeout_s)
        if not head:
            return b""
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if not self._fill(lambda: len(self._buffer) >= length):
            return b""
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        with self.server.lock:
            self.server.requests.append(head + body)
        return head + body

    def send(self, data: bytes, piece: int = 0, pause_s: float = 0.0) -> bool:
        """Write ``data`` (in pieces of ``piece`` bytes, ``pause_s`` apart); False once the
        client is gone."""
        pieces = [data] if not piece else [data[i : i + piece] for i in range(0, len(data), piece)]
        try:
            for i, part in enumerate(pieces):
                if i and pause_s:
                    time.sleep(pause_s)
                self.sock.sendall(part)
                self.sent += len(part)
        except OSError:
            return False
        return True

    def send_forever(self, piece: bytes, pause_s: float = 0.0, limit_bytes: int = 256 * 1024 * 1024) -> None:
        """Write ``piece`` again and again until the client is gone (bounded by ``limit_bytes``)."""
        self.sock.settimeout(5.0)
        while self.sent < limit_bytes and self.send(piece):
            if pause_s:
                time.sleep(pause_s)

    def rest(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait_closed(self, timeout_s: float = 5.0) -> None:
        """Until the client closes its side (or ``timeout_s``)."""
        self.sock.settimeout(timeout_s)
        try:
            while self.sock.recv(65_536):
                pass
        except (TimeoutError, OSError):
            pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def reset(self) -> None:
        """Close with an RST: the client's next read or write fails at once."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()


class HostileServer:
    def __init__(self, *scripts: Script, tls: tuple[str, str] | None = None):
        self.scripts = list(scripts)
        self.requests: list[bytes] = []
        self.connections = 0
        self.peers: list[Peer] = []
        self.lock = threading.Lock()
        self._tls = None
        if tls is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(*tls)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]
        self.base_url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{self.port}"
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._accept_loop, name="hostile-accept", daemon=True)
        self._accept.start()

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self.lock:
                index = self.connections
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        if self._tls is not None:
            try:
                sock.settimeout(5.0)
                sock = self._tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                return
        peer = Peer(sock, self)
        with self.lock:
            self.peers.append(peer)
        script = self.scripts[min(index, len(self.scripts) - 1)]
        try:
            script(peer)
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()
        with self.lock:
            peers = list(self.peers)
        for peer in peers:  # a shutdown wakes a script blocked in recv; a close alone does not
            peer.close()
        for thread in self._threads:
            thread.join(2)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- scripts used again and again ---------------------------------------------------------------


def answer_each(answer: bytes) -> Script:
    """Read requests and answer each with ``answer`` until the client closes."""

    def script(peer: Peer) -> None:
        while peer.read_request():
            if not peer.send(answer):
                return

    return script
