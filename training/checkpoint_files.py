"""Where a job's checkpoints lie and how they are named, found and removed, without TensorFlow:
the worker's main process reads them too (its reaper, a hand-back's reason). What one holds and
how a run writes and resumes from it is :mod:`training.checkpoints`'.

A job's checkpoints are in ``<FDL_CHECKPOINT_DIR>/<job id>/``. Each is a folder written whole
under a temporary name (``.tmp-epoch-<NNNN>-<unique>``), every file and the folder flushed to the
disk, then renamed to ``epoch-<NNNN>-<unique>`` (NNNN: the epochs done) and the rename flushed:
only a folder of that name is complete, so a run killed mid-write (SIGKILL, a power loss) leaves
a temporary folder that no run takes, which the next run of the job or a reaper removes. Once one
is renamed in, the job's older complete ones are removed: the newest is the one a run resumes
from. Names are unique, so a run that lost its job and still writes (a zombie) never writes into
another run's checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fdl.files import fsync_path, seal_version
from fdl.job_records import JOB_ID, TERMINAL
from fdl.jobs import JobStore

log = logging.getLogger(__name__)

COMPLETE = re.compile(r"epoch-(?P<epoch>\d{4,})-[0-9a-f]{12}")
TEMP_PREFIX = ".tmp-"
# A temporary folder older than this (its newest file) is a write that died: no checkpoint
# takes that long to write. A reaper removes it, whatever the job's status.
STALE_TEMP_S = 300.0
CLOCK_FILE = ".clock"  # touched by reapers to read the storage's clock (storage_now)


def job_folder(root: Path, job_id: str) -> Path | None:
    """The folder of ``job_id``'s checkpoints; None for an id that is no plain name."""
    return root / job_id if JOB_ID.fullmatch(job_id) else None


def job_folders(root: Path) -> list[str]:
    """The names of the folders in ``root`` named by a job id (links and files left out): each
    job's checkpoints here, its TensorBoard logs in ``<FDL_VAR_DIR>/tensorboard``."""
    try:
        with os.scandir(root) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:  # none yet
        return []
    return [name for name in names if JOB_ID.fullmatch(name)]


def complete(folder: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints in a job's ``folder``, oldest first: (epochs done, folder)."""
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:  # none yet, or unreadable: nothing to resume from
        return []
    found = [(m, name) for name in names if (m := COMPLETE.fullmatch(name))]
    return sorted((int(m["epoch"]), folder / name) for m, name in found)


def newest(root: Path, job_id: str) -> tuple[int, Path] | None:
    """The newest complete checkpoint of ``job_id``: (epochs done, folder), or None."""
    folder = job_folder(root, job_id)
    found = complete(folder) if folder is not None else []
    return found[-1] if found else None


def last_epoch(root: Path, job_id: str) -> int | None:
    """The epochs done by ``job_id``'s newest complete checkpoint, or None (a hand-back's
    reason says where the job resumes)."""
    found = newest(root, job_id)
    return found[0] if found else None


def write(root: Path, job_id: str, epoch: int, fill: Callable[[Path], None]) -> Path:
    """Write the checkpoint after ``epoch`` epochs of ``job_id``: ``fill`` writes its files into
    a new temporary folder, which is flushed and renamed in; then the job's older complete ones
    are removed. Returns its folder; raises what ``fill`` or the disk raised, its temporary
    folder removed."""
    folder = job_folder(root, job_id)
    if folder is None:
        raise ValueError(f"no checkpoint folder for job id {job_id!r}")
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        fsync_path(folder.parent)
    name = f"epoch-{epoch:04d}-{uuid.uuid4().hex[:12]}"
    temp = folder / f"{TEMP_PREFIX}{name}"
    temp.mkdir()
    try:
        fill(temp)
        seal_version(temp)  # every file and the folder flushed before it is renamed in
        final = folder / name
        os.rename(temp, final)
        fsync_path(folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    for done, older in complete(folder):
        if done < epoch:
            shutil.rmtree(older, ignore_errors=True)
    return final


def remove_temps(folder: Path, older_than_s: float = 0.0, now: float | None = None) -> list[str]:
    """Remove the temporary folders (writes that died) in a job's ``folder`` whose newest file
    is older than ``older_than_s`` at ``now`` (default: this host's clock); their names."""
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if e.name.startswith(TEMP_PREFIX)]
    except OSError:
        return []
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = []
    for name in names:
        if older_than_s > 0 and _newest_mtime(folder / name) >= cutoff:
            continue
        shutil.rmtree(folder / name, ignore_errors=True)
        if not os.path.lexists(folder / name):
            removed.append(name)
    return removed


def remove_job(root: Path, job_id: str) -> bool:
    """Remove ``job_id``'s checkpoints (it ended), then its folder if nothing else is in it;
    whether there were any. Only checkpoints (complete or temporary) are removed: a
    FDL_CHECKPOINT_DIR set to a folder that holds others (FDL_VAR_DIR, the working folder) loses
    none of theirs. A link in the folder's place is left alone."""
    folder = job_folder(root, job_id)
    try:
        if folder is None or not stat.S_ISDIR(folder.lstat().st_mode):
            return False
        names = checkpoint_names(folder)
        for name in names:
            with contextlib.suppress(FileNotFoundError):  # another's removal raced this one
                shutil.rmtree(folder / name)
        with contextlib.suppress(OSError):  # another's file left in it: kept, with it
            folder.rmdir()
    except FileNotFoundError:
        return False
    except OSError as error:
        log.warning("cannot remove the checkpoints of job %s: %s", job_id, error)
        return False
    return bool(names)


def checkpoint_names(folder: Path) -> list[str]:
    """The names of the checkpoints, complete or temporary, in a job's ``folder`` (none where
    it cannot be read)."""
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return [n for n in names if COMPLETE.fullmatch(n) or n.startswith(TEMP_PREFIX)]


def sweep(store: JobStore, root: Path, stale_temp_s: float = STALE_TEMP_S) -> list[str]:
    """A reaper's pass over ``root``: remove the checkpoints of every job whose record ended or
    is gone (cancelled while queued, ended by a reaper, pruned), never those of a queued or
    running job, whose temporary folders older than ``stale_temp_s`` go instead (their age read
    on the storage's clock, :func:`storage_now`). A folder that holds no checkpoint is not a
    job's, whatever its name. The ids of the jobs whose checkpoints were removed."""
    names = [name for name in job_folders(root) if checkpoint_names(root / name)]
    if not names:
        return []
    live = {
        r["id"]
        for r in store.records(names)
        if r.get("status") is not None and r["status"] not in TERMINAL
    }
    removed = [name for name in names if name not in live and remove_job(root, name)]
    alive = [name for name in names if name in live]
    now = storage_now(root) if alive else None
    for name in alive if now is not None else []:
        remove_temps(root / name, stale_temp_s, now)
    if removed:
        log.info("removed the checkpoints of %d jobs that ended", len(removed))
    return removed


def storage_now(root: Path) -> float | None:
    """The clock of the storage that holds ``root``, which stamps the times of the files every
    worker writes there (an NFS server's, not the writer's nor this host's): the time of a file
    of its own (``.clock``) touched now. None where it cannot be touched: no temporary folder is
    then judged stale. A reaper on a host whose clock runs ahead took a write in progress on
    another for one that died, and removed it under its writer."""
    probe = root / CLOCK_FILE
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
        os.utime(probe)  # the storage's time (NFS: SET_TO_SERVER_TIME)
        return probe.lstat().st_mtime
    except OSError:
        return None


def _newest_mtime(folder: Path) -> float:
    """The newest modification time of a checkpoint's ``folder`` (flat) and its files (inf:
    unreadable)."""
    try:
        with os.scandir(folder) as entries:
            times = [e.stat(follow_symlinks=False).st_mtime for e in entries]
        return max([folder.lstat().st_mtime, *times])
    except OSError:
        return float("inf")
