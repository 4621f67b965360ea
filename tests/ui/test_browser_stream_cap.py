"""The job view against a gateway at its cap of open event streams (``FDL_MAX_EVENT_STREAMS``):
a finished job's curves come from its stream, which replays the job's history. Refused with 503
``too_many_streams``, the view used to give up at once (the job being finished), showing only
the record's last point; it now reads the stream again, with its back-off, once a slot is free.

A second gateway, capped at one stream, on the UI stack's Redis and model server; the one slot is
held by a raw-socket stream of a running job that never ends."""

from __future__ import annotations

import socket
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fdl.jobs import JobStatus, JobStore
from fdl.stack import REDIS_URL_FILE
from harness.gateway import ADMIN_KEY, log_lines, start_gateway
from harness.procs import wait_for
from harness.stack import Served
from tests.ui.test_browser import open_job_form

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def stream_requests(process: Any, job_id: str) -> list[int]:
    """The statuses of the gateway's answers to ``job_id``'s event stream, in order."""
    path = f"/v1/jobs/{job_id}/events"
    return [
        line["status"]
        for line in log_lines(process)
        if line.get("path") == path and "status" in line
    ]


def test_a_finished_jobs_curves_wait_for_a_free_stream(
    served: Served, page: Any, logs_dir: Path, tmp_path: Path
) -> None:
    stack = served.stack
    redis_url = (stack.var_dir / REDIS_URL_FILE).read_text().strip()
    with ExitStack() as cleanup:
        gateway = cleanup.enter_context(
            closing(
                start_gateway(
                    "gateway-one-stream",
                    logs_dir,
                    redis_url,
                    int(stack.env["FDL_SERVING_GRPC_PORT"]),
                    stack.model_dir,
                    tmp_path / "keys",
                    FDL_MAX_EVENT_STREAMS="1",
                )
            )
        )
        store = JobStore.from_url(redis_url)
        cleanup.callback(store.redis.close)
        held_job = store.create({"model": "mnist_logreg", "epochs": 1})["id"]
        # Never sent to a worker, and ended before the stack's reaper would count it as lost.
        assert store.mark_running(held_job, "test-worker")
        cleanup.callback(store.finish, held_job, JobStatus.CANCELLED, run="test-worker")
        address = urlsplit(gateway.url)
        held = cleanup.enter_context(
            socket.create_connection((address.hostname, address.port), timeout=15)
        )
        held.sendall(
            f"GET /v1/jobs/{held_job}/events HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {ADMIN_KEY}\r\n\r\n".encode()
        )
        assert held.recv(4096).startswith(b"HTTP/1.1 200"), "the held stream"

        open_job_form(page, gateway.url, ADMIN_KEY)
        page.locator(f"#jobs-rows tr[data-job='{served.job_id}']").click()
        page.wait_for_selector("#detail-body:not([hidden])")
        wait_for(
            lambda: 503 in stream_requests(gateway.process, served.job_id),
            30,
            "the view's stream to be refused at the cap",
        )
        held.close()  # the slot is free: the view's next try gets the history
        wait_for(
            lambda: 200 in stream_requests(gateway.process, served.job_id),
            30,
            "the view to read the finished job's stream again",
        )
        page.wait_for_function(
            "() => Number(document.getElementById('chart-loss').dataset.points) >= 2"
        )
