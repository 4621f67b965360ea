"""A routine stop of a real worker mid-job (SIGTERM to its main process alone, as Kubernetes and
``docker stop`` send it through tini, or to its whole process group, as `fdl up`'s supervisord
sends it) hands the job back: the worker exits within seconds, the job is ``queued`` again with
its attempt not counted (``FDL_MAX_ATTEMPTS`` 1 here: a counted one would end it ``failed``) and
its message sent again, and another worker runs it to the end. Before, a group stop killed the
pool process (the job counted a lost attempt), and a stop of the main process alone waited for
the job to end. ``FDL_STALE_AFTER_S`` is far beyond the test: no reaper requeues anything."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import billiard

from fdl.jobs import JobStatus, JobStore
from harness.procs import wait_for
from harness.worker import MNIST_TINY, Worker, start_worker
from tests.redis_fault_proxy import RedisFaultProxy, Rule
from training import worker_stop

EPOCHS = 40
SETTINGS = {
    "FDL_HEARTBEAT_INTERVAL_S": "0.5",
    "FDL_STALE_AFTER_S": "900",
    "FDL_MAX_ATTEMPTS": "1",
}
# How long a stopping worker may take to exit: its run stops at its next batch.
EXIT_WITHIN_S = 10.0


def _settings(name: str) -> dict[str, str]:
    return {**SETTINGS, "FDL_TRAINING_QUEUE": f"fdl-tests-stop-{name}-{os.getpid()}"}


def _status_events(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    events = store.read_events(job_id, count=10_000)
    return [e["data"] for _, e in events if e["type"] == "status"]


def _training(worker: Worker, job_id: str) -> dict[str, Any] | None:
    """The record once its current run reported an epoch (a ``progress`` event after its last
    ``running`` one: the record keeps an earlier run's progress)."""
    events = [e for _, e in worker.store.read_events(job_id, count=10_000)]
    starts = [i for i, e in enumerate(events) if e["data"].get("status") == "running"]
    if not starts or not any(e["type"] == "progress" for e in events[starts[-1] :]):
        return None
    record = worker.store.get(job_id)
    return record if record and record["status"] == "running" else None


def _wait_training(worker: Worker, job_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: _training(worker, job_id),
        90,
        f"job {job_id} training",
        interval=0.05,
        check=worker.process.ensure_alive,
    )


def _stop_mid_job(worker: Worker, job_id: str, group: bool, times: int) -> dict[str, Any]:
    """Once the job trains on ``worker`` (an epoch reported), SIGTERM its main process (or its
    process group); the record once the worker has exited, having handed the job back (its
    ``times``-th hand-back)."""
    running = _wait_training(worker, job_id)
    assert running["progress"]["epoch"] < EPOCHS, running
    stopped_at = time.monotonic()
    if group:
        os.killpg(worker.process.pid, signal.SIGTERM)
    else:
        os.kill(worker.process.pid, signal.SIGTERM)
    try:
        code = worker.process.popen.wait(EXIT_WITHIN_S)
    except Exception:
        raise AssertionError(f"the worker still runs: {worker.process.log_tail()}") from None
    took = time.monotonic() - stopped_at
    assert code == 0, (code, worker.process.log_tail())
    record = worker.store.get(job_id)
    assert record is not None, job_id
    # Queued again, or already taken by the worker that waits on the queue.
    assert record["status"] in ("queued", "running"), (record, took, worker.process.log_tail())
    assert record["worker"] != running["worker"], record
    _handed_back(worker, job_id, running["worker"], times)
    return record


def _handed_back(worker: Worker, job_id: str, run: str, times: int) -> None:
    events = [e for e in _status_events(worker.store, job_id) if e.get("handed_back")]
    assert len(events) == times, _status_events(worker.store, job_id)
    reason = events[-1]["reason"]
    assert f"handed back by worker {run}, which is stopping, in epoch " in reason, reason
    assert "not counted as an attempt" in reason, reason


def _stop_then_finish(
    name: str, redis_url: str, data_dir: Path, root: Path, logs_dir: Path, group: bool
) -> None:
    env = _settings(name)
    first = start_worker(f"{name}-1", redis_url, data_dir, root, logs_dir, env)
    try:
        job_id = first.submit(
            model="mnist_logreg", publish_as=name, **{**MNIST_TINY, "epochs": EPOCHS}
        )
        record = _stop_mid_job(first, job_id, group, 1)
    finally:
        first.process.stop()
    assert (
        record["status"] == "queued" and record["attempts"] == 0 and record["handed_back"] == 1
    ), record
    assert record["worker"] is None, record
    second = start_worker(f"{name}-2", redis_url, data_dir, root, logs_dir, env)
    try:
        done = second.wait_done(job_id, timeout=90)
    finally:
        second.process.stop()
    assert done["status"] == "succeeded", (done, second.process.log_tail())
    assert done["attempts"] == 1 and done["handed_back"] == 1, done
    assert done["result"]["version"] == 1 and done["progress"]["epoch"] == EPOCHS, done
    statuses = [event["status"] for event in _status_events(second.store, job_id)]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"], statuses


def test_sigterm_to_the_main_process_hands_the_job_back(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    _stop_then_finish("stop-main", redis_url, data_dir, tmp_path, logs_dir, group=False)


def test_sigterm_to_the_process_group_hands_the_job_back(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    _stop_then_finish("stop-group", redis_url, data_dir, tmp_path, logs_dir, group=True)


def test_a_solo_worker_stops_and_hands_the_job_back(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """With ``-P solo`` (extra Celery options of ``fdl-worker``) the main process runs the job
    itself: SIGTERM still starts Celery's warm shutdown, the run hands the job back at its next
    batch and the worker exits. Before, the job's own SIGTERM handler took Celery's place: the
    worker never stopped, and took the job it had handed back again, for ever."""
    worker = start_worker(
        "solo-1", redis_url, data_dir, tmp_path, logs_dir, _settings("solo"), args=["-P", "solo"]
    )
    try:
        job_id = worker.submit(
            model="mnist_logreg", publish_as="solo", **{**MNIST_TINY, "epochs": EPOCHS}
        )
        record = _stop_mid_job(worker, job_id, False, 1)
    finally:
        worker.process.stop()
    assert record["status"] == "queued" and record["attempts"] == 0, record
    # Not left for the workers of other tests (their own queues) to take.
    assert worker.store.finish(job_id, JobStatus.FAILED, error="ended by the test")


def test_three_stops_during_one_job_do_not_fail_it(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """Three stops in a row (a group's, the main process's, a group's), each while the next
    worker already waits on the queue, then a worker that runs the job to the end: it succeeds
    on its first counted attempt. Before, it ended ``failed`` at the first (group) stop with
    ``FDL_MAX_ATTEMPTS`` 1, at the third with the default 3."""
    env = _settings("three")
    workers = [start_worker("three-1", redis_url, data_dir, tmp_path, logs_dir, env)]
    try:
        job_id = workers[0].submit(
            model="mnist_logreg", publish_as="three", **{**MNIST_TINY, "epochs": EPOCHS}
        )
        for cycle, group in enumerate((True, False, True), start=2):
            current = workers[-1]
            workers.append(
                start_worker(f"three-{cycle}", redis_url, data_dir, tmp_path, logs_dir, env)
            )
            record = _stop_mid_job(current, job_id, group, cycle - 1)
            # Not counted: 1 once the next worker took it.
            assert record["attempts"] <= 1 and record["handed_back"] == cycle - 1, record
        done = workers[-1].wait_done(job_id, timeout=90)
    finally:
        for worker in workers:
            worker.process.stop()
    assert done["status"] == "succeeded", (done, workers[-1].process.log_tail())
    assert done["attempts"] == 1 and done["handed_back"] == 3, done
    statuses = [event["status"] for event in _status_events(workers[-1].store, job_id)]
    assert statuses == ["queued"] + ["running", "queued"] * 3 + ["running", "succeeded"], statuses


def test_a_cold_shutdown_still_kills_the_run(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """SIGQUIT (Celery's cold shutdown, as a second Ctrl-C asks for): the main process kills
    the pool process with SIGTERM as before, and that SIGTERM, which it marked as its own kill,
    ends the process rather than handing the job back: the record is left ``running`` for the
    reaper (``FDL_STALE_AFTER_S``), its attempt counted, as before."""
    env = _settings("cold")
    worker = start_worker("cold-1", redis_url, data_dir, tmp_path, logs_dir, env)
    try:
        job_id = worker.submit(
            model="mnist_logreg", publish_as="cold", **{**MNIST_TINY, "epochs": EPOCHS}
        )
        running = _wait_training(worker, job_id)
        pid = int(str(running["worker"]).rsplit(":", 1)[1])
        os.kill(worker.process.pid, signal.SIGQUIT)
        worker.process.popen.wait(EXIT_WITHIN_S)
    finally:
        worker.process.stop()
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the pool process gone")
    record = worker.store.get(job_id)
    assert record is not None and record["status"] == "running", record
    assert record["worker"] == running["worker"] and record["attempts"] == 1, record
    assert not [e for e in _status_events(worker.store, job_id) if e.get("handed_back")]
    assert "handed back" not in worker.process.log_tail(100_000)
    # Not left for the reapers of other tests' workers to run again.
    assert worker.store.finish(job_id, JobStatus.FAILED, error="ended by the test")


def _run_under_the_handler(marked: Any, inside: Any) -> None:
    """A pool process's run (a billiard process, as the pool's are): it takes its job once the
    main process has marked it (``marked``), then waits for a stop; exit 3: it would hand the
    job back, 4: nothing came."""
    marked.wait(10)
    with worker_stop.handing_back_on_sigterm():
        inside.set()
        deadline = time.monotonic() + 10
        while not worker_stop.requested() and time.monotonic() < deadline:
            time.sleep(0.01)  # a poll to the deadline; none by then is exit 4, not a raise
    os._exit(3 if worker_stop.requested() else 4)


def test_a_revoke_marked_before_the_run_starts_still_kills_it() -> None:
    """A revoke with ``--terminate`` of a job its pool process has not yet acknowledged is
    marked as a kill as the main process hears that the process took it (``on_accepted``),
    which may be before the run enters its SIGTERM handler: the SIGTERM that follows kills the
    process. Before, the run's handler cleared its own pid's mark as it started, so the kill
    handed the job back instead (exit 3 here)."""
    context = billiard.get_context("fork")
    marked, inside = context.Event(), context.Event()
    process = context.Process(target=_run_under_the_handler, args=(marked, inside))
    process.start()
    try:
        worker_stop.mark_killed(process.pid)  # as TrainRequest.on_accepted, a revoke waiting
        marked.set()
        assert inside.wait(10), "the run never started"
        os.kill(process.pid, signal.SIGTERM)
        process.join(15)
        assert process.exitcode == -signal.SIGTERM, process.exitcode
    finally:
        worker_stop.unmark(process.pid)
        if process.exitcode is None:
            process.terminate()


def test_a_failed_resend_puts_the_message_back(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """The worker reaches Redis through a proxy that, once the job trains, drops every message
    sent (``LPUSH``) but a message put back (``redelivered``): the hand-back's send fails, and
    the message the task runs goes back to the queue (Celery's ``Reject``, requeued), where a
    second worker takes it. Before, the task returned and its message was acknowledged: the job
    waited queued, with no message, for a reaper's resend (FDL_RESEND_QUEUED_AFTER_S, 10 min)."""
    env = _settings("resend")
    kwargs = JobStore.from_url(redis_url).redis.connection_pool.connection_kwargs
    db = int(redis_url.rsplit("/", 1)[1])
    with RedisFaultProxy((kwargs["host"], kwargs["port"])) as proxy:
        first = start_worker("resend-1", proxy.url(db), data_dir, tmp_path, logs_dir, env)
        try:
            job_id = first.submit(
                model="mnist_logreg", publish_as="resend", **{**MNIST_TINY, "epochs": EPOCHS}
            )
            _wait_training(first, job_id)
            put_back = Rule(b"redelivered", "hold_request", then=lambda: None)  # goes on
            sent = Rule(b"LPUSH", "drop")
            proxy.rules += [put_back, sent]
            os.kill(first.process.pid, signal.SIGTERM)
            assert first.process.popen.wait(EXIT_WITHIN_S) == 0, first.process.log_tail()
        finally:
            first.process.stop()
        assert sent.fired >= 1, first.process.log_tail()
    store = JobStore.from_url(redis_url)
    record = store.get(job_id)
    assert record is not None and record["status"] == "queued", record
    assert (record["attempts"], record["handed_back"]) == (0, 1), record
    assert store.redis.llen(env["FDL_TRAINING_QUEUE"]) == 1, first.process.log_tail(100_000)
    second = start_worker("resend-2", redis_url, data_dir, tmp_path, logs_dir, env)
    try:
        done = second.wait_done(job_id, timeout=90)
    finally:
        second.process.stop()
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
