"""A cancel that the gateway accepted after a job's last epoch, while its quality gate decides,
ends the job ``cancelled`` when the gate says no: nothing was published, and the run checks its
record before its end, as it does before it publishes. Before, the run returned its gate's "no"
without a look at the record and ended the job ``succeeded`` (``published: false``) although
``DELETE`` had answered that it was being cancelled.

The cancel comes inside the gate's read of the served version's metadata (a named pipe that
the test answers). Real Redis, real TensorFlow, real files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fdl import contract
from fdl.jobs import JobStore
from fdl.jobspec import PublishSpec
from tests.training.stores import loaded_store
from tests.training.test_lost_run_finish import SERVED, Step, run_lost, tiny_dataset, tiny_spec

DB = 15


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    with loaded_store(redis_url, DB) as direct:
        yield direct


def test_a_cancel_accepted_while_the_gate_says_no_ends_the_job_cancelled(
    store: JobStore, tmp_path: Path
) -> None:
    job_id = "cancelled-at-the-gate"
    tiny_dataset(tmp_path / "data" / "tiny", piped=False)
    metadata = tmp_path / "models" / "m" / "1" / contract.METADATA_FILE
    metadata.parent.mkdir(parents=True)
    (metadata.parents[1] / "saved_model.pb").write_bytes(b"graph")  # a version: it holds a graph
    os.mkfifo(metadata)
    served = json.dumps(SERVED).encode()  # test accuracy 1.0: "not better"
    accepted: list[dict[str, object] | None] = []

    def trained() -> bool:  # past its look for a version it published before
        return any(e["type"] == "log" for _, e in store.read_events(job_id))

    def cancel() -> None:  # as DELETE /v1/jobs/{id} does
        accepted.append(store.request_cancel(job_id))

    # That look (published_before) reads metadata bounded and passes over a pipe unopened; the
    # gate's read of the served version's metadata is the one held.
    steps: list[Step] = [(metadata, served, trained, cancel)]
    spec = tiny_spec(PublishSpec(only_if_better=True))
    _, result, settings = run_lost(store, tmp_path, job_id, spec, steps)
    assert accepted and accepted[0] is not None
    assert accepted[0]["status"] == "running" and accepted[0]["cancel_requested"]
    assert result is None
    record = store.get(job_id)
    assert record is not None
    assert (record["status"], record["error"], record["result"]) == (
        "cancelled",
        "cancelled by request",
        None,
    )
    last = [e for _, e in store.read_events(job_id) if e["type"] == "status"][-1]
    assert last["data"]["status"] == "cancelled"
    assert sorted(p.name for p in (settings.model_dir / "m").iterdir()) == ["1"]  # nothing new
