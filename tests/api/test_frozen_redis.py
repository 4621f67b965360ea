"""A frozen Redis under a gateway (SIGSTOP: a hung host or a network black hole, where a dead
process would refuse connections at once): classification with the rate limit on answers 200
after at most the limiter's short deadline and then without waiting (its back-off), the outage is
logged once, ``/readyz`` and the job routes answer within their own short deadlines, and once Redis
is resumed the limiter refuses again and the gateway is ready."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from harness.gateway import Gateway, classify
from harness.procs import wait_for
from harness.prometheus import scrape, total
from harness.redis import RestartableRedis

CLASSIFY = "/v1/models/digits:classify"
# Redis's socket timeout in the gateway is redis-py's 5 s; the limiter's back-off (2 s by
# default) is shortened here so that the test waits less for the limit's return.
BACKOFF_S = 1.0
# Well under the 5 s socket timeout; room for a loaded CI machine above the limiter's 0.5 s
# deadline and /readyz's 1 s.
FAST_S = 2.5
FAILED_CALLS = "fdl_gateway_upstream_errors_total"
OUTAGE_LOGGED = "rate limit check failed"

Gateways = Callable[..., AbstractContextManager[Gateway]]


@pytest.fixture
def redis_server(tmp_path: Path, logs_dir: Path) -> Iterator[RestartableRedis]:
    """A private Redis for the test to freeze (never the shared one)."""
    server = RestartableRedis(tmp_path / "redis", logs_dir, name="redis-frozen")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.signal(signal.SIGCONT)  # a stopped Redis would not see SIGTERM
        server.stop()


def freeze(server: RestartableRedis) -> None:
    assert server.process is not None
    server.process.signal(signal.SIGSTOP)


def thaw(server: RestartableRedis) -> None:
    assert server.process is not None
    server.process.signal(signal.SIGCONT)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def failed_limit_calls(gateway: Gateway) -> float:
    return total(scrape(f"{gateway.url}/metrics"), FAILED_CALLS, method="ratelimit")


def test_the_rate_limit_skips_a_frozen_redis_and_comes_back(
    redis_server: RestartableRedis, gateways_here: Gateways
) -> None:
    with (
        gateways_here(
            "gateway-frozen-redis-limit",
            redis_url=redis_server.url,
            FDL_RATE_LIMIT_PER_MINUTE="1",
            FDL_RATE_LIMIT_BURST="2",
            FDL_RATE_LIMIT_BACKOFF_S=str(BACKOFF_S),
            FDL_JOB_STORE_TIMEOUT_S="0.5",  # /metrics reads job counts from Redis too
        ) as gateway,
        httpx.Client(timeout=30) as client,
    ):
        url = f"{gateway.url}{CLASSIFY}"

        def send() -> httpx.Response:
            return classify(url, gateway.classifier(), client=client)

        # Redis answers: the third request of the key within a minute is refused.
        assert [send().status_code for _ in range(3)] == [200, 200, 429]
        failed_before = failed_limit_calls(gateway)

        freeze(redis_server)
        start = time.monotonic()
        answers = [timed(send) for _ in range(6)]
        elapsed = time.monotonic() - start
        # Let through (the limit fails open), each well within Redis's 5 s socket timeout.
        assert [r.status_code for r, _ in answers] == [200] * 6, [r.text for r, _ in answers]
        assert max(t for _, t in answers) < FAST_S, [round(t, 3) for _, t in answers]
        # Only the first request waited for Redis; the back-off let the others through at once
        # (one more try per back-off period that passed).
        failed = failed_limit_calls(gateway) - failed_before
        assert 1 <= failed <= 1 + elapsed // BACKOFF_S, (failed, elapsed)
        assert gateway.process.log_path.read_text(errors="replace").count(OUTAGE_LOGGED) == 1

        thaw(redis_server)

        # After the back-off the limiter asks Redis again: the key's budget is still spent.
        def refused_again() -> httpx.Response | None:
            response = send()
            return response if response.status_code == 429 else None

        refused = wait_for(refused_again, BACKOFF_S + 10, "the limit to refuse again")
        assert int(refused.headers["Retry-After"]) >= 1
        log = gateway.process.log_path.read_text(errors="replace")
        assert log.count(OUTAGE_LOGGED) == 1
        assert "Redis answers again" in log


def test_readiness_and_job_routes_answer_soon_with_a_frozen_redis(
    redis_server: RestartableRedis, gateways_here: Gateways
) -> None:
    with (
        gateways_here(
            "gateway-frozen-redis-ready",
            redis_url=redis_server.url,
            FDL_JOB_STORE_TIMEOUT_S="0.5",
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=30) as client,
    ):
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/jobs", headers=gateway.admin()).status_code == 200

        freeze(redis_server)
        ready, took = timed(lambda: client.get("/readyz"))
        assert took < FAST_S, took
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["redis"] == "unreachable: no answer within 1 s", ready.text
        assert ready.json()["checks"]["model_server"] == "ok", ready.text
        # Job routes: the store's short socket timeout (FDL_JOB_STORE_TIMEOUT_S), then 503.
        jobs, took = timed(lambda: client.get("/v1/jobs", headers=gateway.admin()))
        assert took < FAST_S, took
        assert jobs.status_code == 503, jobs.text
        assert jobs.json()["error"]["code"] == "job_store_unavailable"

        thaw(redis_server)
        # The connections cut short were dropped, not reused: the same clients answer again.
        wait_for(lambda: client.get("/readyz").status_code == 200, 10, "ready again")
        assert client.get("/v1/jobs", headers=gateway.admin()).status_code == 200
