"""The status of every job record is read by one scan at a time per gateway, its result shared
(api/jobs_snapshot.py): concurrent ``/metrics`` after the cache expired, and concurrent listings
by status, cause one scan, not one each; a listing by status returns only records in that
status while statuses change. The scan reads the index a step at a time by score
(fdl/job_reads.py:_scan), each job once. Real gateways on a private Redis, whose
``INFO commandstats`` counts the scans: each reads every record's status with one HMGET."""

from __future__ import annotations

import asyncio
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

from api.errors import ApiError
from api.jobs_snapshot import (
    LIST_MAX_AGE_S,
    SnapshotBusy,
    StatusSnapshots,
    listed_by_status,
    snapshots_for,
)
from fdl.job_reads import SCAN_CHUNK
from fdl.job_records import INDEX_KEY, JOB_KEY, new_job_id, new_record
from fdl.jobs import JobStatus, JobStore
from fdl.jobspec import JobSpec
from harness.gateway import Gateway
from harness.redis import redis_running

RECORDS = 3000
CONCURRENT = 40
METRICS_CACHE_S = 5.0  # api/metrics.py:JobsCollector's default
SPEC = JobSpec.model_validate({"model": "mnist_logreg", "epochs": 1}).model_dump(mode="json")
QUEUED, RUNNING = JobStatus.QUEUED.value, JobStatus.RUNNING.value


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


def create_records(client: redis.Redis, count: int, scores: Callable[[int], float]) -> list[str]:
    """``count`` queued records and their index entries written directly in one pipeline (as
    ``JobStore.create`` writes them, without its events); their ids, newest first."""
    pipe = client.pipeline(transaction=False)
    ids = []
    for n in range(count):
        job_id, created = new_job_id(), scores(n)
        record = new_record(job_id, SPEC, created, queue="bulk")
        pipe.hset(JOB_KEY.format(job_id), mapping={k: json.dumps(v) for k, v in record.items()})
        pipe.zadd(INDEX_KEY, {job_id: created})
        ids.append(job_id)
    pipe.execute()
    return ids[::-1]


def status_reads(client: redis.Redis) -> int:
    """HMGETs served since the last reset: one per record and scan (nothing else sends any)."""
    return int(client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))


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
    deadline = time.monotonic() + 30
    while status_reads(client) < RECORDS and time.monotonic() < deadline:
        time.sleep(0.05)
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
    assert status_reads(client) == RECORDS
    scans = re.search(r"^fdl_gateway_job_status_scans_total (\S+)$", scrapes[0].text, re.M)
    assert scans and float(scans.group(1)) == 1


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

    listers = [threading.Thread(target=list_queued, args=(n * 500,)) for n in range(4)]
    for thread in listers:
        thread.start()
    try:
        for batch in range(0, len(started), 50):
            # Each batch of changes after more pages were listed: changes and listings interleave.
            listed, deadline = len(seen), time.monotonic() + 30
            while len(seen) == listed and not failed and time.monotonic() < deadline:
                time.sleep(0.005)
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
    deadline = time.monotonic() + LIST_MAX_AGE_S + 10
    while True:
        body = httpx.get(
            f"{gateway.url}/v1/jobs",
            params={"status": QUEUED, "limit": 500},
            headers=gateway.admin(),
        ).json()
        if body["total"] == len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert body["total"] == len(expected)
    assert [j["id"] for j in body["jobs"]] == expected[:500]  # newest first


def test_a_scan_reads_each_job_once_across_steps_ties_and_changes(client: redis.Redis) -> None:
    """Steps of SCAN_CHUNK by score: many jobs of one creation time across a step's end, jobs
    indexed and removed during the scan; each job indexed all along is read exactly once."""
    tie = 1.7e9 + 1
    count = 2 * SCAN_CHUNK + 500
    # A third of the jobs share one score, which spans a step's end.
    ids = create_records(client, count, lambda n: tie if n % 3 == 0 else 1.7e9 + n)
    store = JobStore(client)
    scan = store._scan("status")
    read = [next(scan)[0] for _ in range(SCAN_CHUNK)]  # the first step
    # Meanwhile: newer jobs indexed, and old ones (not read yet) removed, shifting every rank.
    create_records(client, 300, lambda n: 1.8e9 + n)
    removed = set(ids[-100:])
    client.zrem(INDEX_KEY, *removed)
    read += [job_id for job_id, _ in scan]
    assert sorted(read) == sorted(i for i in ids if i not in removed)
    assert len(read) == len(set(read))
    assert store.waiting("bulk") == count + 300 - len(removed)  # exact, reading every record


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


def test_after_the_wait_a_listing_takes_the_previous_snapshot_only_if_recent(
    client: redis.Redis,
) -> None:
    """A scan slower than the wait (Redis paused): a listing takes the previous snapshot if its
    membership is at most ``stale_max_s`` old, else SnapshotBusy (503 job_store_busy)."""
    create_records(client, 10, lambda n: 1.7e9 + n)
    snapshots = StatusSnapshots(JobStore(client), wait_s=0.2)

    async def listings() -> None:
        previous = await snapshots.aget(0.0)
        client.client_pause(1500, all=True)
        assert await snapshots.aget(0.0, stale_max_s=60.0) is previous
        with pytest.raises(SnapshotBusy, match="previous snapshot is"):
            await snapshots.aget(0.0, stale_max_s=0.0)
        snapshots.wait_s = 30.0
        assert (await snapshots.aget(0.0)).counts() == {QUEUED: 10}  # the slow scan's

    asyncio.run(listings())


def test_a_listing_with_no_snapshot_during_a_slow_scan_is_told_the_store_is_busy(
    client: redis.Redis,
) -> None:
    create_records(client, 10, lambda n: 1.7e9 + n)
    store = JobStore(client)
    snapshots_for(store).wait_s = 0.2
    client.client_pause(1500, all=True)
    with pytest.raises(ApiError) as raised:
        asyncio.run(listed_by_status(store, QUEUED, 1, 0))
    error = raised.value
    assert (error.status, error.code) == (503, "job_store_busy")
    assert error.message == "the job store is busy counting jobs by status; try again shortly"
    assert error.headers == {"Retry-After": "2"}
    snapshots_for(store).wait_s = 30.0
    assert snapshots_for(store).get(0.0).counts() == {QUEUED: 10}  # the slow scan ended


def test_a_scan_the_os_refuses_a_thread_for_is_not_left_under_way(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thread.start raising (what "can't start new thread" does under load) ends that scan: the
    callers waiting get SnapshotBusy, the next ones scan again (no wait for a scan never run)."""
    create_records(client, 10, lambda n: 1.7e9 + n)
    snapshots = StatusSnapshots(JobStore(client), wait_s=30.0)

    def refused(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    async def listings() -> None:
        with monkeypatch.context() as patch:
            patch.setattr(threading.Thread, "start", refused)
            with pytest.raises(SnapshotBusy, match="could not start"):
                await snapshots.aget(0.0)
        started = time.monotonic()
        assert (await snapshots.aget(0.0)).counts() == {QUEUED: 10}
        assert time.monotonic() - started < 5

    asyncio.run(listings())
    latest = snapshots.get(0.0)
    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", refused)
        assert snapshots.get(0.0, stale_ok=True) is latest  # a scrape: the latest, at once
    assert snapshots.get(0.0) is not latest  # and a new scan after it


def read_around_a_tie(
    client: redis.Redis, change: Callable[[list[str]], None]
) -> tuple[list[str], set[str]]:
    """(the ids a scan read, the ids indexed before it) over SCAN_CHUNK - 10 jobs of distinct
    scores then 20 of one, the step's end inside those 20; ``change`` (given the tied ids read)
    is called after the first SCAN_CHUNK were read."""
    client.flushdb()
    ids = create_records(client, SCAN_CHUNK - 10, lambda n: 1.8e9 + n)
    ids += create_records(client, 20, lambda n: 1.7e9)
    scan = JobStore(client)._scan("status")
    read = [next(scan)[0] for _ in range(SCAN_CHUNK)]
    change([i for i in read if client.zscore(INDEX_KEY, i) == 1.7e9])
    return read + [job_id for job_id, _ in scan], set(ids)


def test_a_tie_across_a_step_end_is_read_whole_while_it_changes(client: redis.Redis) -> None:
    """A job of the tied score removed, or one added, after part of them were read: each job
    indexed all along is still read once (stepping by rank within the tie, one was skipped, or
    read twice)."""

    def remove_one(tied: list[str]) -> None:
        client.zrem(INDEX_KEY, tied[0])
        client.delete(JOB_KEY.format(tied[0]))

    read, indexed = read_around_a_tie(client, remove_one)
    assert len(read) == len(set(read)) and set(read) == indexed  # the removed one read before

    def add_one(tied: list[str]) -> None:
        client.zadd(INDEX_KEY, {"f" * 32: 1.7e9})  # the first of the tie in the scan's order

    read, indexed = read_around_a_tie(client, add_one)
    assert len(read) == len(set(read)) and set(read) - {"f" * 32} == indexed
