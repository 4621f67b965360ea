"""A TCP proxy in front of Redis that loses the reply of a command after Redis ran it: the
"applied, reply lost" outcome of a Redis restart, a failover or a socket timeout right after a
command, which makes the job store (and redis-py) retry a command that already took effect. Or
that holds the reply while the test acts: what other clients may do between two commands of
one."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from types import TracebackType

from redis.commands.core import Script

from fdl.jobs import JobStore
from tests.training.stores import store_on_db


class LostReplyProxy:
    """Forwards everything to ``upstream``, except that for the first ``drops`` requests that
    contain ``marker`` it forwards the request, waits for Redis's reply, swallows it and closes
    the client's connection; with ``hold``, it calls ``hold()`` instead and then forwards the
    reply (the client waits for it meanwhile)."""

    def __init__(
        self,
        upstream: tuple[str, int],
        marker: bytes = b"EVALSHA",
        drops: int = 1,
        hold: Callable[[], None] | None = None,
    ):
        self.upstream, self.marker, self.drops, self.hold = upstream, marker, drops, hold
        self.dropped = 0
        self._lock = threading.Lock()
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
            losing = threading.Event()
            threading.Thread(
                target=self._requests, args=(client, server, losing), daemon=True
            ).start()
            threading.Thread(
                target=self._replies, args=(client, server, losing), daemon=True
            ).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, losing: threading.Event
    ) -> None:
        try:
            while data := client.recv(65536):
                if self.marker in data:
                    with self._lock:
                        if self.dropped < self.drops:
                            self.dropped += 1
                            losing.set()
                server.sendall(data)
                if losing.is_set() and self.hold is None:
                    return
        except OSError:
            pass

    def _replies(
        self, client: socket.socket, server: socket.socket, losing: threading.Event
    ) -> None:
        try:
            while data := server.recv(65536):
                if losing.is_set():  # Redis ran the command
                    if self.hold is None:  # lose its reply and the connection
                        break
                    losing.clear()
                    self.hold()
                client.sendall(data)
        except OSError:
            pass
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> LostReplyProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._listener.close()


@contextlib.contextmanager
def loaded_store(redis_url: str, db: int) -> Iterator[JobStore]:
    """A job store on database ``db`` of the Redis at ``redis_url``, emptied, its scripts loaded
    as on any Redis that ran them before: a lost reply is then one of a script that ran."""
    for direct in store_on_db(redis_url, db):
        for script in vars(direct).values():
            if isinstance(script, Script):
                direct.redis.script_load(script.script)
        yield direct
