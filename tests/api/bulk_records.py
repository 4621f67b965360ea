"""Job records written straight into a test's own Redis, many at once, and the status reads that
Redis served (the scans of every record's status: api/jobs_snapshot.py, fdl/job_reads.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis

from fdl.job_records import INDEX_KEY, JOB_KEY, new_job_id, new_record
from fdl.jobs import JobStatus
from fdl.jobspec import JobSpec

SPEC = JobSpec.model_validate({"model": "mnist_logreg", "epochs": 1}).model_dump(mode="json")
QUEUED, RUNNING = JobStatus.QUEUED.value, JobStatus.RUNNING.value


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
