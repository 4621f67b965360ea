"""A TCP proxy in front of Redis that fails, or pauses, the requests a test aims at, for the
tests of what a client of Redis makes of a flaky network or of what others do meanwhile.

Each :class:`Rule` names a marker (a command name, a script's SHA-1, a word of its arguments)
and what becomes of a request whose data carries it (the first rule that matches and has times
left acts; every other request, and every request on other connections, goes through):

- ``lose_reply``: it reaches Redis, which runs it, and its connection is closed as the reply
  comes back (the client never hears that it ran);
- ``drop``: its connection is closed before it reaches Redis (it never runs);
- ``cut``: it is dropped, every connection through the proxy is closed and new ones are closed
  at once until the proxy is closed (Redis lost at that very command): from then on no request
  or reply passes, also on a connection the cut has yet to close (a client that saw another
  one close may already be sending on it);
- ``hold_request``: it waits before it goes on to Redis, ``hold_reply``: it goes on and its
  reply waits (the client waits meanwhile): until the rule's ``then()`` returned, or without
  one until :meth:`Rule.release` (what others do between two of the client's commands).

One held until :meth:`Rule.release` goes on by itself after :data:`HOLD_LIMIT_S`, so that a
test that failed cannot hang. Closing the proxy releases what is held and closes every
connection."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

HOLD_LIMIT_S = 60.0  # a held request or reply goes on by itself after this long

Action = Literal["lose_reply", "drop", "cut", "hold_request", "hold_reply"]


@dataclass(eq=False)
class Rule:
    marker: bytes
    action: Action
    times: int | None = None  # how many requests it acts on in all; None: every one
    then: Callable[[], None] | None = None  # hold_*: what runs while held (else: release())
    fired: int = 0  # the requests it acted on
    seen: int = 0  # the requests that carried its marker, acted on or not
    came: threading.Event = field(default_factory=threading.Event)  # it acted once
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """Let what this rule holds go on (now and from now on)."""
        self.released.set()

    def hold(self) -> None:
        if self.then is not None:
            self.then()
        else:
            self.released.wait(HOLD_LIMIT_S)


@dataclass(eq=False)
class _Link:
    """One client's connection and the proxy's own to Redis for it."""

    client: socket.socket
    server: socket.socket
    reply: Rule | None = None  # the rule of the request whose reply is on its way, if any


class RedisFaultProxy:
    def __init__(self, upstream: tuple[str, int], *rules: Rule) -> None:
        self.upstream, self.rules = upstream, list(rules)
        self.cut_off = False  # a ``cut`` acted: Redis is "gone"
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def fired(self) -> int:
        """The requests its rules acted on, all together."""
        return sum(rule.fired for rule in self.rules)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener was closed
            while True:
                client, _ = self._listener.accept()
                self._open(client)

    def _open(self, client: socket.socket) -> None:
        if self.cut_off:  # Redis is "gone": refused
            _close(client)
            return
        try:
            link = _Link(client, socket.create_connection(self.upstream))
        except OSError:
            _close(client)  # Redis itself is not there
            return
        with self._lock:
            refused = self.cut_off  # cut meanwhile
            if not refused:
                self._links.add(link)
        if refused:
            _close(link.client, link.server)
            return
        threading.Thread(target=self._requests, args=(link,), daemon=True).start()
        threading.Thread(target=self._replies, args=(link,), daemon=True).start()

    def _requests(self, link: _Link) -> None:
        try:
            while data := link.client.recv(65536):
                if self.cut_off:  # a cut acted, and has yet to close this connection: nothing
                    break  # passes from then on (the client may react to another one's close)
                if (rule := self._match(data)) is not None:
                    if rule.action == "cut":
                        self._cut()
                        return
                    if rule.action == "drop":
                        break
                    if rule.action == "hold_request":
                        rule.hold()
                    else:  # lose_reply, hold_reply: set before the request goes, so that
                        link.reply = rule  # its reply cannot pass first
                link.server.sendall(data)
        except OSError:
            pass
        self._close(link)

    def _replies(self, link: _Link) -> None:
        """Redis's replies to the client; the reply of a request to lose closes the connection
        instead (its arrival: Redis ran the request), that of one to hold waits."""
        try:
            while data := link.server.recv(65536):
                if self.cut_off:
                    break
                if (rule := link.reply) is not None:
                    if rule.action == "lose_reply":
                        break
                    link.reply = None
                    rule.hold()
                link.client.sendall(data)
        except OSError:
            pass
        self._close(link)

    def _match(self, data: bytes) -> Rule | None:
        """The rule that acts on a request of ``data``, its counts updated."""
        acting = None
        with self._lock:
            for rule in self.rules:
                if rule.marker not in data:
                    continue
                rule.seen += 1
                if acting is None and (rule.times is None or rule.fired < rule.times):
                    rule.fired += 1
                    rule.came.set()
                    acting = rule
        return acting

    def _cut(self, off: bool = True) -> None:
        """Close every connection; with ``off``, refuse new ones from now on."""
        with self._lock:
            self.cut_off |= off
            links, self._links = self._links, set()
        for link in links:
            _close(link.client, link.server)

    def _close(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
        _close(link.client, link.server)

    def __enter__(self) -> RedisFaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for rule in self.rules:
            rule.release()
        self._listener.close()
        self._cut(off=False)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
