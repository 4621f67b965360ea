"""Job event streams open when their gateway is stopped (SIGTERM, a rollout) end at once and
cleanly (api/events.py): between two events, a ``retry`` hint of RESUME_RETRY_MS and the closing
chunk, so the client reconnects at once with ``Last-Event-ID`` to another gateway, which sends the
next events from the job's Redis stream, none lost or repeated. The gateway exits in about a
second, well before FDL_SHUTDOWN_GRACE_S. A queued job's stream and a running one's, on a gateway
with a probe listener (its shutdown closes the listener first).

Real gateways and a real Redis; the job's events are written with the JobStore calls the worker
makes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

from api.events import RESUME_RETRY_MS
from fdl.jobs import JobStatus, JobStore
from harness.gateway import Gateway
from harness.procs import free_port, wait_for
from harness.sse import StreamReader

GRACE_S = 8.0
ENDS_WITHIN_S = 2.0


def _ids(lines: list[str]) -> list[str]:
    return [line.removeprefix("id:").strip() for line in lines if line.startswith("id:")]


def _no_traceback(gateway: Gateway) -> None:
    log = gateway.process.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "Exception in ASGI application" not in log, log[-3000:]
    assert "ASGI callable returned without completing response" not in log, log[-3000:]
    assert "timeout graceful shutdown exceeded" not in log, log[-3000:]


def _ensure_open(readers: Iterable[StreamReader]) -> None:
    for reader in readers:
        reader.ensure_open()


def _follow(gateway: Gateway, job_id: str, after: str | None = None) -> StreamReader:
    headers = {**gateway.admin(), **({"Last-Event-ID": after} if after else {})}
    reader = StreamReader(f"{gateway.url}/v1/jobs/{job_id}/events", headers)
    reader.start()
    return reader


def test_streams_end_at_once_on_sigterm_and_resume_on_another_gateway(
    redis_url: str, lone_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> None:
    store = JobStore.from_url(redis_url)
    try:
        queued = store.create({"model": "mnist_logreg", "epochs": 3})["id"]  # waits its turn
        running = store.create({"model": "mnist_logreg", "epochs": 3})["id"]
        assert store.mark_running(running, "test-worker")
        store.update_progress(running, {"epoch": 1, "epochs": 3, "loss": 0.9})
        jobs = (queued, running)
        settings = {"FDL_SHUTDOWN_GRACE_S": str(GRACE_S), "FDL_PROBE_PORT": str(free_port())}
        with (
            lone_gateway("gateway-stream-old", redis_url, **settings) as old,
            lone_gateway("gateway-stream-new", redis_url) as new,
        ):
            first = {job_id: _follow(old, job_id) for job_id in jobs}
            wait_for(
                lambda: (
                    all(reader.lines[-1:] == [""] for reader in first.values())
                    and '"epoch": 1' in "".join(first[running].lines)
                ),
                30,
                "the events so far on both streams",
                interval=0.05,
                check=lambda: _ensure_open(first.values()),
            )
            old.process.signal(signal.SIGTERM)
            stopped = time.monotonic()
            for reader in first.values():
                reader.join(GRACE_S + 5)
            ended_s = time.monotonic() - stopped
            exit_code = old.process.popen.wait(timeout=GRACE_S + 10)
            exited_s = time.monotonic() - stopped
            # Written while no stream is open: the next gateway sends them.
            for job_id in jobs:
                if job_id == queued:
                    assert store.mark_running(queued, "test-worker")
                store.update_progress(job_id, {"epoch": 2, "epochs": 3, "loss": 0.5})
                store.finish(job_id, JobStatus.SUCCEEDED, result={"published": False})

            for reader in first.values():
                assert not reader.is_alive(), "a stream outlived the gateway"
                assert reader.status_code == 200
                assert reader.error is None, reader.error  # the closing chunk, not a cut
            assert ended_s < ENDS_WITHIN_S, ended_s
            assert exit_code == -signal.SIGTERM
            assert exited_s < ENDS_WITHIN_S + 1, exited_s  # well before the grace
            _no_traceback(old)
            for reader in first.values():
                # The last thing sent: the retry hint, after a whole event.
                assert reader.lines[-3:] == ["", f"retry: {RESUME_RETRY_MS}", ""], reader.lines

            for job_id in jobs:
                seen = _ids(first[job_id].lines)
                second = _follow(new, job_id, after=seen[-1])
                second.join(30)
                assert not second.is_alive(), "the resumed stream did not end with the job"
                assert second.status_code == 200 and second.error is None, second.error
                resumed = _ids(second.lines)
                # Every event of the job's stream once, in order, across the two gateways.
                stored = [entry for entry, _ in store.read_events(job_id)]
                assert seen + resumed == stored, (seen, resumed, stored)
                assert '"epoch": 2' in "".join(second.lines)
                assert '"succeeded"' in "".join(second.lines)
    finally:
        store.redis.close()
