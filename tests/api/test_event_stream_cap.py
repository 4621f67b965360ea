"""Open job event streams (`GET /v1/jobs/{id}/events`) are capped per gateway, and read Redis
through a pool of their own.

Each quiet stream holds a Redis connection for its blocking XREAD. They used to share the
gateway's one asyncio client, whose pool (redis-py's default) has 100 connections, with
`/readyz` and both rate limits: 100 open streams made stream #101 answer 200 and then
`event: unavailable` ("Too many connections"), `/readyz` 503 (a load balancer drops the replica)
and the limits fail open. The cap here is 100, that old pool's size: all 100 streams stay open,
#101 gets a JSON 503 `too_many_streams` before anything is streamed, `/readyz` stays 200, a burst
of wrong keys still meets the failed-key limit (429), and closing a stream frees its slot.
A real gateway, model server and Redis; the streams are raw sockets (no thread each)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from urllib.parse import urlsplit

import httpx

from fdl.jobs import JobStore
from harness.gateway import ADMIN_KEY, Gateway, bearer
from harness.procs import wait_for

CAP = 100  # redis-py's default pool size: the gateway's whole shared pool before the fix
WRONG_KEY = bearer("wrong-key-000000000000000000")
FAILURES_ALLOWED = 3  # FDL_AUTH_FAILURES_PER_MINUTE and _BURST
DATABASE = 9  # its own: its failed-key bucket (127.0.0.1) starts full whatever ran before


def _open_stream(host: str, port: int, job_id: str) -> tuple[socket.socket, str]:
    """A stream request on a raw socket; its status line and headers (the stream stays open)."""
    sock = socket.create_connection((host, port), timeout=15)
    sock.sendall(
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head.split(b"\r\n\r\n", 1)[0].decode(errors="replace")


def _status(head: str) -> int:
    return int(head.split(" ", 2)[1]) if head.startswith("HTTP/") else 0


def _quiet(sock: socket.socket, deadline: float) -> bytes:
    """What a stream sent up to its first keep-alive: it has read the job's history and waited
    through one whole XREAD block, so it is in its next one, holding a Redis connection."""
    data = b""
    while b"keep-alive" not in data:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        assert chunk, f"the stream ended: {data!r}"
        data += chunk
    return data


def test_streams_past_the_cap_get_503_and_never_take_the_shared_pool(
    redis_url: str, gateways_here: Callable[..., AbstractContextManager[Gateway]]
) -> None:
    own_db = f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}"
    with ExitStack() as stack:
        gateway = stack.enter_context(
            gateways_here(
                "gateway-stream-cap",
                own_db,
                FDL_MAX_EVENT_STREAMS=str(CAP),
                FDL_AUTH_FAILURES_PER_MINUTE=str(FAILURES_ALLOWED),
                FDL_AUTH_FAILURES_BURST=str(FAILURES_ALLOWED),
            )
        )
        store = JobStore.from_url(own_db)
        stack.callback(store.redis.close)
        job_id = store.create({"model": "mnist_logreg", "epochs": 1})["id"]
        assert store.mark_running(job_id, "test-worker")  # never ends: its streams stay open
        address = urlsplit(gateway.url)
        host, port = address.hostname or "127.0.0.1", address.port or 80
        client = stack.enter_context(httpx.Client(base_url=gateway.url, timeout=10))
        assert client.get("/readyz").status_code == 200

        streams: list[socket.socket] = []

        def close_all() -> None:
            for sock in streams:
                sock.close()

        stack.callback(close_all)
        heads = []
        for _ in range(CAP):
            sock, head = _open_stream(host, port, job_id)
            streams.append(sock)
            heads.append(head)
        assert [_status(h) for h in heads] == [200] * CAP, heads[:3]
        deadline = time.monotonic() + 30
        for sock in streams:
            assert b"unavailable" not in _quiet(sock, deadline)

        # One more: a JSON 503 before any 200, not a stream that ends with `unavailable`.
        with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=bearer(ADMIN_KEY)) as extra:
            assert extra.status_code == 503, extra.status_code
            extra.read()
        assert extra.headers["content-type"].startswith("application/json")
        assert extra.json()["error"]["code"] == "too_many_streams", extra.text
        assert int(extra.headers["Retry-After"]) > 0

        # The shared pool is untouched by the streams: readiness and the failed-key limit hold.
        for _ in range(3):
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["redis"] == "ok"
        answers = [
            client.get("/v1/jobs", params={"limit": 1}, headers=WRONG_KEY).status_code
            for _ in range(FAILURES_ALLOWED + 5)
        ]
        assert answers[:FAILURES_ALLOWED] == [401] * FAILURES_ALLOWED, answers
        assert answers[-1] == 429, answers

        # Every open stream is still alive (none ended with `unavailable`).
        for sock in streams:
            sock.settimeout(0)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                data = b"?"  # nothing new since the head: still open
            assert data and b"unavailable" not in data, data

        # Closing a stream frees its slot: a new stream is served again.
        streams.pop().close()

        def reopened() -> bool:
            sock, head = _open_stream(host, port, job_id)
            if _status(head) == 200:
                streams.append(sock)
                return True
            assert _status(head) == 503, head
            sock.close()
            return False

        wait_for(reopened, 15, "a stream slot freed by a closed stream", interval=0.2)
    log = gateway.process.log_path.read_text(errors="replace")
    assert "Too many connections" not in log and "MaxConnectionsError" not in log
