"""The TensorBoard folders of jobs (``<FDL_VAR_DIR>/tensorboard/<job id>``) that a reaper pass
removes (:func:`training.reaper.reap_once`): a pruned job's goes with its record
(:func:`remove_tensorboard_dirs`); the hourly sweep also removes, from this worker's own
``FDL_VAR_DIR``, the folders of jobs whose records another worker pruned (each Kubernetes pod has
a ``FDL_VAR_DIR`` of its own) or an older version left (:func:`sweep_tensorboard_dirs`). The job
ids a folder may be named by are ``JOB_ID``'s (the API's pattern): no separator, no dot, so
``tensorboard/<job id>`` never leads out of the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from fdl.job_records import JOB_ID
from fdl.jobs import JobStore
from training.checkpoint_files import job_folders

log = logging.getLogger(__name__)


def remove_tensorboard_dirs(var_dir: Path, job_ids: Iterable[str]) -> list[str]:
    """Remove the TensorBoard folders (``<var_dir>/tensorboard/<job id>``) of ``job_ids``, jobs
    whose records were pruned (ended a retention ago: none runs); the ids of those removed. An id
    that is no plain name, or a link in the folder's place, is left alone."""
    removed: list[str] = []
    for job_id in job_ids:
        folder = var_dir / "tensorboard" / job_id
        if not JOB_ID.fullmatch(job_id):
            continue
        try:  # a folder that cannot be entered raises here too (EACCES), not only in rmtree
            if not stat.S_ISDIR(folder.lstat().st_mode):
                continue
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue
        except OSError as error:
            log.warning("cannot remove the TensorBoard logs of job %s: %s", job_id, error)
        else:
            removed.append(job_id)
    if removed:
        log.info("removed the TensorBoard logs of %d jobs that ended long ago", len(removed))
    return removed


def sweep_tensorboard_dirs(store: JobStore, var_dir: Path, retention_s: float) -> list[str]:
    """Remove the TensorBoard folders under ``var_dir`` of jobs that have no record (pruned by
    another worker, or before the prune removed them) and whose newest file is older than
    ``retention_s``; a job with a record (queued, running on any worker, ended) keeps its folder.
    The ids of those removed."""
    root = var_dir / "tensorboard"
    names = job_folders(root)
    kept = {r.get("id") for r in store.records(names) if r.get("status") is not None}
    cutoff = time.time() - retention_s
    old = [n for n in names if n not in kept and _newest_mtime(root / n) < cutoff]
    return remove_tensorboard_dirs(var_dir, old)


def _newest_mtime(folder: Path) -> float:
    """The newest modification time of ``folder`` and everything in it (inf: unreadable)."""
    try:
        newest = folder.lstat().st_mtime
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    except OSError:
        return float("inf")
    return newest
