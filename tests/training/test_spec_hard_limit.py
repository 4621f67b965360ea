"""The hard time limit of one run follows its spec: a job whose spec asks for less time than the
worker allows (``max_duration_s``) and that hangs where no check comes is killed that much (plus
the worker's FDL_JOB_KILL_GRACE_S) after it started, not the worker's FDL_MAX_JOB_DURATION_S, as
the gateway and the reaper send it; a message never gets more time than the worker allows. Real
Celery workers, a real gateway, a real Redis."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from fdl.jobs import JobStatus, JobStore, new_job_id
from fdl.jobspec import JobSpec
from fdl.queue import MAX_DURATION_HEADER, TRAIN_TASK
from harness.gateway import Gateway
from harness.worker import MNIST_TINY, Worker, worker_running, write_stuck_data
from training.settings import WorkerSettings
from training.time_limit import Deadline, hard_limit_s, limit_from_message, run_limit

# Short: the stuck runs block in open() before any check, and are killed 2 + 1 s after they start.
GRACE_S = 1


def killed_error(limit_s: float, source: str) -> str:
    return (
        f"ran longer than {limit_s:g} s ({source}) and had not stopped {GRACE_S} s later (stuck "
        "outside the training loop: reading data, or a call that did not return): its process "
        "was killed; nothing was published"
    )


def wait_killed(worker: Worker, job_id: str) -> dict[str, Any]:
    """The job's record once it ended; it must have ended failed, killed at the spec's limit."""
    record = worker.wait_done(job_id, timeout=90)
    assert record["status"] == "failed", (record, worker.process.log_tail())
    assert record["error"] == killed_error(2, "its spec's max_duration_s"), record["error"]
    took = record["finished_at"] - record["started_at"]
    assert 2 + GRACE_S - 1 <= took < 2 + GRACE_S + 20, record
    return record


def test_long_limits_are_written_in_full_seconds() -> None:
    """30 days is "2592000 s" in a job's error, not "2.592e+06 s"."""
    settings = WorkerSettings(redis_url="redis://unused", max_job_duration_s=2_592_000)
    deadline = Deadline.start(settings, None)
    assert deadline.error("in epoch 3").startswith("ran longer than 2592000 s (the worker's")


def test_a_message_never_gets_more_time_than_the_worker_allows() -> None:
    settings = WorkerSettings(
        redis_url="redis://unused", max_job_duration_s=600, job_kill_grace_s=GRACE_S
    )
    assert hard_limit_s(settings) == 600 + GRACE_S
    assert hard_limit_s(settings, limit_from_message(2)) == 2 + GRACE_S
    assert run_limit(settings, 2) == (2, "its spec's max_duration_s")
    asked_more = (600, 601, 7200, 10**9, 10**400, 1e308, math.inf)
    garbage = (None, "2", True, 0, -5, math.nan, -math.inf, [2], {"s": 2})
    for value in asked_more + garbage:
        assert hard_limit_s(settings, limit_from_message(value)) == 600 + GRACE_S, value
        limit = limit_from_message(value)
        assert run_limit(settings, limit) == (600, "the worker's FDL_MAX_JOB_DURATION_S")


def submit(gateway: Gateway, **spec: Any) -> str:
    response = httpx.post(f"{gateway.url}/v1/jobs", json=spec, headers=gateway.admin(), timeout=30)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def lost_job(store: JobStore, queue: str, **spec: Any) -> str:
    """A job whose worker died while it ran: its heartbeat is ten minutes old."""
    job_id = new_job_id()
    store.create(JobSpec.model_validate(spec).model_dump(mode="json"), job_id, queue)
    assert store.mark_running(job_id, "celery@gone:1")
    store.set_fields(job_id, heartbeat_at=time.time() - 600)
    return job_id


def test_a_stuck_job_is_killed_at_its_specs_limit_as_the_gateway_and_the_reaper_send_it(
    redis_url: str,
    data_dir: Path,
    tmp_path: Path,
    logs_dir: Path,
    lone_gateway: Callable[..., AbstractContextManager[Gateway]],
) -> None:
    # A database of its own: the worker's reaper adopts every stale running job it finds, and
    # other modules of this process leave some on the session's (tests/api/test_jobs.py marks
    # records running by "worker-1"); one it ran published the version this test counts.
    redis_url = redis_url.rsplit("/", 1)[0] + "/6"
    queue = f"fdl-tests-spec-hard-limit-{os.getpid()}"
    env = {
        "FDL_TRAINING_QUEUE": queue,
        "FDL_MAX_JOB_DURATION_S": "600",
        "FDL_JOB_KILL_GRACE_S": str(GRACE_S),
    }
    stuck = {"model": "mnist_logreg", "dataset": "stuck", "max_duration_s": 2, **MNIST_TINY}
    data = write_stuck_data(data_dir, tmp_path / "data")
    # Found by the reaper's first pass, when the worker starts, and sent again by it.
    lost = lost_job(JobStore.from_url(redis_url), queue, **stuck)
    with (
        lone_gateway("gateway-spec-limit", redis_url, FDL_TRAINING_QUEUE=queue) as gateway,
        worker_running("spec-limit-worker", redis_url, data, tmp_path / "w", logs_dir, env) as w,
    ):
        assert wait_killed(w, lost)["attempts"] == 2
        assert wait_killed(w, submit(gateway, **stuck))["attempts"] == 1
        # The worker goes on with a new pool process, under its own limit.
        nxt = w.wait_done(submit(gateway, model="mnist_logreg", **MNIST_TINY), timeout=180)
        assert nxt["status"] == JobStatus.SUCCEEDED, (nxt, w.process.log_tail())
        assert nxt["result"]["version"] == 1  # the killed runs published nothing


def test_a_message_asking_for_more_time_is_killed_at_the_workers_limit(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """Neither the spec's limit nor Celery's own time limits (``timelimit``: a hard one, and a
    soft one that raises wherever the process is) in a message lengthen the run."""
    env = {
        "FDL_TRAINING_QUEUE": f"fdl-tests-spec-more-{os.getpid()}",
        "FDL_MAX_JOB_DURATION_S": "2",
        "FDL_JOB_KILL_GRACE_S": str(GRACE_S),
    }
    data = write_stuck_data(data_dir, tmp_path / "data")
    with worker_running("spec-more-worker", redis_url, data, tmp_path / "w", logs_dir, env) as w:
        spec = JobSpec(model="mnist_logreg", dataset="stuck", max_duration_s=3600, **MNIST_TINY)
        job_id = new_job_id()
        w.store.create(spec.model_dump(mode="json"), job_id, w.queue)
        w.app.send_task(
            TRAIN_TASK,
            args=[job_id],
            task_id=job_id,
            queue=w.queue,
            headers={MAX_DURATION_HEADER: 3600},
            time_limit=3600,
            soft_time_limit=1,
        )
        record = w.wait_done(job_id, timeout=90)
        assert record["status"] == "failed", (record, w.process.log_tail())
        assert record["error"] == killed_error(2, "the worker's FDL_MAX_JOB_DURATION_S")
        assert record["finished_at"] - record["started_at"] < 2 + GRACE_S + 20, record
