"""The REST front end: the ASGI app of :mod:`serving.protocol.rest.app`, on uvicorn on the loop.

uvicorn runs on the same event loop as the gRPC front end and the batch queues,
so a REST request costs no thread hand-off of its own and joins a batch directly. asyncio's
transports set TCP_NODELAY, so a keep-alive client never waits for its delayed ACK (the 40 ms
stall of the ``http.server`` front end this replaces).

The flags keep their meaning: ``--rest_api_port`` is the port (bound here first, so a port in
use fails the start with exit status 1), ``--rest_api_num_threads`` the threads that run the
calls handed off the loop (0: 4 x CPUs, TF Serving's default), ``--rest_api_timeout_in_ms`` the
deadline of one call and how long an idle keep-alive connection stays open. Three flags of ours
bound request bodies: ``--rest_api_max_body_bytes`` and ``--rest_api_body_timeout_in_ms`` each
one, ``--rest_api_max_body_bytes_in_flight`` all of them at once
(:mod:`serving.protocol.rest.body`). What uvicorn leaves unbounded, the size and time of a
request's headers (``--rest_api_max_header_bytes``, ``--rest_api_header_timeout_in_ms``) and how
long a response may wait for its client to read it (60 s, no flag), is bounded by
:mod:`serving.protocol.rest.guard`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import uvicorn

from serving.dataplane import DataPlane
from serving.event_loop import LoopThread
from serving.protocol.rest.app import RestApi
from serving.protocol.rest.body import (
    DEFAULT_BODY_TIMEOUT_MS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
    BodyLimits,
)
from serving.protocol.rest.guard import (
    DEFAULT_HEADER_TIMEOUT_MS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_WRITE_TIMEOUT_MS,
    protocol,
)
from serving.protocol.rest.predict import RestPredictor

log = logging.getLogger("serving.server")


def _listen(host: str, port: int) -> socket.socket:
    # The protocol must be named: asyncio sets TCP_NODELAY only on accepted sockets whose proto
    # is IPPROTO_TCP, and a socket made with proto 0 passes 0 on to every connection it accepts.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen for HTTP/REST on port {port}: {error}") from error
    sock.setblocking(False)
    return sock


class RestFrontEnd:
    """The HTTP/REST server of one model server process.

    Args:
        data_plane: the model operations the routes translate to.
        loop: the event loop thread uvicorn runs on.
        bind_address: the host the port listens on.
        num_threads: ``--rest_api_num_threads`` (0: 4 x CPUs).
        timeout_ms: ``--rest_api_timeout_in_ms`` (0 or less: none).
        cors: ``--rest_api_enable_cors_support``.
        max_body_bytes: ``--rest_api_max_body_bytes`` (0 or less: no limit).
        body_timeout_ms: ``--rest_api_body_timeout_in_ms`` (0 or less: none).
        max_body_bytes_in_flight: ``--rest_api_max_body_bytes_in_flight`` (0 or less: none).
        max_header_bytes: ``--rest_api_max_header_bytes`` (0 or less: none; h11's 16 KiB).
        header_timeout_ms: ``--rest_api_header_timeout_in_ms`` (0 or less: none).
        write_timeout_ms: how long a response may wait for its client to take any of it
            before the connection is closed (0 or less: for ever).
    """

    def __init__(
        self,
        data_plane: DataPlane,
        loop: LoopThread,
        *,
        bind_address: str,
        num_threads: int = 0,
        timeout_ms: int = 0,
        cors: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout_ms: int = DEFAULT_BODY_TIMEOUT_MS,
        max_body_bytes_in_flight: int = DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        header_timeout_ms: int = DEFAULT_HEADER_TIMEOUT_MS,
        write_timeout_ms: int = DEFAULT_WRITE_TIMEOUT_MS,
    ) -> None:
        self.loop = loop
        self.bind_address = bind_address
        threads = num_threads or 4 * (os.cpu_count() or 1)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rest-work")
        timeout_s = timeout_ms / 1000
        timeout = timeout_s if timeout_s > 0 else None
        predictor = RestPredictor(data_plane, self.executor, timeout)
        body_timeout = body_timeout_ms / 1000 if body_timeout_ms > 0 else None
        limits = BodyLimits(max_body_bytes, body_timeout, max_body_bytes_in_flight)
        self.app = RestApi(data_plane, predictor, cors, limits)
        http, h11_limit = protocol(
            self.app.cors, max_header_bytes, header_timeout_ms, write_timeout_ms
        )
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            http=http,
            h11_max_incomplete_event_size=h11_limit,
            ws="none",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=max(1, round(timeout_s)) if timeout else 3600,
            timeout_graceful_shutdown=2,
        )
        self._uvicorn = uvicorn.Server(config)
        self._serving: asyncio.Future | None = None

    def start(self, port: int) -> None:
        sock = _listen(self.bind_address, port)
        self._serving = asyncio.run_coroutine_threadsafe(
            self._uvicorn.serve(sockets=[sock]), self.loop.loop
        )
        self.loop.run(self._started(), timeout=30)

    async def _started(self) -> None:
        while not self._uvicorn.started:
            if self._serving is not None and self._serving.done():
                self._serving.result()  # its error, if it failed to start
                raise OSError("the HTTP/REST server stopped while starting")
            await asyncio.sleep(0.005)  # uvicorn sets the flag; it has no event to wait on

    def stop(self, grace: float = 2.0) -> None:
        self._uvicorn.should_exit = True
        if self._serving is not None:
            try:
                self._serving.result(timeout=grace + 1)
            except Exception as error:  # a stuck request must not keep the process alive
                log.warning("HTTP/REST server did not stop cleanly: %s", error)
        self.executor.shutdown(wait=False, cancel_futures=True)
