"""A Redis outage while a finished job waits for the model repository's lock neither ends the job
nor stalls its rounds: between rounds its record's check is one read without retries, which
counts as passed when Redis is unreachable, and its note that it waits is one attempt, skipped
when Redis does not take it (before, the note was retried for up to FDL_REDIS_RETRY_S, and a
round with Redis away lasted that long). Once the lock is free it publishes, Redis still away,
and ends ``succeeded`` when Redis is back. Real TensorFlow, a real file lock held by a thread
of the test, and a Redis of the test's own (the session's serves other tests), stopped and
started again on its port with its data."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fdl.jobs import JobStore
from fdl.repository_reads import list_versions
from harness.procs import wait_for
from harness.redis import RestartableRedis
from tests.training.lock_wait import SETTINGS, TINY, LockHolder, staged, waits

# FDL_REDIS_RETRY_S of the job's store: a round that waited it out would last this long.
RETRY_S = 300.0
# Rounds (of 1 s) that must go by with Redis away, and the most they may take: far less than
# RETRY_S, and far more than the rounds need on a busy machine.
ROUNDS_AWAY = 3
ROUNDS_AT_MOST_S = 30.0


@pytest.fixture
def own_redis(tmp_path: Path, logs_dir: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path / "redis", logs_dir, "redis-lock-wait-outage")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def change_time(path: Path) -> float | None:
    """When ``path`` was last marked (a round of the wait marks the export in use), or None once
    it is gone."""
    try:
        return path.stat().st_ctime
    except OSError:
        return None


class BackAfter(threading.Thread):
    """Starts Redis again once ``done()`` is true (at most after ``timeout_s``); ``error`` says
    when it was not (Redis is started again all the same, so that the job can end)."""

    def __init__(self, server: RestartableRedis, done: Callable[[], bool], timeout_s: float):
        super().__init__(name="redis-back", daemon=True)
        self.server, self.done, self.timeout_s = server, done, timeout_s
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            wait_for(self.done, self.timeout_s, "the moment to start Redis again")
        except BaseException as error:  # reported by the test, in its own thread
            self.error = error
        finally:
            self.server.start()


def test_a_redis_outage_while_it_waits_neither_ends_it_nor_stretches_its_rounds(
    own_redis: RestartableRedis, data_dir: Path, tmp_path: Path, job_in_process: Callable[..., Any]
) -> None:
    job_id, model_dir = "outage-waiting", tmp_path / "models"
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    store = JobStore(client, retry_for_s=RETRY_S)  # the worker's store, FDL_REDIS_RETRY_S=300
    seen: dict[str, Any] = {"marks": []}

    def release() -> bool:
        """Once the job waits: Redis stopped. Then its rounds, told by the export's change time,
        until ROUNDS_AWAY went by with Redis away, or ROUNDS_AT_MOST_S passed, or the export is
        gone (the job stopped); then the lock is given up."""
        marks: list[float | None] = seen["marks"]
        if not marks:
            if not waits(store, job_id):
                return False
            own_redis.stop()
            [seen["export"]] = staged(model_dir, job_id)
            seen["stopped"] = time.monotonic()
            marks.append(change_time(seen["export"]))
            return False
        mark = change_time(seen["export"])
        if mark != marks[-1]:
            marks.append(mark)
        seen["away_s"] = time.monotonic() - seen["stopped"]
        seen["given_up"] = mark is None or seen["away_s"] > ROUNDS_AT_MOST_S
        return seen["given_up"] or len(marks) > ROUNDS_AWAY

    def published_or_given_up() -> bool:
        """The version is in (Redis still away), or the lock's holder gave up on the rounds."""
        if list_versions(model_dir / "m"):
            seen["published_while_away"] = True
            return True
        return bool(seen.get("given_up")) or holder.error is not None

    settings = {**SETTINGS, "redis_retry_s": RETRY_S}
    try:
        with LockHolder(model_dir, release) as holder:
            back = BackAfter(own_redis, published_or_given_up, 120)
            back.start()
            result, record, _ = job_in_process(store, job_id, data_dir, settings, **TINY)
        back.join(30)
    finally:
        client.close()
    assert holder.error is None and back.error is None, (holder.error, back.error, record)
    marks = seen["marks"]
    # Rounds went on with Redis away, each far shorter than RETRY_S.
    assert None not in marks and len(marks) > ROUNDS_AWAY, seen
    assert seen["away_s"] < ROUNDS_AT_MOST_S, seen
    # Published under the lock with Redis still away: the check there counted as passed.
    assert seen.get("published_while_away"), seen
    assert record["status"] == "succeeded", record
    assert result is not None and result["published"] and result["version"] == 1, result
    assert list_versions(model_dir / "m") == [1]
    assert not staged(model_dir, job_id)
