"""The probe listener (FDL_PROBE_PORT): ``/healthz``, ``/readyz`` and ``/metrics`` on a port of
their own, for the kubelet, Prometheus and container health checks.

Anyone who reaches the gateway's port can hold all of its FDL_MAX_CONNECTIONS with idle
connections; probes sent there would then fail and the kubelet restart every gateway pod. The
probe listener has a small connection cap of its own and short timeouts (``PROBE_LIMITS``), and
answers through the gateway's own app (the same handlers, middleware and error bodies) in the same
process and event loop, so a hung loop still fails liveness. Every other path or method gets the
gateway's JSON 404 or 405, raised inside the app's middleware (``x-request-id``, access line and
metrics as on the public port). Its HTTP limits count in ``fdl_gateway_http_guard_total`` with
``listener="probe"`` and name the probe port in their warnings.

:class:`GatewayServer` is uvicorn's server for the gateway's port that also runs the listener: it
starts it once the app's lifespan has started (the lifespan is the main server's alone) and stops
it first when shutting down. Only the main server catches SIGTERM and SIGINT (uvicorn's
``serve``); the listener's server never calls ``serve``, so it installs no signal handlers of its
own, which would replace the main server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import socket
import sys
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE

from api.errors import error_body
from api.http_guard import GuardedHttpToolsProtocol
from api.middleware import GatewayMiddleware
from fdl.http_guard import HttpLimits

PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
ALLOW = "GET, HEAD"
# Probe clients send one small GET at a time, at once: a few dozen connections and seconds are
# plenty, and a client that holds more or sends slower is cut off (the gateway's port keeps its
# own limits, FDL_MAX_CONNECTIONS and the rest).
PROBE_LIMITS = HttpLimits(
    max_header_bytes=8 * 1024,
    header_timeout_s=2.0,
    body_timeout_s=2.0,
    write_timeout_s=10.0,
    max_connections=32,
)
# Prometheus keeps its connection between scrapes; the probe port closes it after this long idle
# (not counted as a guard event: every scrape would add one) and Prometheus opens a new one.
KEEPALIVE_S = 5
# How long a probe request in flight at shutdown may finish (/readyz waits at most about 2 s for
# its checks); the main server's graceful shutdown follows.
SHUTDOWN_S = 3

log = logging.getLogger("fdl.gateway")


class ProbeGate:
    """The probe paths, GET and HEAD, for the app inside; a JSON 404 or 405 for the rest. It runs
    just inside the gateway's middleware (:func:`probe_app`), which gives the refusals their
    ``x-request-id``, access line and metrics, and before the rest (the classify fast path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] not in PATHS:
            paths = ", ".join(sorted(PATHS))
            response = JSONResponse(
                error_body("not_found", f"the probe port serves only {paths}"), status_code=404
            )
        elif scope["method"] not in ("GET", "HEAD"):
            response = JSONResponse(
                error_body("method_not_allowed", "Method Not Allowed"),
                status_code=405,
                headers={"Allow": ALLOW},
            )
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def probe_app(loaded: ASGIApp) -> ASGIApp:
    """The gateway's app as the probe port serves it: a shallow copy that shares its routes,
    state, settings and error handlers, with :class:`ProbeGate` added just inside
    GatewayMiddleware (its own middleware stack is built at its first request). uvicorn's
    wrappers (the proxy-headers middleware) are left out: no proxy stands before the probe port."""
    app = loaded
    while not isinstance(app, Starlette):
        app = getattr(app, "app")  # noqa: B009 (uvicorn's wrappers are typed as ASGI apps)
    view = copy.copy(app)
    outer = [
        m
        for m in app.user_middleware
        if isinstance(m.cls, type) and issubclass(m.cls, GatewayMiddleware)
    ][:1]
    view.user_middleware = [
        *outer,
        Middleware(ProbeGate),
        *(m for m in app.user_middleware if m not in outer),
    ]
    view.middleware_stack = None
    return view


def probe_protocol(protocol: type[GuardedHttpToolsProtocol]) -> type[GuardedHttpToolsProtocol]:
    """``protocol`` (the gateway's guarded httptools protocol with PROBE_LIMITS) for the probe
    port: its guard events count with ``listener="probe"``, its warnings name the probe port, and
    an idle keep-alive connection's close (each Prometheus scrape's) is not counted."""

    def count(self: GuardedHttpToolsProtocol, reason: str) -> None:
        if reason != "keepalive_timeout":
            protocol.count(self, reason)

    members = {
        "listener": "probe",
        "server_name": "the gateway's probe port",
        "where": " on the probe port (FDL_PROBE_PORT)",
        "count": count,
    }
    return type("ProbeHttpProtocol", (protocol,), members)


def bind(host: str, port: int) -> socket.socket:
    """The probe port, bound and listening before anything starts: a port in use stops the
    gateway at once with a clear message, before its lifespan runs, and no other socket can take
    the port meanwhile (SO_REUSEADDR lets another one bind it until one of them listens).
    Connections wait in the backlog until :meth:`ProbeListener.start`. Exits with status 1 if it
    cannot be bound."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        sys.exit(f"fdl-gateway: FDL_PROBE_PORT {port} on {host}: {error}")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        sys.exit(f"fdl-gateway: cannot listen on FDL_PROBE_PORT {port} ({host}): {reason}")
    return sock


class ProbeListener:
    """A uvicorn server without lifespan or signal handlers on the bound probe socket."""

    def __init__(self, sock: socket.socket, protocol: type[GuardedHttpToolsProtocol]) -> None:
        self.sock = sock
        # Read now: uvloop takes the socket's descriptor over in create_server.
        self.host, self.port = sock.getsockname()[:2]
        self.protocol = probe_protocol(protocol)
        self.server: uvicorn.Server | None = None
        self._ticking: asyncio.Task[None] | None = None

    async def start(self, app: ASGIApp) -> None:
        """Serve ``app`` (the gateway's, as uvicorn loaded it) on the probe socket. Raises OSError
        when the socket cannot serve: uvloop may report a failed listen with no socket instead
        of an error."""
        config = uvicorn.Config(
            probe_app(app),
            http=self.protocol,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,  # the app's middleware writes the access lines
            proxy_headers=False,
            timeout_keep_alive=KEEPALIVE_S,
            timeout_graceful_shutdown=SHUTDOWN_S,
        )
        config.load()
        server = uvicorn.Server(config)
        # What Server.serve would set up: uvicorn's no-op lifespan, since the app's lifespan
        # already ran for the main server and must not run twice.
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self.sock])
        listening = [s for srv in server.servers for s in srv.sockets or () if s is not None]
        if not listening:
            for srv in server.servers:
                srv.close()
            raise OSError("the socket does not listen")
        self.server = server
        # uvicorn's tick: the Date header of each answer, and the exit flag stop() sets.
        self._ticking = asyncio.create_task(server.main_loop())
        paths = ", ".join(sorted(PATHS))
        log.info("probe listener on http://%s:%d (%s only)", self.host, self.port, paths)

    async def stop(self) -> None:
        """Close the listener and its connections, after its requests in flight (SHUTDOWN_S)."""
        if self.server is None:
            self.sock.close()
            return
        self.server.should_exit = True
        if self._ticking is not None:
            await self._ticking
        await self.server.shutdown(sockets=[self.sock])
        self.server = None


class GatewayServer(uvicorn.Server):
    """uvicorn's server for the gateway's port, with the probe listener (if any) beside it."""

    def __init__(self, config: uvicorn.Config, probe: ProbeListener | None = None) -> None:
        super().__init__(config)
        self.probe = probe

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.probe is not None:
            try:
                await self.probe.start(self.config.loaded_app)
            except OSError as error:
                # As uvicorn does when its own port fails: the lifespan shut down, then exit 1.
                for server in self.servers:
                    server.close()
                await self.lifespan.shutdown()
                reason = error.strerror or str(error)
                sys.exit(
                    f"fdl-gateway: cannot listen on FDL_PROBE_PORT {self.probe.port} "
                    f"({self.probe.host}): {reason}"
                )

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.force_exit and self.probe is not None and self.probe.server is not None:
            self.probe.server.force_exit = True  # a second Ctrl+C: no waiting there either

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # First, so no probe request runs into the app's lifespan shutdown (closed clients).
        if self.probe is not None:
            await self.probe.stop()
        await super().shutdown(sockets)


def run(config: uvicorn.Config, probe: ProbeListener | None) -> None:
    """What ``uvicorn.run`` does for one process, with the probe listener: a SIGINT ends with
    status 0 and a SIGTERM re-raised after the graceful shutdown (uvicorn's own behaviour)."""
    config.load_app()  # an import error exits before the server starts, as in uvicorn.run
    server = GatewayServer(config, probe)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
