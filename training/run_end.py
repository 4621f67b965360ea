"""How a run ends its job in its record (:func:`training.job.run_job`, once its attempt is over)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fdl.jobs import JobStatus, JobStore, NotThisRun
from training.checkpoint_files import remove_job

log = logging.getLogger(__name__)

# What a run logs when the record says that it lost its job: ``job``, what it left behind.
LOST_RUN = "job %s: another run owns it now; %s"


def end_run(
    job_id: str,
    store: JobStore,
    worker: str,
    status: JobStatus,
    result: dict[str, Any] | None,
    error: str | None,
    checkpoints: Path | None = None,
) -> dict[str, Any] | None:
    """The run's own end of its job in ``status`` (with ``result`` or ``error``), only while the
    record runs under ``worker``, the name it claimed the job under; the result when the job
    ended ``succeeded``, else None. Once the job ended (or its record is gone), its checkpoints
    in ``checkpoints`` (FDL_CHECKPOINT_DIR) are removed; not when another run owns it."""
    try:  # the run's own end, refused (nothing written) once the job is no longer its own
        ended_as = store.end(job_id, status, result=result, error=error, run=worker)
        if checkpoints is not None:  # ended now, before, or gone: no run resumes it
            remove_job(checkpoints, job_id)
        if ended_as is JobStatus.SUCCEEDED:
            return result
        if ended_as is not None:  # a failure, or a cancel accepted until the end's write
            if ended_as is not status:
                log.info("job %s ended %s: a cancel came before its end", job_id, ended_as)
            return None
        done = "stopped, nothing published" if status is JobStatus.CANCELLED else "ended"
        log.warning("job %s %s: its record is gone (pruned, deleted, lost)", job_id, done)
    except NotThisRun:
        published = result is not None and result.get("published")
        left = f"version {result['version']} is published" if result and published else None
        log.warning(LOST_RUN, job_id, left or "this one published nothing")
    return None
