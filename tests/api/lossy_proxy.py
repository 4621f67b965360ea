"""A TCP proxy in front of Redis that loses what a flaky network loses, for the requests a test
aims at: each rule names a marker (a command name, a script's SHA-1, a word of its arguments)
and what becomes of a request that carries it: ``lose_reply``, it reaches Redis, which runs it,
and its connection is closed as the reply comes back (the client never hears that it ran);
``drop``, its connection is closed before it reaches Redis (it never runs). Every other request,
and every request on other connections, goes through. Unlike :mod:`tests.api.cut_proxy`, Redis
stays reachable: the next command on a new connection gets through."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

Action = Literal["lose_reply", "drop"]


@dataclass
class Rule:
    marker: bytes
    action: Action
    times: int | None = None  # how many requests it takes; None: every one


class LossyProxy:
    def __init__(self, upstream: tuple[str, int], *rules: Rule) -> None:
        self.upstream, self.rules = upstream, list(rules)
        self.fired: Counter[bytes] = Counter()  # requests each rule's marker took
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets |= {client, server}
            losing = threading.Event()  # the reply now on its way is to be lost
            args = (client, server, losing)
            threading.Thread(target=self._requests, args=args, daemon=True).start()
            threading.Thread(target=self._replies, args=args, daemon=True).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, losing: threading.Event
    ) -> None:
        try:
            while data := client.recv(65536):
                action = self._rule(data)
                if action == "drop":
                    break
                if action == "lose_reply":
                    losing.set()  # before the request goes: its reply cannot pass first
                server.sendall(data)
        except OSError:
            pass
        _close(client, server)

    def _replies(
        self, client: socket.socket, server: socket.socket, losing: threading.Event
    ) -> None:
        """Redis's replies to the client; the reply of a request to lose closes the connection
        instead (its arrival: Redis ran the request)."""
        try:
            while (data := server.recv(65536)) and not losing.is_set():
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)

    def _rule(self, data: bytes) -> Action | None:
        with self._lock:
            for rule in self.rules:
                if rule.marker in data and (rule.times is None or rule.times > 0):
                    if rule.times is not None:
                        rule.times -= 1
                    self.fired[rule.marker] += 1
                    return rule.action
        return None

    def __enter__(self) -> LossyProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        _close(*sockets)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
