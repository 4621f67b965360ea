"""A reaper's pass that comes right as Redis is back from an outage longer than
FDL_STALE_AFTER_S, on a real Redis stopped (SIGTERM, started again) or paused (SIGSTOP, its
replies only late): every heartbeat is stale then, for no worker could write one. The pass
judges no run lost; once Redis has answered the reaper for the grace (two heartbeats and a
margin), a run that still did not beat is requeued, as a dead worker's must be."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from fdl.jobs import JobStatus, JobStore
from harness.procs import wait_for
from harness.redis import RestartableRedis
from tests.training.test_reaper_and_idempotency import Sent, settings
from training.reaper import reap_once
from training.redis_watch import RedisWatch


def go_away(server: RestartableRedis, how: str) -> None:
    assert server.process is not None
    if how == "pause":
        server.process.signal(signal.SIGSTOP)
    else:
        server.stop()


def come_back(server: RestartableRedis, how: str) -> None:
    if how == "pause":
        assert server.process is not None
        server.process.signal(signal.SIGCONT)
    else:
        server.start()


@pytest.mark.parametrize("how", ["pause", "restart"])
def test_a_pass_right_after_an_outage_judges_no_run_lost(
    restartable_redis: RestartableRedis, tmp_path: Path, how: str
) -> None:
    store = JobStore.from_url(restartable_redis.url, retry_for_s=60)
    config, sent = settings(tmp_path), Sent()  # stale after 5 s, a heartbeat every 1 s
    store.create({"model": "mnist_logreg"}, "quiet", "q")
    assert store.mark_running("quiet", "some-worker:1")
    watch = RedisWatch(store, config.heartbeat_interval_s)
    grace_s = watch.grace_s
    # From its start a reaper judges nothing for the grace: it knows nothing of before.
    assert not watch.judging()
    wait_for(lambda: watch.now() and watch.judging(), grace_s + 10, "the grace", interval=0.2)
    store.heartbeat("quiet")
    assert reap_once(store, config, sent, watch=watch) == []

    # Redis is away for longer than FDL_STALE_AFTER_S; a pass that starts meanwhile waits with
    # its first call until Redis is back.
    passes: list[list[tuple[str, str]]] = []
    during = threading.Thread(
        target=lambda: passes.append(reap_once(store, config, sent, True, watch))
    )
    go_away(restartable_redis, how)
    try:
        during.start()
        time.sleep(config.stale_after_s + 1)  # the outage itself, no readiness wait
        assert during.is_alive()
    finally:
        come_back(restartable_redis, how)
    back = time.monotonic()
    during.join(30)
    assert passes == [[]] and sent == []
    record = store.get("quiet")
    assert record is not None and record["status"] == "running"

    # Nothing beats it: its worker is dead. It is requeued once the grace is over.
    def requeued() -> bool:
        return reap_once(store, config, sent, watch=watch) == [("quiet", "requeued")]

    wait_for(requeued, grace_s + 10, "the lost run requeued", interval=0.1)
    assert time.monotonic() - back >= grace_s - 0.5
    assert sent == [("quiet", "q")]
    record = store.get("quiet")
    assert (
        record is not None
        and record["status"] == JobStatus.QUEUED.value
        and record["attempts"] == 1
    )
    store.redis.close()
