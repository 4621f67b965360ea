"""Status changes of job records on a real Redis stay right when a reply is lost and the store
retries (a Redis restart right after a command), and when workers, reapers and the gateway race:
each change is one atomic, idempotent script."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from fdl.jobs import JobStatus, JobStore
from tests.redis_fault_proxy import RedisFaultProxy, Rule
from tests.training.stores import loaded_store
from training.job import run_job
from training.reaper import reap_once
from training.settings import WorkerSettings

DB = 3


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    with loaded_store(redis_url, DB) as direct:
        yield direct


@pytest.fixture
def lossy(store: JobStore) -> Iterator[tuple[JobStore, RedisFaultProxy]]:
    """A worker's store (it retries) through a proxy that loses the reply of the first script."""
    kwargs = store.redis.connection_pool.connection_kwargs
    lost = Rule(b"EVALSHA", "lose_reply", 1)
    with RedisFaultProxy((kwargs["host"], kwargs["port"]), lost) as proxy:
        worker_store = JobStore.from_url(proxy.url(DB), retry_for_s=10)
        yield worker_store, proxy
        worker_store.redis.close()


def statuses(store: JobStore, job_id: str) -> list[str]:
    return [e["data"]["status"] for _, e in store.read_events(job_id) if e["type"] == "status"]


def test_a_requeue_whose_reply_was_lost_still_resends_the_job(
    store: JobStore, lossy: tuple[JobStore, RedisFaultProxy], tmp_path: Path
) -> None:
    store.create({"model": "mnist_logreg"}, "lost")
    assert store.mark_running("lost", "dead-worker:1")
    store.set_fields("lost", heartbeat_at=time.time() - 600)
    reaper_store, proxy = lossy
    sent: list[str] = []
    settings = WorkerSettings(
        redis_url="redis://unused", model_dir=tmp_path, stale_after_s=5, heartbeat_interval_s=1
    )
    send = lambda job_id, *_: sent.append(job_id)  # noqa: E731
    assert reap_once(reaper_store, settings, send) == [("lost", "requeued")]
    assert proxy.fired == 1  # the requeue ran in Redis, its reply never arrived
    assert sent == ["lost"] and store.get("lost")["status"] == "queued"
    assert statuses(store, "lost") == ["queued", "running", "queued"]


def test_a_claim_whose_reply_was_lost_counts_one_attempt(
    store: JobStore, lossy: tuple[JobStore, RedisFaultProxy]
) -> None:
    store.create({"model": "mnist_logreg"}, "claimed")
    worker_store, proxy = lossy
    assert worker_store.mark_running("claimed", "worker:1")
    assert proxy.fired == 1
    record = store.get("claimed")
    assert record["status"] == "running" and record["attempts"] == 1
    assert record["worker"] == "worker:1"
    assert statuses(store, "claimed") == ["queued", "running"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.finish("job", JobStatus.SUCCEEDED, result={"model": "m"}), "succeeded"),
        (lambda s: s.transition("job", JobStatus.FAILED, error="boom"), "failed"),
        (lambda s: s.request_cancel("job") is not None, "cancelled"),
    ],
    ids=["finish", "transition", "cancel"],
)
def test_a_status_change_whose_reply_was_lost_applies_once_with_one_event(
    store: JobStore,
    lossy: tuple[JobStore, RedisFaultProxy],
    change: Callable[[JobStore], bool],
    expected: str,
) -> None:
    store.create({"model": "mnist_logreg"}, "job")
    worker_store, proxy = lossy
    assert change(worker_store) is True  # answered as applied, not "already terminal"
    assert proxy.fired == 1
    assert store.get("job")["status"] == expected
    assert statuses(store, "job") == ["queued", expected]


def test_a_creation_whose_reply_was_lost_is_recorded_once(store: JobStore, redis_url: str) -> None:
    kwargs = store.redis.connection_pool.connection_kwargs
    lost = Rule(b"fdl:jobs", "lose_reply", 1)
    with RedisFaultProxy((kwargs["host"], kwargs["port"]), lost) as proxy:
        gateway_store = JobStore.from_url(proxy.url(DB), retry_for_s=10)
        created = gateway_store.create({"model": "mnist_logreg"}, "new")
        gateway_store.redis.close()
    assert lost.fired == 1
    assert store.get("new")["created_at"] == created["created_at"]
    assert statuses(store, "new") == ["queued"]


def _race(*calls: Callable[[], object]) -> list[object]:
    """Run the calls at the same moment, each in its own thread; returns what each returned."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait(5)
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def stores(redis_url: str, count: int) -> list[JobStore]:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    return [JobStore.from_url(url) for _ in range(count)]


def test_two_deliveries_never_both_claim_a_job(store: JobStore, redis_url: str) -> None:
    first, second = stores(redis_url, 2)
    for n in range(30):
        job_id = f"job-{n}"
        store.create({"model": "mnist_logreg"}, job_id)
        stale = time.time() - 5
        won = _race(
            partial(first.mark_running, job_id, "w1", heartbeat_before=stale),
            partial(second.mark_running, job_id, "w2", heartbeat_before=stale),
        )
        assert sorted(won) == [False, True], n
        assert store.get(job_id)["attempts"] == 1


def test_a_running_job_is_claimed_again_only_when_its_heartbeat_is_stale(store: JobStore) -> None:
    store.create({"model": "mnist_logreg"}, "job")
    assert store.mark_running("job", "w1")
    assert not store.mark_running("job", "w2", heartbeat_before=time.time() - 5)
    assert store.get("job")["worker"] == "w1"
    store.set_fields("job", heartbeat_at=time.time() - 60)
    assert store.mark_running("job", "w2", heartbeat_before=time.time() - 5)
    record = store.get("job")
    assert record["worker"] == "w2" and record["attempts"] == 2
    store.finish("job", JobStatus.FAILED, error="x")
    assert not store.mark_running("job", "w3", heartbeat_before=time.time())


def test_cancelling_a_job_as_a_worker_claims_it_never_cancels_a_running_job(
    store: JobStore, redis_url: str
) -> None:
    gateway, worker = stores(redis_url, 2)
    for n in range(60):
        job_id = f"job-{n}"
        store.create({"model": "mnist_logreg"}, job_id)
        _cancelled, claimed = _race(
            partial(gateway.request_cancel, job_id), partial(worker.mark_running, job_id, "w")
        )
        record = store.get(job_id)
        assert record["cancel_requested"] is True
        if claimed:  # the worker got it first: it is running, flagged for its next check
            assert record["status"] == "running", (n, record)
            assert statuses(store, job_id) == ["queued", "running"]
        else:  # the gateway got it first: cancelled before any attempt
            assert record["status"] == "cancelled" and record["attempts"] == 0, (n, record)
            assert record["error"] == "cancelled before it started"


@pytest.mark.parametrize(
    ("attempts", "cancel", "expected"),
    [(1, True, "cancelled"), (2, False, "failed")],
    ids=["cancelled-meanwhile", "out-of-attempts"],
)
def test_a_delivery_while_the_reaper_settles_a_lost_job_never_finds_it_queued(
    store: JobStore, tmp_path: Path, attempts: int, cancel: bool, expected: str
) -> None:
    """The reaper ends a lost job that was cancelled while it ran, or is out of attempts. Before,
    it moved the job back to queued, then ended it in a second call: a duplicate message of the
    job delivered in between (the broker's redelivery, a resend) found it queued and claimed it,
    and the reaper then ended it under the worker that ran it (or the delivery ended it first,
    for its own reason). One script decides now: the delivery finds the job already ended."""
    store.create({"model": "mnist_logreg"}, "lost", "training")
    assert store.mark_running("lost", "dead-worker:1")
    store.set_fields("lost", heartbeat_at=time.time() - 600, attempts=attempts)
    if cancel:
        assert store.request_cancel("lost")["status"] == "running"  # only flagged
    settings = WorkerSettings(
        redis_url="redis://unused",
        data_dir=tmp_path / "data",
        model_dir=tmp_path / "models",
        var_dir=tmp_path / "var",
        download=False,
        stale_after_s=5,
        heartbeat_interval_s=1,
        max_attempts=2,
    )
    deliveries: list[object] = []

    def duplicate_delivery() -> None:  # the reaper's first script ran; its reply waits
        deliveries.append(run_job("lost", store, settings, worker="duplicate:2"))

    kwargs = store.redis.connection_pool.connection_kwargs
    held = Rule(b"EVALSHA", "hold_reply", 1, then=duplicate_delivery)  # its reply waits
    with RedisFaultProxy((kwargs["host"], kwargs["port"]), held) as proxy:
        reaper_store = JobStore.from_url(proxy.url(DB))
        sent: list[str] = []
        actions = reap_once(reaper_store, settings, lambda job_id, *_: sent.append(job_id))
        reaper_store.redis.close()
    assert held.fired == 1 and deliveries == [None] and sent == []
    assert actions == [("lost", expected)]
    record = store.get("lost")
    assert record["status"] == expected, record
    assert record["attempts"] == attempts and record["worker"] == "dead-worker:1"
    assert "no heartbeat" in record["error"]
    assert statuses(store, "lost") == ["queued", "running", expected]
