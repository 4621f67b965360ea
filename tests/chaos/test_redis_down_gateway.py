"""Redis stops under a running gateway: every job route answers 503 + Retry-After with a JSON
body (never a 500), the rate limiter fails open, and the gateway recovers when Redis is back."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx

from api.errors import STORE_RETRY_AFTER_S
from fdl.jobs import JobStore
from harness.gateway import ADMIN_KEY, FILE_ADMIN_KEY, Gateway, bearer
from harness.procs import wait_for
from harness.redis import RestartableRedis
from harness.sse import StreamReader


def job_requests(job_id: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/jobs?status=running", None),
        ("GET", f"/v1/jobs/{job_id}", None),
        ("GET", f"/v1/jobs/{job_id}/events", None),
        ("DELETE", f"/v1/jobs/{job_id}", None),
        ("POST", "/v1/jobs", {"model": "mnist_logreg", "epochs": 1}),
    ]


def test_job_routes_answer_503_while_redis_is_down(
    restartable_redis: RestartableRedis,
    lone_gateway: Callable[..., AbstractContextManager[Gateway]],
) -> None:
    # No model server: job routes do not need one.
    with lone_gateway(
        "gateway-redis-down",
        restartable_redis.url,
        FDL_RATE_LIMIT_PER_MINUTE="1",
        FDL_RATE_LIMIT_BURST="2",
    ) as gateway:
        store = JobStore.from_url(restartable_redis.url)
        try:
            job_id = store.create({"model": "mnist_logreg", "epochs": 1})["id"]
            with httpx.Client(base_url=gateway.url, timeout=30) as client:
                # Redis up: the limiter works (the third request of this key within a minute is
                # 429).
                statuses = [
                    client.get(f"/v1/jobs/{job_id}", headers=bearer(ADMIN_KEY)).status_code
                    for _ in range(3)
                ]
                assert statuses == [200, 200, 429]

                following = StreamReader(
                    f"{gateway.url}/v1/jobs/{job_id}/events", bearer(FILE_ADMIN_KEY)
                )
                following.start()
                wait_for(
                    lambda: following.lines,
                    10,
                    "the stream's first event",
                    check=following.ensure_open,
                )

                restartable_redis.stop()
                # A stream open when Redis went away ends cleanly and tells the client to come back.
                following.join(30)
                assert not following.is_alive() and following.error is None, following.error
                assert "event: unavailable" in following.lines, following.lines
                assert f"retry: {STORE_RETRY_AFTER_S * 1000}" in following.lines
                for method, path, body in job_requests(job_id):
                    response = client.request(method, path, json=body, headers=bearer(ADMIN_KEY))
                    # Not 429: the limiter fails open without Redis; not 500: the store is down.
                    assert response.status_code == 503, (method, path, response.text)
                    assert int(response.headers["Retry-After"]) >= 1, (method, path)
                    error = response.json()["error"]
                    assert error["code"] == "job_store_unavailable", (method, path, error)
                    assert "Redis" in error["message"]

                restartable_redis.start()
                # Another key: this one's limit is spent.
                back = client.get(f"/v1/jobs/{job_id}", headers=bearer(FILE_ADMIN_KEY))
                assert back.status_code == 200, back.text
                assert back.json()["status"] == "queued"
        finally:
            store.redis.close()
    log = gateway.process.log_path.read_text(errors="replace")
    assert "unhandled error" not in log
