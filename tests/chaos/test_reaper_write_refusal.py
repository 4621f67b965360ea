"""A Redis that refuses writes (at its ``maxmemory`` without eviction, ``READONLY``, ``MISCONF``)
while it still answers reads, for longer than FDL_STALE_AFTER_S, with a reaper's pass meeting the
refusal: a real Redis of the test's own, the reaper's and the lost-process settling's own code.

Before, a reaper read only Redis's clock, which such a Redis answers, so the refusal broke no
count of its grace: its pass took the live run, whose beats were refused, for lost, and its
settling (store.settle_lost) was retried through the refusal, holding the model repository's
lock (label changes hung, then 503), with the judgement made at the pass's start. When writes
came back, the retry landed before the run's own retried beat about half the time: the live run
was requeued ("no heartbeat for 20s", attempt 2) and stopped ("another run owns it now"). Here
the refusal is lifted once a pass met it (and, in the first test, once the reaper read Redis's
clock between passes for longer than the grace), and a pass comes right then, before the run
beats again: the worst moment. The settling of a pool process that died (training/lost_process)
is tried again outside the lock too.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import pytest
import redis

from fdl.jobs import JobStore
from fdl.repository import Repository
from fdl.store_retry import REFUSALS
from harness.procs import wait_for
from harness.redis import RestartableRedis
from tests.chaos.redis_refusals import ALL_REFUSALS, out_of_memory, refusals
from tests.training.test_reaper_and_idempotency import Sent
from training.heartbeat import Heartbeat
from training.lost_process import settle_when_gone
from training.reaper import reap_once
from training.redis_watch import RedisWatch
from training.settings import WorkerSettings

HEARTBEAT_S, STALE_AFTER_S = 0.2, 1.0
RUN = "live-worker:7"


def quick(tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        redis_url="redis://unused",
        model_dir=tmp_path / "models",
        var_dir=tmp_path / "var",
        stale_after_s=STALE_AFTER_S,
        heartbeat_interval_s=HEARTBEAT_S,
        max_attempts=2,
    )


@pytest.fixture
def stores(restartable_redis: RestartableRedis) -> Iterator[tuple[JobStore, JobStore, redis.Redis]]:
    """The live run's store and the reaper's (workers' stores: they retry), and a plain client."""
    run_store = JobStore.from_url(restartable_redis.url, retry_for_s=30)
    reaper_store = JobStore.from_url(restartable_redis.url, retry_for_s=30)
    client = redis.Redis(port=restartable_redis.port)
    yield run_store, reaper_store, client
    for each in (run_store.redis, reaper_store.redis, client):
        each.close()


class InThread(threading.Thread):
    """``call()`` in a thread of its own, keeping what it returned or raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(name="reaper-pass", daemon=True)
        self.call = call
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as error:  # reported by the test
            self.error = error


def beaten_for_the_grace(run_store: JobStore, job_id: str, watch: RedisWatch) -> None:
    """The run beats until the reaper judges (Redis answered it for the grace)."""
    with Heartbeat(run_store, job_id, HEARTBEAT_S, RUN):
        wait_for(lambda: watch.now() and watch.judging(), watch.grace_s + 20, "the grace")


def stale(store: JobStore, job_id: str) -> bool:
    """Whether the job's heartbeat is older than FDL_STALE_AFTER_S (with room), by Redis's clock."""
    record = store.get(job_id)
    return record is not None and store.now() - record["heartbeat_at"] > STALE_AFTER_S + 0.3


def lock_free(model_dir: Path) -> bool:
    """Whether the repository's lock, which a label change takes, is free within a second."""
    with Repository(model_dir, lock_timeout_s=1.0).locked():
        return True


def still_the_runs(run_store: JobStore, job_id: str) -> None:
    record = run_store.get(job_id)
    assert record is not None
    assert (record["status"], record["attempts"], record["worker"]) == ("running", 1, RUN)
    assert run_store.heartbeat(job_id, RUN)  # the live run's beat lands: its job still


@pytest.mark.parametrize("refusal", ["oom", "readonly", "misconf"])
def test_a_refusal_longer_than_stale_after_takes_no_live_run_for_lost(
    restartable_redis: RestartableRedis,
    stores: tuple[JobStore, JobStore, redis.Redis],
    tmp_path: Path,
    refusal: str,
) -> None:
    run_store, reaper_store, client = stores
    config, sent = quick(tmp_path), Sent()
    run_store.create({"model": "mnist_logreg"}, "live", "q")
    assert run_store.mark_running("live", RUN)
    watch = RedisWatch(reaper_store, HEARTBEAT_S)
    beaten_for_the_grace(run_store, "live", watch)
    assert reap_once(reaper_store, config, sent, False, watch) == []

    refused: Callable[[RestartableRedis], AbstractContextManager[str]] = ALL_REFUSALS[refusal]
    with refused(restartable_redis):  # the live run's beats are refused from here on
        wait_for(lambda: stale(run_store, "live"), 20, "the live run's heartbeat to go stale")
        before = refusals(client)
        during = InThread(lambda: reap_once(reaper_store, config, sent, False, watch))
        during.start()
        wait_for(lambda: refusals(client) > before, 20, "the pass to meet the refusal")
        # Then the reaper waits for its next pass, reading Redis's clock (which Redis answers)
        # every half heartbeat interval, for longer than the grace.
        assert not watch.wait(watch.grace_s + 0.5, threading.Event())
    # Writes are taken again, and the live run has not beaten yet.
    during.join(40)
    assert not during.is_alive()
    assert sent == []
    # Redis answers and takes writes again, but not for the grace yet: no run is judged.
    assert not watch.judging()
    assert reap_once(reaper_store, config, sent, False, watch) == [] and sent == []
    still_the_runs(run_store, "live")
    assert during.error is None and during.result == []  # it judged no run


def test_a_settling_redis_refuses_ends_the_pass_and_gives_the_lock_back(
    restartable_redis: RestartableRedis,
    stores: tuple[JobStore, JobStore, redis.Redis],
    tmp_path: Path,
) -> None:
    """A pass that judged while Redis took writes meets the refusal at its settling: the lock
    is given back at once, nothing is retried on that judgement, and the next passes judge
    again from fresh heartbeats, once Redis has taken writes for the grace."""
    run_store, reaper_store, client = stores
    config, sent = quick(tmp_path), Sent()
    run_store.create({"model": "mnist_logreg"}, "unheard", "q")  # its worker was cut off
    assert run_store.mark_running("unheard", RUN)
    run_store.create({"model": "mnist_logreg"}, "dead", "q")  # newer: settled first
    assert run_store.mark_running("dead", "dead-worker:1")
    watch = RedisWatch(reaper_store, HEARTBEAT_S)
    wait_for(lambda: watch.now() and watch.judging(), watch.grace_s + 20, "the grace")
    assert stale(run_store, "unheard") and stale(run_store, "dead")

    refusal, met = ExitStack(), threading.Event()
    counted: list[int] = []

    def send_then_refuse(job_id: str, queue: str, max_duration_s: float | None = None) -> None:
        """The dead run's job sent again; Redis refuses writes from this moment."""
        sent(job_id, queue, max_duration_s)
        refusal.enter_context(out_of_memory(restartable_redis))
        counted.append(refusals(client))
        met.set()

    with refusal:
        during = InThread(lambda: reap_once(reaper_store, config, send_then_refuse, False, watch))
        during.start()
        assert met.wait(30), during.error
        wait_for(lambda: refusals(client) > counted[0], 20, "the settling to meet the refusal")
        # Redis still refuses writes; the repository's lock is free for a label change.
        assert lock_free(config.model_dir)
    during.join(40)
    assert not during.is_alive()
    assert isinstance(during.error, REFUSALS), during.error
    assert sent == [("dead", "q")]
    assert (reaper_store.get("dead") or {}).get("status") == "queued"
    still_the_runs(run_store, "unheard")  # its worker beats again once Redis takes writes
    assert not watch.judging()
    assert reap_once(reaper_store, config, sent, False, watch) == []

    # Judged again from fresh heartbeats once the grace is over: the run beats, and goes on.
    beaten_for_the_grace(run_store, "unheard", watch)
    assert reap_once(reaper_store, config, sent, False, watch) == []
    assert sent == [("dead", "q")]
    still_the_runs(run_store, "unheard")


def test_a_dead_pool_process_is_settled_once_redis_takes_writes_without_holding_the_lock(
    restartable_redis: RestartableRedis,
    stores: tuple[JobStore, JobStore, redis.Redis],
    tmp_path: Path,
) -> None:
    """The main process settles the job of a pool process that died while Redis refuses writes:
    it tries again, the record read afresh, and holds the repository's lock only while it
    tries (before, its settling was retried under the lock until Redis took writes)."""
    run_store, reaper_store, client = stores
    config, sent = quick(tmp_path), Sent()
    run_store.create({"model": "mnist_logreg"}, "killed", "q")
    assert run_store.mark_running("killed", RUN)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # the pool process, exited
    gone.wait(30)

    with out_of_memory(restartable_redis):
        before = refusals(client)
        reason = "the training process was killed by SIGKILL (signal 9)"
        settling = InThread(
            lambda: settle_when_gone(
                "killed", gone.pid, None, reaper_store, config, RUN, reason, sent, wait_s=30
            )
        )
        settling.start()
        wait_for(lambda: refusals(client) > before, 20, "the settling to meet the refusal")
        assert lock_free(config.model_dir)
        assert settling.is_alive()  # it waits for Redis to take writes
    settling.join(40)
    assert not settling.is_alive() and settling.error is None, settling.error
    assert settling.result == "queued" and sent == [("killed", "q")]
    record = run_store.get("killed")
    assert record is not None and record["status"] == "queued" and record["worker"] is None
