"""The scan of every job record's status (fdl/job_reads.py:_scan) reads the index a step of
SCAN_CHUNK at a time by score: each job indexed all along is read exactly once, across ties,
a step's end inside a tie, and jobs indexed or removed during the scan. On a private Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from fdl.job_reads import SCAN_CHUNK
from fdl.job_records import INDEX_KEY, JOB_KEY
from fdl.jobs import JobStore
from harness.redis import redis_running
from tests.api.bulk_records import create_records


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[str]:
    """A Redis of this module's own: its flushes reach no other test."""
    root = tmp_path_factory.mktemp("redis-scan-steps")
    with redis_running(root, logs_dir, "redis-scan-steps") as url:
        yield url


@pytest.fixture
def client(own_redis: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(own_redis, decode_responses=True)
    connection.flushdb()
    yield connection
    connection.close()


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
