"""An HTTP proxy in front of a real gateway that can make a job's event stream go silent.

The UI is loaded through it (so its pages, API calls and streams all go through one origin, as
the page's Content-Security-Policy requires) and every request is passed on unchanged, except
that the next event stream of a job named in ``stall`` passes its first event on, then nothing
more, its connection held open: a connection that died without closing, as after a laptop's
sleep or behind a proxy that dropped it. The next event stream of a job named in ``not_found``
is answered a plain-text 404 by the proxy itself, as an ingress without a route for it would,
never reaching the gateway. Each event stream request is recorded.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",
}
_EVENTS_PATH = re.compile(r"/v1/jobs/([^/?]+)/events")
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_EVENT_ID = re.compile(rb"^id: ?(\S+)", re.M)


@dataclass
class StreamRequest:
    job_id: str
    last_event_id: str | None
    at: float  # time.monotonic()
    forwarded_id: str | None = None  # the last event id passed on before a stall


def first_event_end(buffer: bytes) -> tuple[int, str] | None:
    """Where the first complete event that has an id ends in ``buffer``, and its id."""
    start = 0
    for end in _EVENT_END.finditer(buffer):
        found = _EVENT_ID.search(buffer, start, end.start())
        if found:
            return end.end(), found.group(1).decode()
        start = end.end()
    return None


class StallProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.stall: set[str] = set()
        self.not_found: set[str] = set()
        self.streams: list[StreamRequest] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests_for(self, job_id: str) -> list[StreamRequest]:
        with self.lock:
            return [r for r in self.streams if r.job_id == job_id]

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def _handler(proxy: StallProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: every answer ends with its connection, so a stream needs no chunked framing.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.forward()

        def do_HEAD(self) -> None:
            self.forward()

        def do_POST(self) -> None:
            self.forward()

        def do_DELETE(self) -> None:
            self.forward()

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            stream = None
            matched = _EVENTS_PATH.fullmatch(self.path.split("?", 1)[0])
            if matched:
                stream = StreamRequest(
                    matched[1], self.headers.get("Last-Event-ID"), time.monotonic()
                )
                with proxy.lock:
                    proxy.streams.append(stream)
                    stalls = stream.job_id in proxy.stall
                    proxy.stall.discard(stream.job_id)
                    refused = stream.job_id in proxy.not_found
                    proxy.not_found.discard(stream.job_id)
                if refused:
                    self.answer_not_found()
                    return
            timeout = httpx.Timeout(30, read=None)
            with (
                httpx.Client(base_url=proxy.upstream, timeout=timeout) as client,
                client.stream(self.command, self.path, headers=headers, content=body) as answer,
            ):
                self.send_response(answer.status_code)
                for name, value in answer.headers.multi_items():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                if stream is None or answer.status_code != 200:
                    content = answer.read()
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(content)
                    return
                self.end_headers()
                self.pass_events(answer, stream, stalls)

        def answer_not_found(self) -> None:
            content = b"404 page not found\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def pass_events(self, answer: httpx.Response, stream: StreamRequest, stalls: bool) -> None:
            buffer = b""
            try:
                for chunk in answer.iter_raw():
                    if not stalls:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        continue
                    buffer += chunk
                    found = first_event_end(buffer)
                    if found:
                        self.wfile.write(buffer[: found[0]])
                        self.wfile.flush()
                        stream.forwarded_id = found[1]
                        # Silence, the connection left open, until the test ends.
                        proxy.stopping.wait()
                        return
            except OSError:
                pass  # the browser went away

    return Handler
