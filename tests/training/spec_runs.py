"""One job of a whole spec through ``run_job`` in the test's process (no worker), for tests that
set fields the ``job_in_process`` fixture fixes (batch size, validation split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fdl.jobs import JobStore
from fdl.jobspec import JobSpec
from training.settings import WorkerSettings


def settings_for(data_dir: Path, root: Path) -> WorkerSettings:
    """Worker settings with the models and var folders under ``root``, no downloads."""
    return WorkerSettings(
        redis_url="redis://unused",
        data_dir=data_dir,
        model_dir=root / "models",
        var_dir=root / "var",
        download=False,
    )


def run_spec(
    store: JobStore, job_id: str, settings: WorkerSettings, **fields: Any
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Create the job of spec ``fields`` and run it: what ``run_job`` returned, and its record."""
    from training.job import run_job

    spec = JobSpec(**fields)
    store.create(spec.model_dump(mode="json"), job_id)
    result = run_job(job_id, store, settings)
    record = store.get(job_id)
    assert record is not None
    return result, record
