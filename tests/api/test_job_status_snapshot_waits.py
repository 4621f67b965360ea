"""A listing by status that waits for a scan of every job record's status
(api/jobs_snapshot.py): past its wait it takes the previous snapshot only if that is recent,
else 503 ``job_store_busy``; a scan whose thread could not start is not left under way. On a
private Redis, paused to make a scan slow."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api.errors import ApiError
from api.jobs_snapshot import SnapshotBusy, StatusSnapshots, listed_by_status, snapshots_for
from fdl.jobs import JobStore
from harness.redis import redis_running
from tests.api.bulk_records import QUEUED, create_records


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[str]:
    """A Redis of this module's own: its pauses and flushes reach no other test."""
    root = tmp_path_factory.mktemp("redis-snapshot-waits")
    with redis_running(root, logs_dir, "redis-snapshot-waits") as url:
        yield url


@pytest.fixture
def client(own_redis: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(own_redis, decode_responses=True)
    connection.flushdb()
    yield connection
    connection.close()


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
