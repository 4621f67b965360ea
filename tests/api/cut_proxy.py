"""A TCP proxy in front of Redis that a gateway talks through, which fails or pauses the one
command a test aims at: the first request that carries ``marker`` (a command name, a script's
SHA-1) is dropped before it reaches Redis, every connection through the proxy is closed and new
ones are closed at once until the proxy is closed (Redis lost at that very command, as the
gateway sees it: its store and its broker alike); or, with ``hold``, that request waits until
:meth:`CutProxy.release` before it goes on (what others do between two of the gateway's
commands)."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

HOLD_LIMIT_S = 60.0  # a held request goes on by itself after this long (a test that failed)


class CutProxy:
    def __init__(self, upstream: tuple[str, int], marker: bytes, hold: bool = False) -> None:
        self.upstream, self.marker, self.hold = upstream, marker, hold
        self.fired = threading.Event()  # the marked request came (and was dropped, or is held)
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def release(self) -> None:
        """Let the held request go on to Redis."""
        self._released.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self.fired.is_set() and not self.hold:  # Redis is "gone": refused
                _close(client)
                continue
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, request: bool) -> None:
        try:
            while data := source.recv(65536):
                if request and self.marker in data and self._fire():
                    if not self.hold:
                        self._cut()
                        return
                    self._released.wait(HOLD_LIMIT_S)
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _close(sock)

    def _fire(self) -> bool:
        """True for the first marked request only."""
        with self._lock:
            first = not self.fired.is_set()
            self.fired.set()
            return first

    def _cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._released.set()
        self._listener.close()
        self._cut()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
