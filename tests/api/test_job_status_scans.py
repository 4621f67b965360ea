"""The status of every job record is read by one scan at a time per gateway, its result shared
(api/jobs_snapshot.py): concurrent ``/metrics`` after the cache expired, and concurrent listings
by status, cause one scan, not one each; a listing by status returns only records in that
status while statuses change. Real gateways on a private Redis, whose ``INFO commandstats``
counts the scans: each reads every record's status with one HMGET. The scan's steps:
test_job_scan_steps.py; a listing's wait for a scan: test_job_status_snapshot_waits.py."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.jobs_snapshot import LIST_MAX_AGE_S
from fdl.job_records import JOB_KEY
from harness.gateway import Gateway
from harness.procs import wait_for
from harness.redis import redis_running
from tests.api.bulk_records import QUEUED, RUNNING, create_records, status_reads

RECORDS = 3000
CONCURRENT = 40
METRICS_CACHE_S = 5.0  # api/metrics.py:JobsCollector's default


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[str]:
    """A Redis of this module's own: its command counts are this module's only."""
    with redis_running(tmp_path_factory.mktemp("redis-scans"), logs_dir, "redis-scans") as url:
        yield url


@pytest.fixture
def client(own_redis: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(own_redis, decode_responses=True)
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture
def gateway(
    own_redis: str,
    client: redis.Redis,
    lone_gateway: Callable[..., AbstractContextManager[Gateway]],
) -> Iterator[Gateway]:
    """A gateway started after the records were emptied: no snapshot of its own yet."""
    with lone_gateway("gateway-scans", own_redis) as running:
        yield running


@dataclass
class Answer:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def at_once(gateway: Gateway, path: str, headers: dict[str, str]) -> list[Answer]:
    """CONCURRENT GETs of ``path``, each from a thread on a connection of its own already open,
    released together by a barrier (the gateway's scans take milliseconds here: the requests
    must meet in one)."""
    host, port = gateway.url.removeprefix("http://").split(":")
    barrier = threading.Barrier(CONCURRENT)
    answers: list[Answer | BaseException] = [RuntimeError("not sent")] * CONCURRENT

    def get(n: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            connection.request("GET", "/healthz")
            assert connection.getresponse().read()
            barrier.wait(30)
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            answers[n] = Answer(response.status, response.read().decode())
        except BaseException as error:  # reported below, in the test's thread
            barrier.abort()
            answers[n] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=get, args=(n,)) for n in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return [a for a in answers if isinstance(a, Answer)]


def queued_gauge(text: str) -> float:
    found = re.search(r'^fdl_jobs\{state="queued"\} (\S+)$', text, re.MULTILINE)
    assert found, text[-2000:]
    return float(found.group(1))


def test_concurrent_scrapes_after_the_cache_expired_scan_once(
    client: redis.Redis, gateway: Gateway
) -> None:
    create_records(client, RECORDS, lambda n: 1.7e9 + n)
    assert httpx.get(f"{gateway.url}/metrics").status_code == 200
    # Waiting out the metrics' cache (a time, not an event).
    time.sleep(METRICS_CACHE_S + 0.2)
    client.config_resetstat()
    scrapes = at_once(gateway, "/metrics", {})
    assert [r.status_code for r in scrapes] == [200] * CONCURRENT
    # Each took the previous counts at once; the first started one scan, in the background.
    assert {queued_gauge(r.text) for r in scrapes} == {RECORDS}
    wait_for(lambda: status_reads(client) >= RECORDS, 30, "the background scan", interval=0.05)
    assert status_reads(client) == RECORDS  # one scan, not one per scrape


def test_the_first_scrapes_of_a_gateway_wait_for_one_scan(
    client: redis.Redis, gateway: Gateway
) -> None:
    """Starting scans nothing (the registry describes fdl_jobs without collecting it), so the
    first scrapes count the records there are then; with no counts yet, they wait for one scan."""
    create_records(client, RECORDS, lambda n: 1.7e9 + n)
    client.config_resetstat()
    scrapes = at_once(gateway, "/metrics", {})
    assert [r.status_code for r in scrapes] == [200] * CONCURRENT
    assert {queued_gauge(r.text) for r in scrapes} == {RECORDS}
    assert status_reads(client) == RECORDS  # one scan's reads: the scrapes shared it
    # A scrape may collect the scan counter before its fdl_jobs collector waited for the scan
    # (seen under load: 0), but none counts a second scan.
    scans = [
        re.search(r"^fdl_gateway_job_status_scans_total (\S+)$", r.text, re.M) for r in scrapes
    ]
    assert all(scans) and {float(m.group(1)) for m in scans if m} <= {0.0, 1.0}
    assert any(m and float(m.group(1)) == 1 for m in scans)


def test_concurrent_listings_by_status_share_one_scan(
    client: redis.Redis, gateway: Gateway
) -> None:
    ids = create_records(client, RECORDS, lambda n: 1.7e9 + n)
    client.config_resetstat()
    responses = at_once(gateway, "/v1/jobs?status=queued&limit=1", gateway.admin())
    assert [r.status_code for r in responses] == [200] * CONCURRENT
    for response in responses:
        body = response.json()
        assert body["total"] == RECORDS and [j["id"] for j in body["jobs"]] == ids[:1]
    assert status_reads(client) == RECORDS
    # Within the listings' age the scrapes share their snapshot: no scan of their own.
    assert queued_gauge(httpx.get(f"{gateway.url}/metrics").text) == RECORDS
    assert status_reads(client) == RECORDS


def test_a_listing_by_status_returns_only_jobs_in_it_while_statuses_change(
    client: redis.Redis, gateway: Gateway
) -> None:
    ids = create_records(client, RECORDS, lambda n: 1.7e9 + n)
    started = ids[::3]  # a third start running while the listings go on
    done = threading.Event()
    seen: list[dict] = []
    failed: list[str] = []

    def list_queued(offset: int) -> None:
        with httpx.Client(base_url=gateway.url, headers=gateway.admin(), timeout=30) as http:
            while not done.is_set():
                params = {"status": QUEUED, "limit": 50, "offset": offset}
                response = http.get("/v1/jobs", params=params)
                if response.status_code != 200:
                    failed.append(response.text)
                    return
                seen.extend(response.json()["jobs"])

    def more_listed(listed: int) -> Callable[[], bool]:
        return lambda: len(seen) > listed or bool(failed)

    listers = [threading.Thread(target=list_queued, args=(n * 500,)) for n in range(4)]
    for thread in listers:
        thread.start()
    try:
        for batch in range(0, len(started), 50):
            # Each batch of changes after more pages were listed: changes and listings interleave.
            wait_for(more_listed(len(seen)), 30, "more pages listed", interval=0.005)
            for job_id in started[batch : batch + 50]:
                client.hset(JOB_KEY.format(job_id), "status", json.dumps(RUNNING))
    finally:
        done.set()
        for thread in listers:
            thread.join(30)
    assert not failed
    assert seen and all(job["status"] == QUEUED for job in seen)
    # Membership follows within the listings' age: poll until the count is the new one.
    expected = [i for i in ids if i not in set(started)]

    def listed_queued() -> dict[str, Any] | None:
        params: dict[str, str | int] = {"status": QUEUED, "limit": 500}
        body = httpx.get(f"{gateway.url}/v1/jobs", params=params, headers=gateway.admin()).json()
        return body if body["total"] == len(expected) else None

    body = wait_for(listed_queued, LIST_MAX_AGE_S + 10, f"{len(expected)} queued", interval=0.05)
    assert [j["id"] for j in body["jobs"]] == expected[:500]  # newest first


def test_a_scan_slower_than_the_listings_age_serves_the_listings_after_it(
    client: redis.Redis,
    own_redis: str,
    lone_gateway: Callable[..., AbstractContextManager[Gateway]],
) -> None:
    """A snapshot serves listings for LIST_MAX_AGE_S after its scan ended, not after it began: a
    scan longer than that (Redis paused here; 150 000 records do it) still serves the next."""
    create_records(client, RECORDS, lambda n: 1.7e9 + n)
    with lone_gateway("gateway-slow-scan", own_redis, FDL_JOB_STORE_TIMEOUT_S="10") as gateway:
        params, admin = {"status": QUEUED, "limit": 1}, gateway.admin()
        client.client_pause(int((LIST_MAX_AGE_S + 1) * 1000), all=True)
        first = httpx.get(f"{gateway.url}/v1/jobs", params=params, headers=admin, timeout=30)
        assert first.status_code == 200 and first.json()["total"] == RECORDS
        client.config_resetstat()
        after = httpx.get(f"{gateway.url}/v1/jobs", params=params, headers=admin, timeout=30)
        assert after.status_code == 200 and after.json()["total"] == RECORDS
        assert status_reads(client) == 0  # no scan of its own


def test_a_scrape_with_counts_never_waits_for_a_scan(client: redis.Redis, gateway: Gateway) -> None:
    """Counts older than the metrics' cache are served at once while a scan refreshes them in
    the background; a Redis that answers nothing (paused longer than the gateway's 2 s store
    timeout) neither delays the scrape nor takes fdl_jobs out of it."""
    create_records(client, RECORDS, lambda n: 1.7e9 + n)
    assert queued_gauge(httpx.get(f"{gateway.url}/metrics").text) == RECORDS
    time.sleep(METRICS_CACHE_S + 0.2)  # waiting out the metrics' cache (a time, not an event)
    client.client_pause(3000, all=True)
    started = time.monotonic()
    scrape = httpx.get(f"{gateway.url}/metrics", timeout=30)
    assert time.monotonic() - started < 1.5
    assert queued_gauge(scrape.text) == RECORDS
