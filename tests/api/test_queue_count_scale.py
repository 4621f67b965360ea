"""The count behind FDL_MAX_QUEUED_JOBS (fdl/jobs.py:JobStore.waiting) reads the records of the
queue's set of jobs that may be queued, not every record kept: exact through every status change,
on a store written before the sets (built once from one scan), and while jobs change during that
scan. A Redis of this module's own (its command counts are this module's alone) and a real
gateway; nobody consumes the queue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from fdl.job_idempotency import Claim, create_once, end_not_queued
from fdl.job_reads import SCAN_CHUNK
from fdl.job_records import INDEX_KEY, JOB_KEY, QUEUED_BUILT, QUEUED_KEY, new_record
from fdl.jobs import JobStatus, JobStore
from harness.gateway import Gateway, gateway_running
from harness.redis import redis_running

QUEUE = "scaled"
CAP = 5
SPEC = {"model": "mnist_mlp"}
ENDED = 20_000  # jobs kept ended, as a busy month leaves them (FDL_JOB_RETENTION_S)
# Record reads (HMGET, HGET, HGETALL) one submission may make: a few of its own, one per job
# queued. Before the queue's set, each read every record kept: ENDED and more.
SUBMISSION_READS = 40


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[str]:
    with redis_running(tmp_path_factory.mktemp("redis-queue-count"), logs_dir, "redis-qc") as url:
        yield url


@pytest.fixture(scope="module")
def gateway(
    own_redis: str, tmp_path_factory: pytest.TempPathFactory, logs_dir: Path
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway-queue-count")
    settings = {"FDL_MAX_QUEUED_JOBS": str(CAP), "FDL_TRAINING_QUEUE": QUEUE}
    with ExitStack() as stack:
        yield stack.enter_context(
            gateway_running(
                "gateway-qc", logs_dir, own_redis, None, root / "models", root / "s", **settings
            )
        )


@pytest.fixture(scope="module")
def client(own_redis: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(own_redis, decode_responses=True) as connection:
        yield connection


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    """A store over this module's Redis, emptied."""
    client.flushdb()
    return JobStore(client)


def write_old(
    store: JobStore, count: int, status: JobStatus, queue: str | None = QUEUE
) -> list[str]:
    """``count`` records in ``status`` written directly, as the previous version left them (no
    queue sets), created a second apart from 1.7e9 on (oldest first); their ids."""
    pipe = store.redis.pipeline(transaction=False)
    ids, first = [], 1.7e9 + store.redis.zcard(INDEX_KEY)
    for n in range(count):
        job_id = f"{status}-{queue}-{first + n:.0f}"
        record = new_record(job_id, SPEC, first + n, queue) | {"status": status.value}
        if status.terminal:
            record |= {"finished_at": first + n + 1, "result": {"version": 1}}
        pipe.hset(JOB_KEY.format(job_id), mapping={k: json.dumps(v) for k, v in record.items()})
        pipe.zadd(INDEX_KEY, {job_id: first + n})
        ids.append(job_id)
    pipe.execute()
    return ids


def truly_queued(store: JobStore, queue: str = QUEUE) -> set[str]:
    """The jobs of ``queue`` whose record says queued, read from every indexed record."""
    wanted = [json.dumps("queued"), json.dumps(queue)]
    ids = store.redis.zrange(INDEX_KEY, 0, -1)
    return {i for i in ids if store.redis.hmget(JOB_KEY.format(i), ["status", "queue"]) == wanted}


def assert_exact(store: JobStore, queue: str = QUEUE) -> None:
    """The count is the number of jobs truly queued, and leaves their set holding only them."""
    queued = truly_queued(store, queue)
    assert store.waiting(queue) == len(queued)
    assert store.redis.smembers(QUEUED_KEY.format(queue)) == queued | {QUEUED_BUILT}


def record_reads(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("hmget", "hget", "hgetall")
    )


def submit(gateway: Gateway) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/jobs", json=SPEC, headers=gateway.admin(), timeout=60)


def test_a_submission_reads_only_the_queued_jobs_of_an_upgraded_store(
    store: JobStore, gateway: Gateway
) -> None:
    """20 000 ended jobs and two queued ones written by the previous version: the first count
    builds the queue's set from one scan and counts the two; later submissions read the records
    of the queued jobs only (before: every record, 20 000 HMGETs a submission, about 1 s)."""
    write_old(store, ENDED, JobStatus.SUCCEEDED)
    old_queued = write_old(store, 2, JobStatus.QUEUED)
    write_old(store, 1, JobStatus.RUNNING)
    write_old(store, 3, JobStatus.QUEUED, queue="elsewhere")
    accepted = [submit(gateway) for _ in range(CAP - 2)]
    assert [r.status_code for r in accepted] == [202] * (CAP - 2), [r.text for r in accepted]
    store.redis.config_resetstat()
    started = time.monotonic()
    full = submit(gateway)
    took = time.monotonic() - started
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full", full.text
    assert f"{CAP} jobs already wait" in full.json()["error"]["message"]
    reads = record_reads(store.redis)
    print(f"a submission at the cap over {ENDED} ended jobs: {reads} record reads, {took:.3f} s")
    assert reads <= SUBMISSION_READS, reads
    assert store.finish(old_queued[0], JobStatus.CANCELLED)
    store.redis.config_resetstat()
    again = submit(gateway)
    assert again.status_code == 202, again.text
    assert record_reads(store.redis) <= SUBMISSION_READS
    assert_exact(store)
    assert store.waiting(QUEUE) == CAP


def test_the_count_is_exact_through_every_status_change(store: JobStore) -> None:
    """Queued, claimed, finished, cancelled, ended unconfirmed, re-queued by a reaper, re-sent,
    created and ended under an Idempotency-Key, taken over as abandoned, pruned, deleted: after
    each, the count is the jobs truly queued, and the set holds only them."""
    assert_exact(store)  # an empty store: its set built at once
    for n in range(6):
        store.create(SPEC, f"q{n}", QUEUE)
    store.create(SPEC, "other", "elsewhere")
    store.create(SPEC, "no-queue")
    assert_exact(store)
    store.mark_running("q0", "worker:1")  # started
    store.finish("q1", JobStatus.FAILED, error="the broker refused it")  # gateway's end
    assert store.request_cancel("q2") is not None  # cancelled while queued
    assert_exact(store)
    assert store.finish("q0", JobStatus.SUCCEEDED, result={}, run="worker:1")
    assert_exact(store)
    store.mark_running("q3", "worker:2")
    assert store.settle_lost("q3", store.now() + 1, 1, "lost") == JobStatus.QUEUED  # re-queued
    assert_exact(store)
    store.mark_running("q3", "worker:3")
    give_up = store.settle_lost("q3", store.now() + 1, 2, "lost", give_up="out of attempts")
    assert give_up == JobStatus.FAILED
    assert_exact(store)
    store.set_fields("q4", sent_at=store.now() - 3600)
    assert store.resend_or_end("q4", 60) == "resent"  # still queued, counted once
    store.create(SPEC, "unconfirmed", QUEUE, unconfirmed=True)
    store.set_fields("unconfirmed", created_at=store.now() - 3600)
    assert store.resend_or_end("unconfirmed", 60) == "failed"
    assert_exact(store)
    claim = Claim.of("caller", "key-1", SPEC, abandon_after_s=10)
    assert isinstance(create_once(store, claim, SPEC, "keyed", QUEUE, unconfirmed=True), dict)
    assert_exact(store)
    store.set_fields("keyed", created_at=store.now() - 3600)  # abandoned by its submission
    assert isinstance(create_once(store, claim, SPEC, "takeover", QUEUE, unconfirmed=True), dict)
    ended = store.get("keyed")
    assert ended is not None and ended["status"] == "failed"
    assert_exact(store)
    assert end_not_queued(store, claim, "takeover", "the broker refused it")
    assert_exact(store)
    store.redis.delete(JOB_KEY.format("q5"))  # its record gone, as lost or deleted by hand
    assert "q5" in store.redis.smembers(QUEUED_KEY.format(QUEUE))
    assert_exact(store)
    assert set(store.prune(store.now() + 10)) >= {"q0", "q1", "q2", "q3", "keyed"}
    assert_exact(store)
    assert_exact(store, "elsewhere")
    assert store.waiting(QUEUE) == 1  # q4


def test_an_upgraded_store_counts_exactly_while_jobs_change_during_its_first_scan(
    store: JobStore,
) -> None:
    """A store of the previous version (no sets), changed by the new one before its first count
    and during that count's scan, after the first step of SCAN_CHUNK (newest first): a job
    created, one claimed before the scan read it, one claimed after, one queued again. The
    count is exact; a set lost later (by hand) is built again; a job that a process of the
    previous version queued again after the set was built is counted once a reaper looks at it
    for a resend."""
    write_old(store, SCAN_CHUNK, JobStatus.SUCCEEDED)
    unread = write_old(store, 3, JobStatus.QUEUED)  # the oldest: read last
    running = write_old(store, 2, JobStatus.RUNNING)
    write_old(store, SCAN_CHUNK, JobStatus.SUCCEEDED)
    read_first = write_old(store, 2, JobStatus.QUEUED)  # the newest: read in the first step
    store.create(SPEC, "new-before", QUEUE)  # the set exists, without QUEUED_BUILT
    store.mark_running(unread[0], "worker:1")

    class ChangedDuringScan(JobStore):
        def _scan(self, *fields: str) -> Iterator[tuple[str, list[str | None]]]:
            for n, row in enumerate(super()._scan(*fields)):
                if n == SCAN_CHUNK:
                    self.create(SPEC, "new-during", QUEUE)
                    self.mark_running(unread[1], "worker:2")
                    self.mark_running(read_first[0], "worker:3")
                    self.set_fields(running[0], heartbeat_at=0.0, started_at=0.0)
                    assert self.settle_lost(running[0], self.now(), 0, "lost") == "queued"
                yield row

    changing = ChangedDuringScan(store.redis)
    expected = truly_queued(store) - {unread[1], read_first[0]} | {"new-during", running[0]}
    assert changing.waiting(QUEUE) == len(expected) == 5
    assert truly_queued(store) == expected
    assert_exact(store)
    store.redis.delete(QUEUED_KEY.format(QUEUE))
    assert_exact(store)
    # A worker of the previous version queues a job again, its set untouched.
    old = running[1]
    fields = {"status": "queued", "worker": None, "sent_at": store.now() - 3600, "resends": 0}
    store.redis.hset(JOB_KEY.format(old), mapping={k: json.dumps(v) for k, v in fields.items()})
    assert store.resend_or_end(old, 60) == "resent"
    assert_exact(store)
    assert store.waiting(QUEUE) == 6


def test_a_count_up_to_a_number_reads_no_further(store: JobStore, gateway: Gateway) -> None:
    """A queue holding more than the cap (a cap lowered, lost runs sent back): a submission's
    count stops one past the cap, so the script that holds up every other client of the Redis
    reads that many queued records, not the whole backlog, and the refusal says "more than"."""
    for _ in range(40):
        store.create(SPEC, queue=QUEUE)
    assert store.waiting(QUEUE) == 40
    store.redis.config_resetstat()
    assert store.waiting(QUEUE, up_to=3) == 3
    assert record_reads(store.redis) == 3
    store.redis.config_resetstat()
    full = submit(gateway)
    assert full.status_code == 429, full.text
    assert f"more than {CAP} jobs already wait" in full.json()["error"]["message"]
    assert record_reads(store.redis) <= CAP + 1 + 10  # the count, and the submission's own reads
    assert store.waiting(QUEUE) == 40


def test_the_reaper_adds_the_jobs_an_older_process_queued(store: JobStore, tmp_path: Path) -> None:
    """A rolling upgrade: after the set is built, a gateway of the previous version queues two
    jobs without it (not yet due for a resend). The count misses them until a new worker's
    reaper passes, which adds every queued job of its queue (and none of another's)."""
    from training.reaper import reap_once
    from training.settings import WorkerSettings

    store.create(SPEC, queue=QUEUE)
    assert store.waiting(QUEUE) == 1  # built
    write_old(store, 2, JobStatus.QUEUED)
    write_old(store, 1, JobStatus.QUEUED, queue="elsewhere")
    for job_id in store.redis.zrange(INDEX_KEY, 0, -1):
        store.redis.hset(JOB_KEY.format(job_id), "sent_at", json.dumps(store.now()))
    assert store.waiting(QUEUE) == 1
    worker = WorkerSettings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url="redis://unused",
        training_queue=QUEUE,
        model_dir=tmp_path / "m",
        var_dir=tmp_path / "v",
    )
    sent: list[tuple[str, str]] = []
    assert reap_once(store, worker, lambda *message: sent.append(message[:2])) == []
    assert sent == []
    assert_exact(store)
    assert store.waiting(QUEUE) == 3
