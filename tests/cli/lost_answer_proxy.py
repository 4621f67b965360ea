"""A TCP proxy between the CLI and a gateway that loses the answer to a job submission (as a
flaky network does), for the tests of `fdl train`'s retries (tests/cli/test_submit_retry.py)."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading

from tests.redis_fault_proxy import HOLD_LIMIT_S


class LostAnswerProxy:
    """Forwards each HTTP request whole, and its answer; of the answer to the first
    ``POST /v1/jobs`` (when ``lose``) only ``keep`` bytes reach the client before its connection
    is closed (``reset``: with a TCP reset); with ``cut_when``, the client's connection is closed
    once that is set, without waiting for the answer; with ``lose_all``, so for every
    ``POST /v1/jobs``. ``keys``: the Idempotency-Key of every POST, ``statuses``: the status of
    every answer forwarded whole."""

    def __init__(
        self,
        upstream: str,
        lose: bool = True,
        keep: int = 0,
        reset: bool = False,
        cut_when: threading.Event | None = None,
        lose_all: bool = False,
    ) -> None:
        self.upstream = ("127.0.0.1", int(upstream.rsplit(":", 1)[1]))
        self.lose, self.keep, self.reset, self.cut_when = lose, keep, reset, cut_when
        self.lose_all = lose_all
        self.keys: list[str] = []
        self.statuses: list[int] = []
        self.lost = threading.Event()  # the first POST was forwarded
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._requests, args=(client,), daemon=True).start()

    def _requests(self, client: socket.socket) -> None:
        """Forwards the client's requests; closes the client's connection (this thread alone,
        so that a reset is sent at once: no recv of another thread holds the socket open)."""
        server = socket.create_connection(self.upstream)
        marked = threading.Event()
        threading.Thread(target=self._answers, args=(server, client, marked), daemon=True).start()
        buffer = bytearray()
        try:
            while (request := _read_request(client, buffer)) is not None:
                if request.startswith(b"POST "):
                    found = re.search(rb"(?im)^idempotency-key: *(\S*)\r$", request)
                    self.keys.append(found.group(1).decode() if found else "")
                lose = self.lose and (self.lose_all or not self.lost.is_set())
                if request.startswith(b"POST /v1/jobs ") and lose:
                    marked.set()
                    self.lost.set()
                server.sendall(request)
                if marked.is_set() and self.cut_when is not None:
                    self.cut_when.wait(HOLD_LIMIT_S)
                    break  # the server's end stays open: its answer is read and dropped
        except OSError:
            pass
        if self.reset and marked.is_set():  # closed with a TCP reset, not FIN
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        if not (marked.is_set() and self.cut_when is not None):
            _shutdown(server, socket.SHUT_RDWR)  # ends _answers

    def _answers(
        self, server: socket.socket, client: socket.socket, marked: threading.Event
    ) -> None:
        """Forwards the server's answers; at the lost one's end, ends :meth:`_requests`."""
        try:
            while data := server.recv(65536):
                if marked.is_set():
                    client.sendall(data[: self.keep])
                    break
                if data.startswith(b"HTTP/1.1 "):
                    self.statuses.append(int(data[9:12]))
                client.sendall(data)
        except OSError:
            pass
        # SHUT_RD sends the client nothing, it wakes _requests' recv, which closes the socket.
        _shutdown(client, socket.SHUT_RD if self.reset else socket.SHUT_RDWR)
        server.close()

    def close(self) -> None:
        self._listener.close()


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(how)


def _read_request(sock: socket.socket, buffer: bytearray) -> bytes | None:
    """The next whole request (head and Content-Length body) from ``sock``; None at its end."""
    while b"\r\n\r\n" not in buffer:
        if not (data := sock.recv(65536)):
            return None
        buffer += data
    head = buffer.index(b"\r\n\r\n") + 4
    length = re.search(rb"(?im)^content-length: *(\d+)\r$", bytes(buffer[:head]))
    total = head + (int(length.group(1)) if length else 0)
    while len(buffer) < total:
        if not (data := sock.recv(65536)):
            return None
        buffer += data
    request = bytes(buffer[:total])
    del buffer[:total]
    return request
